//! The first packet of an `mqtt:` route: a CONNECT (3.1.1 §3.1, 5.0 §3.1; 3.1 as `MQIsdp`),
//! checked field by field once all of it is buffered. The remaining length is bounded by
//! `max_bytes` before any wait, and every length inside is checked against the packet's end.
//! The password is skipped, never copied.

use std::ops::Range;

use super::connack::Refusal;
use super::varint::{self, Varint};
use super::{ProtocolVersion, LEVEL_V3_1, LEVEL_V3_1_1, LEVEL_V5};

/// Packet type 1 in the high nibble of the first byte (3.1.1 §2.2.1, 5.0 §2.1.2).
const CONNECT_PACKET_TYPE: u8 = 1;
const PACKET_TYPE_SHIFT: u32 = 4;
/// The low nibble; 0 for CONNECT (3.1.1 §2.2.2 [MQTT-2.2.2-2], 5.0 §2.1.3).
const FIXED_HEADER_FLAGS: u8 = 0x0f;
/// The packet type byte before the remaining length.
const PACKET_TYPE_BYTES: usize = 1;
const PROTOCOL_NAME_V3_1: &[u8] = b"MQIsdp";
const PROTOCOL_NAME_MQTT: &[u8] = b"MQTT";
/// Connect flags (3.1.1 §3.1.2.3, 5.0 §3.1.2.3), from bit 0.
const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN_START: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_QOS: u8 = 0x18;
const WILL_QOS_SHIFT: u32 = 3;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
pub(super) const FLAG_USERNAME: u8 = 0x80;
/// QoS 3 is reserved ([MQTT-3.1.2-14]).
const MAX_WILL_QOS: u8 = 2;
/// UTF-8 strings and binary data carry a big-endian u16 length (3.1.1 §1.5.3, 5.0 §1.5.4).
pub(super) const LENGTH_PREFIX_BYTES: usize = 2;

/// What the CONNECT says, as far as routing, logging and the username rewrite need it. The
/// password is not kept: only whether there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: ProtocolVersion,
    pub client_id: String,
    pub username: Option<String>,
    pub has_password: bool,
    pub keepalive_secs: u16,
    /// Clean session (3.x) or clean start (5.0): the same flag bit.
    pub clean_start: bool,
    pub will: bool,
    /// Bytes of the whole packet, fixed header included; what follows in the buffer belongs to
    /// the next packets.
    pub len: usize,
    /// The packet type byte and the remaining-length varint.
    pub header_len: usize,
    /// Offset of the connect flags byte.
    pub flags_at: usize,
    /// The username field with its length prefix; when there is none, the empty range where it
    /// goes (after the will, before the password).
    pub username_span: Range<usize>,
    /// MQTT 5: the CONNECT properties, their length varint included. Never changed by a rewrite.
    pub properties_span: Option<Range<usize>>,
}

/// Result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed; fewer than `max_bytes` have arrived.
    Incomplete,
    Complete(Connect),
}

