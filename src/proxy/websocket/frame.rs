//! RFC 6455 framing without I/O: frame headers parsed and encoded, payloads unmasked, and the
//! [`Decoder`] that turns the bytes a client sent into the MQTT byte stream they carry.
//!
//! Hand-written rather than taken from `tungstenite` or `fastwebsockets`: both own read and write
//! buffers per connection for its whole life, and an idle MQTT session must cost no buffer (see
//! `relay/`). The decoder works in place in the caller's buffer, which after a read holds raw
//! frames and after [`Decoder::decode`] the unmasked payload of their data frames; what it keeps
//! between reads is a partial header (at most [`MAX_HEADER_BYTES`]) and a partial control frame
//! (at most [`MAX_CONTROL_PAYLOAD_BYTES`]).

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask key.
pub const MAX_HEADER_BYTES: usize = 14;
/// The longest header of a server frame (unmasked): 2 bytes and a 64-bit length.
pub const MAX_SERVER_HEADER_BYTES: usize = 10;
/// A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// Close status codes the proxy sends (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LENGTH_BITS: u8 = 0x7F;
/// Length codes of the second header byte: the length follows in 2 or 8 bytes.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;
const MASK_KEY_BYTES: usize = 4;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Why the client's frames were refused; each closes the connection with its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set (no extension was negotiated)")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame before the previous message ended")]
    InterleavedMessage,
    #[error("64-bit payload length with its most significant bit set")]
    LengthTooLong,
    #[error("close frame with a 1-byte payload")]
    BadClosePayload,
    #[error("text frame (MQTT over WebSocket is binary)")]
    TextFrame,
    #[error("message over max_message_bytes ({limit} bytes)")]
    MessageTooBig { limit: u64 },
}

impl FrameError {
    /// The close code the client reads.
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TextFrame => CLOSE_UNSUPPORTED_DATA,
            FrameError::MessageTooBig { .. } => CLOSE_MESSAGE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; MASK_KEY_BYTES]>,
    pub payload_len: u64,
    /// Bytes the header takes.
    pub len: usize,
}

/// How long the header starting with these two bytes is.
fn header_len(first_two: [u8; 2]) -> usize {
    let extended = match first_two[1] & LENGTH_BITS {
        LENGTH_16 => 2,
        LENGTH_64 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & MASK_BIT != 0 { MASK_KEY_BYTES } else { 0 };
    2 + extended + mask
}

/// Parses the header at the start of `bytes`: `None` while it is incomplete. Checks what the
/// header alone can say (reserved bits, opcode, control frame rules); the masking rule and the
/// message rules are the decoder's.
pub fn parse_header(bytes: &[u8]) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & RSV_BITS != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(first & OPCODE_BITS).ok_or(FrameError::UnknownOpcode(first & OPCODE_BITS))?;
    let fin = first & FIN_BIT != 0;
    let len = header_len([first, second]);
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControl);
    }
    if bytes.len() < len {
        return Ok(None);
    }
    let (payload_len, mask_at) = match second & LENGTH_BITS {
        LENGTH_16 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        LENGTH_64 => {
            let mut length = [0u8; 8];
            length.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(length), 10)
        }
        short => (u64::from(short), 2),
    };
    if payload_len >> 63 != 0 {
        return Err(FrameError::LengthTooLong);
    }
    if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD_BYTES as u64 {
        return Err(FrameError::ControlTooLong(payload_len));
    }
    let mask = (second & MASK_BIT != 0).then(|| {
        let mut key = [0u8; MASK_KEY_BYTES];
        key.copy_from_slice(&bytes[mask_at..mask_at + MASK_KEY_BYTES]);
        key
    });
    Ok(Some(Header { fin, opcode, mask, payload_len, len }))
}

/// Writes the header of an unmasked (server) frame into `out`; returns its length.
pub fn encode_server_header(
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    out: &mut [u8; MAX_SERVER_HEADER_BYTES],
) -> usize {
    out[0] = if fin { FIN_BIT } else { 0 } | opcode.bits();
    if payload_len < u64::from(LENGTH_16) {
        out[1] = payload_len as u8;
        2
    } else if let Ok(short) = u16::try_from(payload_len) {
        out[1] = LENGTH_16;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = LENGTH_64;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    }
}

/// XORs `data` with the mask key, `offset` bytes into the payload.
pub fn apply_mask(mask: [u8; MASK_KEY_BYTES], offset: u64, data: &mut [u8]) {
    let start = (offset % MASK_KEY_BYTES as u64) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(start + i) % MASK_KEY_BYTES];
    }
}

/// A control frame's payload, kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD_BYTES],
    len: u8,
}

impl ControlPayload {
    const EMPTY: ControlPayload = ControlPayload { bytes: [0; MAX_CONTROL_PAYLOAD_BYTES], len: 0 };

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Appends what fits (the header check bounds a control payload to the capacity).
    fn extend(&mut self, data: &[u8]) {
        let start = usize::from(self.len);
        let n = data.len().min(MAX_CONTROL_PAYLOAD_BYTES - start);
        self.bytes[start..start + n].copy_from_slice(&data[..n]);
        self.len += n as u8;
    }

    /// A close payload's status code, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        let [high, low, ..] = *self.as_slice() else {
            return None;
        };
        Some(u16::from_be_bytes([high, low]))
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlPayload({} bytes)", self.len)
    }
}

/// What one [`Decoder::decode`] found besides the data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Unmasked data-frame payload bytes now at the front of the buffer.
    pub data_bytes: usize,
    /// The last ping's payload (a pong for the most recent ping is enough, RFC 6455 §5.5.3).
    pub ping: Option<ControlPayload>,
    /// The client's close frame; the decoder ignores everything after it.
    pub close: Option<ControlPayload>,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: Opcode,
    mask: [u8; MASK_KEY_BYTES],
    /// Payload bytes read so far (where the mask continues).
    offset: u64,
    remaining: u64,
}

/// The client-to-server decoder: what is left of the frame in progress, and the message rules
/// (binary only, continuation only inside a message, `max_message_bytes`).
#[derive(Debug)]
pub struct Decoder {
    max_message_bytes: u64,
    partial_header: [u8; MAX_HEADER_BYTES],
    partial_len: u8,
    frame: Option<Frame>,
    /// A fragmented message has begun and its last frame has not.
    in_message: bool,
    message_bytes: u64,
    control: ControlPayload,
    closed: bool,
}

impl Decoder {
    pub fn new(max_message_bytes: u64) -> Decoder {
        Decoder {
            max_message_bytes,
            partial_header: [0; MAX_HEADER_BYTES],
            partial_len: 0,
            frame: None,
            in_message: false,
            message_bytes: 0,
            control: ControlPayload::EMPTY,
            closed: false,
        }
    }