/// Why the first packet is not an acceptable CONNECT. Messages name fields, never their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("first packet is of MQTT type {packet_type}, not CONNECT")]
    NotConnect { packet_type: u8 },
    #[error("CONNECT fixed header flags are {flags:#x}, not 0")]
    FixedHeaderFlags { flags: u8 },
    #[error("CONNECT remaining length runs past {} bytes", varint::MAX_BYTES)]
    LengthTooLong,
    #[error("CONNECT exceeds max_connect_bytes ({max_bytes} bytes)")]
    TooLarge { max_bytes: usize, version: Option<ProtocolVersion> },
    #[error("protocol name is neither MQTT nor MQIsdp")]
    UnknownProtocol,
    #[error("protocol level {level} is not supported (MQIsdp 3, MQTT 4 or 5)")]
    UnsupportedLevel { level: u8 },
    #[error("{field} runs past the end of the CONNECT")]
    Truncated { field: &'static str, version: Option<ProtocolVersion> },
    #[error("{field} length runs past {} bytes", varint::MAX_BYTES)]
    VarintTooLong { field: &'static str, version: ProtocolVersion },
    #[error("{field} length is not in its shortest form, as MQTT 5 requires")]
    NonMinimalVarint { field: &'static str, version: ProtocolVersion },
    #[error("reserved connect flag is set")]
    ReservedFlag { version: ProtocolVersion },
    #[error("password flag set without the username flag")]
    PasswordWithoutUsername { version: ProtocolVersion },
    #[error("will QoS {qos} (at most 2)")]
    WillQos { qos: u8, version: ProtocolVersion },
    #[error("will QoS or retain set without the will flag")]
    WillFlagsWithoutWill { version: ProtocolVersion },
    #[error("{field} is not UTF-8")]
    InvalidUtf8 { field: &'static str, version: ProtocolVersion },
    #[error("{field} holds U+0000")]
    NulInString { field: &'static str, version: ProtocolVersion },
    #[error("{count} bytes after the last CONNECT field")]
    TrailingBytes { count: usize, version: ProtocolVersion },
}

impl ConnectError {
    /// The version whose CONNACK the client reads, when that can be told. A protocol level the
    /// proxy does not know is answered in the 3.1.1 form ([MQTT-3.1.2-2], as Mosquitto does).
    pub fn version(&self) -> Option<ProtocolVersion> {
        match self {
            ConnectError::NotConnect { .. }
            | ConnectError::FixedHeaderFlags { .. }
            | ConnectError::LengthTooLong
            | ConnectError::UnknownProtocol => None,
            ConnectError::UnsupportedLevel { .. } => Some(ProtocolVersion::V3_1_1),
            ConnectError::TooLarge { version, .. } | ConnectError::Truncated { version, .. } => *version,
            ConnectError::VarintTooLong { version, .. }
            | ConnectError::NonMinimalVarint { version, .. }
            | ConnectError::ReservedFlag { version }
            | ConnectError::PasswordWithoutUsername { version }
            | ConnectError::WillQos { version, .. }
            | ConnectError::WillFlagsWithoutWill { version }
            | ConnectError::InvalidUtf8 { version, .. }
            | ConnectError::NulInString { version, .. }
            | ConnectError::TrailingBytes { version, .. } => Some(*version),
        }
    }

    /// The CONNACK to answer with before closing (see `connack::refusal`); `None`: close without
    /// one, the version cannot be told.
    pub fn refusal(&self) -> Option<(ProtocolVersion, Refusal)> {
        let version = self.version()?;
        let refusal = match self {
            ConnectError::UnsupportedLevel { .. } => Refusal::UnsupportedVersion,
            ConnectError::TooLarge { .. } => Refusal::PacketTooLarge,
            _ => Refusal::Malformed,
        };
        Some((version, refusal))
    }
}

/// Looks at `buf` (everything received so far) and says whether it starts with a whole, valid
/// CONNECT of at most `max_bytes`. Pure: the same bytes give the same answer however they were
/// segmented, and bytes after the CONNECT are left alone.
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Progress, ConnectError> {
    let Some(&first) = buf.first() else {
        return Ok(Progress::Incomplete);
    };
    let packet_type = first >> PACKET_TYPE_SHIFT;
    if packet_type != CONNECT_PACKET_TYPE {
        return Err(ConnectError::NotConnect { packet_type });
    }
    let flags = first & FIXED_HEADER_FLAGS;
    if flags != 0 {
        return Err(ConnectError::FixedHeaderFlags { flags });
    }
    let (remaining, length_minimal, header_len) = match varint::decode(&buf[PACKET_TYPE_BYTES..]) {
        Varint::Complete { value, len, minimal } => (value, minimal, PACKET_TYPE_BYTES + len),
        Varint::TooLong => return Err(ConnectError::LengthTooLong),
        Varint::Incomplete if buf.len() >= max_bytes => return Err(too_large(buf, max_bytes)),
        Varint::Incomplete => return Ok(Progress::Incomplete),
    };
    let len = header_len + remaining;
    if len > max_bytes {
        return Err(too_large(buf, max_bytes));
    }
    if buf.len() < len {
        return Ok(Progress::Incomplete);
    }
    let connect = parse_packet(&buf[..len], header_len, length_minimal)?;
    Ok(Progress::Complete(connect))
}

fn too_large(buf: &[u8], max_bytes: usize) -> ConnectError {
    ConnectError::TooLarge { max_bytes, version: sniff_version(buf) }
}

/// The version of a CONNECT too large to buffer, if the bytes so far reach its protocol level.
fn sniff_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let Varint::Complete { len, .. } = varint::decode(buf.get(PACKET_TYPE_BYTES..)?) else {
        return None;
    };
    let mut reader = Reader { packet: buf, at: PACKET_TYPE_BYTES + len, version: None };
    let name = reader.binary("protocol name").ok()?;
    let level = reader.u8("protocol level").ok()?;
    protocol_version(&buf[name], level).ok()
}

fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, ConnectError> {
    match (name, level) {
        (PROTOCOL_NAME_V3_1, LEVEL_V3_1) => Ok(ProtocolVersion::V3_1),
        (PROTOCOL_NAME_MQTT, LEVEL_V3_1_1) => Ok(ProtocolVersion::V3_1_1),
        (PROTOCOL_NAME_MQTT, LEVEL_V5) => Ok(ProtocolVersion::V5),
        (PROTOCOL_NAME_V3_1 | PROTOCOL_NAME_MQTT, level) => Err(ConnectError::UnsupportedLevel { level }),
        _ => Err(ConnectError::UnknownProtocol),
    }
}

/// `packet` is exactly the CONNECT; `header_len` bytes of fixed header come first.
fn parse_packet(packet: &[u8], header_len: usize, length_minimal: bool) -> Result<Connect, ConnectError> {
    let mut reader = Reader { packet, at: header_len, version: None };
    let name = reader.binary("protocol name")?;
    let level = reader.u8("protocol level")?;
    let version = protocol_version(&packet[name], level)?;
    reader.version = Some(version);
    if version == ProtocolVersion::V5 && !length_minimal {
        return Err(ConnectError::NonMinimalVarint { field: "remaining length", version });
    }
    let flags_at = reader.at;
    let flags = reader.u8("connect flags")?;
    check_flags(flags, version)?;
    let keepalive_secs = reader.u16("keep alive")?;
    let properties_span = match version {
        ProtocolVersion::V5 => Some(reader.properties("properties", version)?),
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => None,
    };
    let client_id = reader.string("client id", version)?;
    let will = flags & FLAG_WILL != 0;
    if will {
        if version == ProtocolVersion::V5 {
            reader.properties("will properties", version)?;
        }
        reader.string("will topic", version)?;
        reader.binary("will payload")?;
    }
    let username_start = reader.at;
    let username = match flags & FLAG_USERNAME {
        0 => None,
        _ => Some(reader.string("username", version)?),
    };
    let username_span = username_start..reader.at;
    let has_password = flags & FLAG_PASSWORD != 0;
    if has_password {
        reader.binary("password")?;
    }
    if reader.at != packet.len() {
        return Err(ConnectError::TrailingBytes { count: packet.len() - reader.at, version });
    }
    Ok(Connect {
        version,
        client_id,
        username,
        has_password,
        keepalive_secs,
        clean_start: flags & FLAG_CLEAN_START != 0,
        will,
        len: packet.len(),
        header_len,
        flags_at,
        username_span,
        properties_span,
    })
}

fn check_flags(flags: u8, version: ProtocolVersion) -> Result<(), ConnectError> {
    // 3.1 names the bit "reserved" without requiring it to be 0; Mosquitto checks 3.1.1 and 5.0.
    if flags & FLAG_RESERVED != 0 && version != ProtocolVersion::V3_1 {
        return Err(ConnectError::ReservedFlag { version });
    }
    let qos = (flags & FLAG_WILL_QOS) >> WILL_QOS_SHIFT;
    if qos > MAX_WILL_QOS {
        return Err(ConnectError::WillQos { qos, version });
    }
    // [MQTT-3.1.2-13], [MQTT-3.1.2-15] (5.0: -11, -13).
    if flags & FLAG_WILL == 0 && flags & (FLAG_WILL_QOS | FLAG_WILL_RETAIN) != 0 {
        return Err(ConnectError::WillFlagsWithoutWill { version });
    }
    // [MQTT-3.1.2-22]; MQTT 5 allows a password without a username (§3.1.2.9).
    if version != ProtocolVersion::V5 && flags & FLAG_PASSWORD != 0 && flags & FLAG_USERNAME == 0 {
        return Err(ConnectError::PasswordWithoutUsername { version });
    }
    Ok(())
}

/// A cursor over one complete packet: every read is checked against the packet's end.
struct Reader<'a> {
    packet: &'a [u8],
    at: usize,
    /// Known once the protocol level is read; errors before it cannot tell the version.
    version: Option<ProtocolVersion>,
}

impl Reader<'_> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<Range<usize>, ConnectError> {
        let end = self.at + len;
        if end > self.packet.len() {
            return Err(ConnectError::Truncated { field, version: self.version });
        }
        let span = self.at..end;
        self.at = end;
        Ok(span)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ConnectError> {
        let span = self.take(1, field)?;
        Ok(self.packet[span.start])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ConnectError> {
        let span = self.take(LENGTH_PREFIX_BYTES, field)?;
        Ok(u16::from_be_bytes([self.packet[span.start], self.packet[span.start + 1]]))
    }

    /// Binary data: a u16 length, then that many bytes. Returns the span of the bytes.
    fn binary(&mut self, field: &'static str) -> Result<Range<usize>, ConnectError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// A UTF-8 string: binary data that is UTF-8 without U+0000 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    fn string(&mut self, field: &'static str, version: ProtocolVersion) -> Result<String, ConnectError> {
        let span = self.binary(field)?;
        let text = std::str::from_utf8(&self.packet[span]).map_err(|_| ConnectError::InvalidUtf8 { field, version })?;
        if text.contains('\0') {
            return Err(ConnectError::NulInString { field, version });
        }
        Ok(text.to_owned())
    }

    /// MQTT 5 properties: a variable byte integer length, then that many bytes, left unparsed
    /// (the broker reads them). Returns the span of both.
    fn properties(&mut self, field: &'static str, version: ProtocolVersion) -> Result<Range<usize>, ConnectError> {
        let start = self.at;
        match varint::decode(&self.packet[start..]) {
            Varint::Complete { minimal: false, .. } => Err(ConnectError::NonMinimalVarint { field, version }),
            Varint::Complete { value, len, minimal: true } => {
                self.take(len, field)?;
                self.take(value, field)?;
                Ok(start..self.at)
            }
            Varint::TooLong => Err(ConnectError::VarintTooLong { field, version }),
            Varint::Incomplete => Err(ConnectError::Truncated { field, version: Some(version) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::mqtt::sample::{self, Build};

    /// The default `mqtt.max_connect_bytes`.
    const MAX: usize = 8192;

    fn complete(buf: &[u8]) -> Connect {
        match parse(buf, MAX) {
            Ok(Progress::Complete(connect)) => connect,
            other => panic!("not a complete CONNECT: {other:?}"),
        }
    }

    fn error(buf: &[u8]) -> ConnectError {
        match parse(buf, MAX) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// `build` with one body byte changed: `at` counts from the end of the fixed header.
    fn patched(build: Build, at: usize, byte: u8) -> Vec<u8> {
        let mut packet = build.bytes();
        let header_len = complete(&packet).header_len;
        packet[header_len + at] = byte;
        packet
    }

    #[test]
    fn paho_v311_connect_gives_its_fields() {
        let connect = complete(sample::PAHO_V311_USER_WILL);
        assert_eq!(connect.version, ProtocolVersion::V3_1_1);
        assert_eq!(connect.client_id, "paho-v311-device");
        assert_eq!(connect.username.as_deref(), Some("alice"));
        assert!(connect.has_password && connect.will && connect.clean_start);
        assert_eq!(connect.keepalive_secs, 30);
        assert_eq!((connect.len, connect.header_len, connect.properties_span), (96, 2, None));
        assert_eq!(&sample::PAHO_V311_USER_WILL[connect.username_span], b"\x00\x05alice");
    }

    #[test]
    fn paho_v5_connect_gives_its_fields_and_properties_span() {
        let packet = sample::PAHO_V5_USER_WILL_PROPS;
        let connect = complete(packet);
        assert_eq!(connect.version, ProtocolVersion::V5);
        assert_eq!(connect.client_id, "paho-v5-device");
        assert_eq!(connect.username.as_deref(), Some("bob"));
        assert!(connect.has_password && connect.will && connect.clean_start);
        assert_eq!(connect.keepalive_secs, 45);
        assert_eq!(connect.len, packet.len());
        let properties = &packet[connect.properties_span.unwrap()];
        // Length 22: session expiry 3600, receive maximum 20, user property site=lab-7.
        assert_eq!(properties[0], 0x16);
        assert_eq!(properties.len(), 23);
        assert!(properties.ends_with(b"\x26\x00\x04site\x00\x05lab-7"));
    }

    #[test]
    fn paho_v31_and_empty_client_id_connects_parse() {
        let v31 = complete(sample::PAHO_V31);
        assert_eq!((v31.version, v31.client_id.as_str(), v31.keepalive_secs), (ProtocolVersion::V3_1, "paho-v31", 60));
        assert_eq!((v31.username, v31.has_password, v31.will), (None, false, false));
        let empty = complete(sample::PAHO_V311_EMPTY_ID);
        assert_eq!((empty.client_id.as_str(), empty.keepalive_secs), ("", 0));
        assert_eq!(empty.username_span, 14..14);
    }

    #[test]
    fn built_connects_give_back_what_was_built() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let built = Build {
                version,
                clean_start: false,
                keepalive_secs: 7,
                client_id: "capteur-é".as_bytes(),
                will: Some((b"w", b"bye")),
                username: Some(b"u"),
                password: Some(b"\x00pw"),
                ..Build::default()
            };
            let connect = complete(&built.bytes());
            assert_eq!(connect.version, version);
            assert_eq!(connect.client_id, "capteur-é");
            assert_eq!(connect.username.as_deref(), Some("u"));
            assert!(connect.has_password && connect.will && !connect.clean_start);
            assert_eq!(connect.keepalive_secs, 7);
        }
    }

    #[test]
    fn split_connect_waits_on_every_prefix() {
        for (name, packet) in sample::all() {
            let connect = complete(&packet);
            assert_eq!(connect.len, packet.len(), "{name}");
            for cut in 0..packet.len() {
                assert_eq!(parse(&packet[..cut], MAX), Ok(Progress::Incomplete), "{name}: prefix of {cut}");
            }
        }
    }

    #[test]
    fn pipelined_packets_after_the_connect_are_left_alone() {
        let mut buf = sample::PAHO_V5_USER_WILL_PROPS.to_vec();
        buf.extend_from_slice(b"\x82\x09\x00\x01\x00\x00\x03a/b\x01");
        assert_eq!(complete(&buf).len, sample::PAHO_V5_USER_WILL_PROPS.len());
    }

    #[test]
    fn debug_output_never_holds_the_password() {
        let connect = complete(sample::PAHO_V311_USER_WILL);
        let shown = format!("{connect:?} {:?}", parse(sample::PAHO_V311_USER_WILL, MAX));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("has_password: true"));
    }

    #[test]
    fn remaining_length_of_five_bytes_is_refused_without_waiting() {
        assert_eq!(error(b"\x10\x80\x80\x80\x80\x01"), ConnectError::LengthTooLong);
        assert_eq!(error(b"\x10\xff\xff\xff\xff"), ConnectError::LengthTooLong);
        assert_eq!(error(b"\x10\xff\xff\xff\xff").version(), None);
    }

    #[test]
    fn padded_remaining_length_is_accepted_on_3x_and_malformed_on_5() {
        let pad = |packet: Vec<u8>| {
            let mut padded = vec![packet[0], packet[1] | 0x80, 0x00];
            padded.extend_from_slice(&packet[2..]);
            padded
        };
        let v311 = pad(Build::default().bytes());
        assert_eq!(complete(&v311).header_len, 3);
        let v5 = pad(Build { version: ProtocolVersion::V5, ..Build::default() }.bytes());
        let refused = error(&v5);
        assert_eq!(refused, ConnectError::NonMinimalVarint { field: "remaining length", version: ProtocolVersion::V5 });
        assert_eq!(refused.refusal(), Some((ProtocolVersion::V5, Refusal::Malformed)));
    }

    #[test]
    fn padded_or_overrunning_v5_properties_length_is_malformed() {
        let v5 = ProtocolVersion::V5;
        // Properties length at body offset 10 (name 6, level 1, flags 1, keep alive 2).
        let padded = patched(Build { version: v5, properties: b"\x00", ..Build::default() }, 10, 0x80);
        assert_eq!(error(&padded), ConnectError::NonMinimalVarint { field: "properties", version: v5 });
        let overrun = patched(Build { version: v5, ..Build::default() }, 10, 0x7f);
        assert_eq!(error(&overrun), ConnectError::Truncated { field: "properties", version: Some(v5) });
    }

    #[test]
    fn connect_over_max_bytes_is_refused_as_soon_as_its_length_is_known() {
        let packet = sample::PAHO_V5_USER_WILL_PROPS;
        let len = packet.len();
        assert!(matches!(parse(packet, len), Ok(Progress::Complete(_))));
        let too_large = ConnectError::TooLarge { max_bytes: len - 1, version: Some(ProtocolVersion::V5) };
        assert_eq!(parse(packet, len - 1), Err(too_large.clone()));
        assert_eq!(parse(&packet[..12], len - 1), Err(too_large));
        assert_eq!(parse(&packet[..2], len - 1), Err(ConnectError::TooLarge { max_bytes: len - 1, version: None }));
        assert_eq!(parse(&packet[..2], len - 1).unwrap_err().refusal(), None, "no version known: plain close");
        // A cap below the fixed header: the buffer reaching it is refused, never waited on.
        assert_eq!(parse(&packet[..1], 1), Err(ConnectError::TooLarge { max_bytes: 1, version: None }));
    }

    #[test]
    fn field_longer_than_the_packet_is_malformed() {
        let v311 = Some(ProtocolVersion::V3_1_1);
        // Client id length at body offset 10.
        let long_id = patched(Build::default(), 10, 0xff);
        assert_eq!(error(&long_id), ConnectError::Truncated { field: "client id", version: v311 });
        let long_name = patched(Build::default(), 1, 0x40);
        assert_eq!(error(&long_name), ConnectError::Truncated { field: "protocol name", version: None });
        let no_password = Build { username: Some(b"u"), password: Some(b""), ..Build::default() }.bytes();
        let mut cut = no_password[..no_password.len() - 2].to_vec();
        cut[1] -= 2;
        assert_eq!(error(&cut), ConnectError::Truncated { field: "password", version: v311 });
    }

    #[test]
    fn bytes_left_inside_the_packet_are_malformed() {
        let mut packet = Build::default().bytes();
        packet.push(0);
        packet[1] += 1;
        assert_eq!(error(&packet), ConnectError::TrailingBytes { count: 1, version: ProtocolVersion::V3_1_1 });
    }

    #[test]
    fn non_utf8_and_nul_strings_are_malformed() {
        let version = ProtocolVersion::V5;
        let cases = [
            (Build { version, client_id: b"\xff\xfe", ..Build::default() }, "client id"),
            (Build { version, username: Some(b"\xc3"), ..Build::default() }, "username"),
            (Build { version, will: Some((b"\xed\xa0\x80", b"")), ..Build::default() }, "will topic"),
        ];
        for (build, field) in cases {
            assert_eq!(error(&build.bytes()), ConnectError::InvalidUtf8 { field, version });
        }
        let nul = Build { version, client_id: b"dev\x001", ..Build::default() };
        assert_eq!(error(&nul.bytes()), ConnectError::NulInString { field: "client id", version });
        let nul_user = Build { username: Some(b"\x00"), ..Build::default() };
        let version = ProtocolVersion::V3_1_1;
        assert_eq!(error(&nul_user.bytes()), ConnectError::NulInString { field: "username", version });
        // The password and will payload are binary data: any bytes.
        let binary = Build {
            will: Some((b"t", b"\x00\xff")),
            username: Some(b"u"),
            password: Some(b"\x00\xff"),
            ..Build::default()
        };
        assert!(complete(&binary.bytes()).has_password);
    }

    #[test]
    fn connect_flag_rules_are_enforced() {
        // Connect flags at body offset 7.
        let v311 = ProtocolVersion::V3_1_1;
        assert_eq!(error(&patched(Build::default(), 7, 0x03)), ConnectError::ReservedFlag { version: v311 });
        assert_eq!(error(&patched(Build::default(), 7, 0x42)), ConnectError::PasswordWithoutUsername { version: v311 });
        assert_eq!(error(&patched(Build::default(), 7, 0x22)), ConnectError::WillFlagsWithoutWill { version: v311 });
        assert_eq!(error(&patched(Build::default(), 7, 0x08)), ConnectError::WillFlagsWithoutWill { version: v311 });
        let will = Build { will: Some((b"t", b"m")), ..Build::default() };
        assert_eq!(error(&patched(will, 7, 0x1e)), ConnectError::WillQos { qos: 3, version: v311 });
        // MQTT 5 allows a password alone; 3.1 does not require the reserved bit to be 0.
        let v5 = Build { version: ProtocolVersion::V5, password: Some(b"pw"), ..Build::default() };
        assert!(complete(&v5.bytes()).has_password);
        // MQIsdp is two bytes longer than MQTT: its flags sit at offset 9.
        let v31 = patched(Build { version: ProtocolVersion::V3_1, ..Build::default() }, 9, 0x03);
        assert!(complete(&v31).clean_start);
    }

    #[test]
    fn unknown_protocol_level_gets_the_3_1_1_unacceptable_version_refusal() {
        // Protocol level at body offset 6.
        for (version, level) in [(ProtocolVersion::V3_1_1, 6), (ProtocolVersion::V3_1_1, 3), (ProtocolVersion::V5, 0)] {
            let refused = error(&patched(Build { version, ..Build::default() }, 6, level));
            assert_eq!(refused, ConnectError::UnsupportedLevel { level });
            assert_eq!(refused.refusal(), Some((ProtocolVersion::V3_1_1, Refusal::UnsupportedVersion)));
        }
        let mqisdp_v4 = patched(Build { version: ProtocolVersion::V3_1, ..Build::default() }, 8, 4);
        assert_eq!(error(&mqisdp_v4), ConnectError::UnsupportedLevel { level: 4 });
    }

    #[test]
    fn not_mqtt_at_all_is_a_plain_close() {
        for buf in [&b"GET / HTTP/1.1\r\n"[..], b"\x16\x03\x01\x02\x00", b"\x30\x02\x00\x00", b"\x11\x00"] {
            let refused = error(buf);
            assert_eq!(refused.refusal(), None, "{refused}");
        }
        assert_eq!(error(b"\x30\x02"), ConnectError::NotConnect { packet_type: 3 });
        assert_eq!(error(b"\x12"), ConnectError::FixedHeaderFlags { flags: 2 });
        let other_name = patched(Build::default(), 2, b'X');
        assert_eq!(error(&other_name), ConnectError::UnknownProtocol);
    }

    #[test]
    fn malformed_v5_connect_is_refused_with_malformed_in_v5() {
        let v5 = Build { version: ProtocolVersion::V5, client_id: b"\xff", ..Build::default() };
        assert_eq!(error(&v5.bytes()).refusal(), Some((ProtocolVersion::V5, Refusal::Malformed)));
    }
}