    /// Decodes the raw bytes in `buf` (just read) in place: data payloads unmasked and moved to
    /// the front, control frames taken out. A header or control frame cut off at the end is kept
    /// for the next call.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let mut decoded = Decoded::default();
        let mut read = 0;
        while read < buf.len() && !self.closed {
            let Some(frame) = self.frame.as_mut() else {
                let (consumed, header) = self.take_header(&buf[read..])?;
                read += consumed;
                if let Some(header) = header {
                    self.start_frame(header, &mut decoded)?;
                }
                continue;
            };
            let n = frame.remaining.min((buf.len() - read) as u64) as usize;
            let payload = &mut buf[read..read + n];
            apply_mask(frame.mask, frame.offset, payload);
            frame.offset += n as u64;
            frame.remaining -= n as u64;
            if frame.opcode.is_control() {
                self.control.extend(payload);
            } else {
                buf.copy_within(read..read + n, decoded.data_bytes);
                decoded.data_bytes += n;
            }
            read += n;
            if frame.remaining == 0 {
                let opcode = frame.opcode;
                self.end_frame(opcode, &mut decoded)?;
            }
        }
        Ok(decoded)
    }

    /// Takes header bytes from `input` (into the partial header when cut off); returns how many
    /// it took and the header once whole.
    fn take_header(&mut self, input: &[u8]) -> Result<(usize, Option<Header>), FrameError> {
        if self.partial_len == 0 {
            if let Some(header) = parse_header(input)? {
                return Ok((header.len, Some(header)));
            }
            // Shorter than its header, so all of it is header.
            self.partial_header[..input.len()].copy_from_slice(input);
            self.partial_len = input.len() as u8;
            return Ok((input.len(), None));
        }
        let mut consumed = 0;
        loop {
            let have = usize::from(self.partial_len);
            let need = if have < 2 { 2 } else { header_len([self.partial_header[0], self.partial_header[1]]) };
            // Parsed as soon as the first two bytes are in: what they alone refuse is refused at
            // once, however the header is cut.
            if have >= 2 {
                if let Some(header) = parse_header(&self.partial_header[..have])? {
                    self.partial_len = 0;
                    return Ok((consumed, Some(header)));
                }
            }
            let take = (need - have).min(input.len() - consumed);
            if take == 0 {
                return Ok((consumed, None));
            }
            self.partial_header[have..have + take].copy_from_slice(&input[consumed..consumed + take]);
            self.partial_len += take as u8;
            consumed += take;
        }
    }

    /// Checks a header against the masking and message rules and starts its frame.
    fn start_frame(&mut self, header: Header, decoded: &mut Decoded) -> Result<(), FrameError> {
        let mask = header.mask.ok_or(FrameError::Unmasked)?;
        match header.opcode {
            Opcode::Text => return Err(FrameError::TextFrame),
            Opcode::Binary if self.in_message => return Err(FrameError::InterleavedMessage),
            Opcode::Continuation if !self.in_message => return Err(FrameError::UnexpectedContinuation),
            Opcode::Binary => self.message_bytes = 0,
            _ => {}
        }
        if !header.opcode.is_control() {
            self.message_bytes = self.message_bytes.saturating_add(header.payload_len);
            if self.message_bytes > self.max_message_bytes {
                return Err(FrameError::MessageTooBig { limit: self.max_message_bytes });
            }
            self.in_message = !header.fin;
        }
        let frame = Frame { opcode: header.opcode, mask, offset: 0, remaining: header.payload_len };
        self.frame = Some(frame);
        if header.payload_len == 0 {
            self.end_frame(header.opcode, decoded)?;
        }
        Ok(())
    }

    /// A frame's payload is complete: a control frame takes effect.
    fn end_frame(&mut self, opcode: Opcode, decoded: &mut Decoded) -> Result<(), FrameError> {
        self.frame = None;
        let control = std::mem::replace(&mut self.control, ControlPayload::EMPTY);
        match opcode {
            Opcode::Ping => decoded.ping = Some(control),
            Opcode::Close if control.len == 1 => return Err(FrameError::BadClosePayload),
            Opcode::Close => {
                decoded.close = Some(control);
                self.closed = true;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A server control frame (close or pong), header and payload, ready to write.
pub fn encode_control(opcode: Opcode, payload: &[u8], out: &mut [u8; 2 + MAX_CONTROL_PAYLOAD_BYTES]) -> usize {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD_BYTES)];
    out[0] = FIN_BIT | opcode.bits();
    out[1] = payload.len() as u8;
    out[2..2 + payload.len()].copy_from_slice(payload);
    2 + payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame, masked with `MASK`.
    fn client_frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_SERVER_HEADER_BYTES];
        let len = encode_server_header(fin, opcode, payload.len() as u64, &mut header);
        let mut frame = header[..len].to_vec();
        frame[1] |= MASK_BIT;
        frame.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        apply_mask(MASK, 0, &mut masked);
        frame.extend_from_slice(&masked);
        frame
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<(Vec<u8>, Decoded), FrameError> {
        let mut buf = bytes.to_vec();
        let decoded = decoder.decode(&mut buf)?;
        Ok((buf[..decoded.data_bytes].to_vec(), decoded))
    }

    #[test]
    fn masked_binary_frame_is_unmasked_into_the_buffer() {
        let mut decoder = Decoder::new(1 << 20);
        let (data, decoded) = decode_all(&mut decoder, &client_frame(true, Opcode::Binary, b"\x10\x0cMQTT")).unwrap();
        assert_eq!(data, b"\x10\x0cMQTT");
        assert_eq!((decoded.ping, decoded.close), (None, None));
    }

    #[test]
    fn lengths_of_7_16_and_64_bits_round_trip() {
        for len in [0usize, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(true, Opcode::Binary, &payload);
            let expected_header = match len {
                0..=125 => 6,
                126..=65_535 => 8,
                _ => 14,
            };
            assert_eq!(parse_header(&frame).unwrap().unwrap().len, expected_header, "{len}");
            let mut decoder = Decoder::new(1 << 20);
            let (data, _) = decode_all(&mut decoder, &frame).unwrap();
            assert!(data == payload, "{len}-byte payload");
        }
    }

    #[test]
    fn server_header_uses_the_shortest_length_form() {
        let mut out = [0u8; MAX_SERVER_HEADER_BYTES];
        assert_eq!(encode_server_header(true, Opcode::Binary, 125, &mut out), 2);
        assert_eq!(&out[..2], &[0x82, 125]);
        assert_eq!(encode_server_header(true, Opcode::Binary, 126, &mut out), 4);
        assert_eq!(&out[..4], &[0x82, 126, 0, 126]);
        assert_eq!(encode_server_header(true, Opcode::Binary, 65_536, &mut out), 10);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn byte_at_a_time_input_gives_the_same_stream() {
        let mut stream = client_frame(false, Opcode::Binary, b"hello ");
        stream.extend(client_frame(true, Opcode::Ping, b"are you there"));
        stream.extend(client_frame(true, Opcode::Continuation, &[7u8; 300]));
        let mut decoder = Decoder::new(1 << 20);
        let mut data = Vec::new();
        let mut pings = Vec::new();
        for byte in stream {
            let mut buf = [byte];
            let decoded = decoder.decode(&mut buf).unwrap();
            data.extend_from_slice(&buf[..decoded.data_bytes]);
            pings.extend(decoded.ping.map(|p| p.as_slice().to_vec()));
        }
        let mut expected = b"hello ".to_vec();
        expected.extend([7u8; 300]);
        assert_eq!(data, expected);
        assert_eq!(pings, vec![b"are you there".to_vec()]);
    }

    #[test]
    fn a_header_cut_after_two_bytes_is_refused_as_early_as_a_whole_one() {
        let fragmented_ping = [0x09, 0xFD];
        assert_eq!(Decoder::new(10).decode(&mut fragmented_ping.clone()).unwrap_err(), FrameError::FragmentedControl);
        let mut decoder = Decoder::new(10);
        decoder.decode(&mut [0x09]).unwrap();
        assert_eq!(decoder.decode(&mut [0xFD]).unwrap_err(), FrameError::FragmentedControl);
    }

    #[test]
    fn control_frames_between_fragments_leave_the_data_contiguous() {
        let mut stream = client_frame(false, Opcode::Binary, b"ab");
        stream.extend(client_frame(true, Opcode::Pong, b"x"));
        stream.extend(client_frame(false, Opcode::Continuation, b"cd"));
        stream.extend(client_frame(true, Opcode::Ping, b"p"));
        stream.extend(client_frame(true, Opcode::Continuation, b"ef"));
        let mut decoder = Decoder::new(6);
        let (data, decoded) = decode_all(&mut decoder, &stream).unwrap();
        assert_eq!(data, b"abcdef");
        assert_eq!(decoded.ping.unwrap().as_slice(), b"p");
    }

    #[test]
    fn close_frame_is_reported_and_what_follows_ignored() {
        let mut stream = client_frame(true, Opcode::Close, &1000u16.to_be_bytes());
        stream.extend(client_frame(true, Opcode::Binary, b"late"));
        let mut decoder = Decoder::new(100);
        let (data, decoded) = decode_all(&mut decoder, &stream).unwrap();
        assert!(data.is_empty());
        assert_eq!(decoded.close.unwrap().close_code(), Some(1000));
    }

    #[test]
    fn violations_get_their_close_codes() {
        let unmasked = [0x82, 0x01, 0x00];
        let cases: Vec<(Vec<u8>, FrameError, u16)> = vec![
            (unmasked.to_vec(), FrameError::Unmasked, 1002),
            (client_frame(true, Opcode::Text, b"{}"), FrameError::TextFrame, 1003),
            (client_frame(true, Opcode::Binary, &[0; 11]), FrameError::MessageTooBig { limit: 10 }, 1009),
            (client_frame(true, Opcode::Continuation, b"x"), FrameError::UnexpectedContinuation, 1002),
            (client_frame(false, Opcode::Ping, b"x"), FrameError::FragmentedControl, 1002),
            (client_frame(true, Opcode::Ping, &[0; 126]), FrameError::ControlTooLong(126), 1002),
            (client_frame(true, Opcode::Close, b"x"), FrameError::BadClosePayload, 1002),
            (vec![0xC2, 0x80, 0, 0, 0, 0], FrameError::ReservedBits, 1002),
            (vec![0x83, 0x80, 0, 0, 0, 0], FrameError::UnknownOpcode(3), 1002),
            (vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], FrameError::LengthTooLong, 1002),
        ];
        for (bytes, error, code) in cases {
            let mut decoder = Decoder::new(10);
            assert_eq!(decode_all(&mut decoder, &bytes).unwrap_err(), error);
            assert_eq!(error.close_code(), code, "{error}");
        }
    }

    #[test]
    fn a_fragmented_message_counts_all_its_fragments_against_the_limit() {
        let mut stream = client_frame(false, Opcode::Binary, &[1; 6]);
        stream.extend(client_frame(true, Opcode::Continuation, &[2; 5]));
        let mut decoder = Decoder::new(10);
        assert_eq!(decode_all(&mut decoder, &stream).unwrap_err(), FrameError::MessageTooBig { limit: 10 });
        let mut next_message = client_frame(true, Opcode::Binary, &[1; 6]);
        next_message.extend(client_frame(true, Opcode::Binary, &[2; 6]));
        let mut decoder = Decoder::new(10);
        assert_eq!(decode_all(&mut decoder, &next_message).unwrap().0.len(), 12, "each message has its own limit");
    }

    #[test]
    fn a_new_binary_frame_inside_a_message_is_refused() {
        let mut stream = client_frame(false, Opcode::Binary, b"a");
        stream.extend(client_frame(true, Opcode::Binary, b"b"));
        let mut decoder = Decoder::new(10);
        assert_eq!(decode_all(&mut decoder, &stream).unwrap_err(), FrameError::InterleavedMessage);
    }

    #[test]
    fn control_frame_encodes_header_and_payload() {
        let mut out = [0u8; 2 + MAX_CONTROL_PAYLOAD_BYTES];
        let len = encode_control(Opcode::Close, &1002u16.to_be_bytes(), &mut out);
        assert_eq!(&out[..len], &[0x88, 2, 0x03, 0xEA]);
    }
}
