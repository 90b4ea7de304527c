//! Reading the ClientHello: buffer only the hello, reassembled across TCP segments and across TLS
//! records (a handshake message may span several records), under a byte cap and one total deadline,
//! then extract the server name and ALPN offers.
//!
//! tls-parser parses complete messages only, so the record framing and reassembly here are ours;
//! the hello body and its extensions are parsed by tls-parser.

use tls_parser::{SNIType, TlsExtension, TlsHandshakeType, TlsMessage, TlsMessageHandshake, TlsRecordType};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::close_cause::HelloReject;
use crate::proxy::routes;

/// Record header: content type (1), legacy version (2), payload length (2).
const RECORD_HEADER_BYTES: usize = 5;
/// Where the record's big-endian u16 payload length sits: after the content type and version.
const RECORD_LENGTH_AT: usize = 3;
/// Every SSL 3.0 and TLS record version has major byte 3 (TLS 1.x is 3.1 to 3.4).
const TLS_MAJOR_VERSION: u8 = 3;
/// Handshake message header: message type (1), then a 24-bit big-endian body length (3).
const HANDSHAKE_HEADER_BYTES: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = TlsRecordType::Handshake.0;
const HANDSHAKE_CLIENT_HELLO: u8 = TlsHandshakeType::ClientHello.0;
/// ClientHello fields before the extensions (RFC 8446 §4.1.2), with the size of each length prefix.
const CLIENT_VERSION_BYTES: usize = 2;
const RANDOM_BYTES: usize = 32;
const SESSION_ID_LENGTH_BYTES: usize = 1;
const CIPHER_SUITES_LENGTH_BYTES: usize = 2;
const CIPHER_SUITE_BYTES: usize = 2;
const COMPRESSION_METHODS_LENGTH_BYTES: usize = 1;
const EXTENSIONS_LENGTH_BYTES: usize = 2;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD_BYTES: usize = 16_384;
/// Bytes asked of the socket per read; a typical hello arrives in one or two reads.
const READ_CHUNK_BYTES: usize = 4096;

/// What the ClientHello says, as far as routing needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// Canonical server name; `None` when absent or not a valid hostname (see `sni_status`).
    pub server_name: Option<String>,
    pub sni_status: SniStatus,
    /// Protocols offered in the ALPN extension, in the client's order.
    pub alpn: Vec<Vec<u8>>,
    /// Bytes of the records that carried the hello (the prefix of the buffer to replay).
    pub records_len: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SniStatus {
    #[default]
    Absent,
    Valid,
    /// IP literal, NUL or non-LDH bytes, several names or several SNI extensions.
    Invalid,
}

impl SniStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SniStatus::Absent => "absent",
            SniStatus::Valid => "valid",
            SniStatus::Invalid => "invalid",
        }
    }
}

/// Result of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// A complete ClientHello.
    Complete(Hello),
    /// More bytes are needed.
    Incomplete,
    /// The first bytes are not a TLS handshake record.
    NotTls,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("ClientHello exceeds max_hello_bytes ({max_bytes} bytes)")]
    TooLarge { max_bytes: usize },
    #[error("record of {len} bytes exceeds the TLS maximum of {MAX_RECORD_PAYLOAD_BYTES}")]
    RecordTooLong { len: usize },
    #[error("empty handshake record")]
    EmptyRecord,
    #[error("non-handshake record (type {content_type:#04x}) before the ClientHello was complete")]
    UnexpectedRecord { content_type: u8 },
    #[error("first handshake message is type {msg_type}, not ClientHello")]
    NotClientHello { msg_type: u8 },
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello not complete within hello_timeout")]
    Timeout,
    #[error("client closed the connection during the ClientHello")]
    ClosedEarly,
    #[error("reading the ClientHello: {0}")]
    Io(String),
}

impl HelloError {
    /// Why the hello is refused, for logs and metrics.
    pub fn reason(&self) -> HelloReject {
        match self {
            HelloError::TooLarge { .. } => HelloReject::TooLarge,
            HelloError::RecordTooLong { .. } => HelloReject::RecordTooLong,
            HelloError::EmptyRecord
            | HelloError::UnexpectedRecord { .. }
            | HelloError::NotClientHello { .. }
            | HelloError::Malformed(_) => HelloReject::Malformed,
            HelloError::Timeout => HelloReject::Timeout,
            HelloError::ClosedEarly => HelloReject::ClientClosed,
            HelloError::Io(_) => HelloReject::ClientIo,
        }
    }
}

/// Looks at `buf` (everything received so far) and says whether it holds a whole ClientHello.
/// Pure: the same bytes give the same answer however they were segmented.
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Progress, HelloError> {
    match buf {
        [] => return Ok(Progress::Incomplete),
        [first, ..] if *first != CONTENT_TYPE_HANDSHAKE => return Ok(Progress::NotTls),
        [_, major, ..] if *major != TLS_MAJOR_VERSION => return Ok(Progress::NotTls),
        _ => {}
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut position = 0;
    loop {
        let Some(header) = buf.get(position..position + RECORD_HEADER_BYTES) else {
            return incomplete(position + RECORD_HEADER_BYTES, max_bytes);
        };
        if header[0] != CONTENT_TYPE_HANDSHAKE {
            return Err(HelloError::UnexpectedRecord { content_type: header[0] });
        }
        let len = usize::from(u16::from_be_bytes([header[RECORD_LENGTH_AT], header[RECORD_LENGTH_AT + 1]]));
        if len == 0 {
            return Err(HelloError::EmptyRecord);
        }
        if len > MAX_RECORD_PAYLOAD_BYTES {
            return Err(HelloError::RecordTooLong { len });
        }
        let end = position + RECORD_HEADER_BYTES + len;
        if end > max_bytes {
            return Err(HelloError::TooLarge { max_bytes });
        }
        let Some(fragment) = buf.get(position + RECORD_HEADER_BYTES..end) else {
            return Ok(Progress::Incomplete);
        };
        position = end;
        // The common case, a hello in one record, is parsed in place without a copy.
        let message: &[u8] = if handshake.is_empty() && message_len(fragment).is_some_and(|l| l <= fragment.len()) {
            fragment
        } else {
            handshake.extend_from_slice(fragment);
            &handshake
        };
        let Some(needed) = message_len(message) else {
            continue;
        };
        if message[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello { msg_type: message[0] });
        }
        if needed > max_bytes {
            return Err(HelloError::TooLarge { max_bytes });
        }
        if message.len() < needed {
            continue;
        }
        let mut hello = parse_message(&message[..needed])?;
        hello.records_len = position;
        return Ok(Progress::Complete(hello));
    }
}

fn incomplete(needed: usize, max_bytes: usize) -> Result<Progress, HelloError> {
    if needed > max_bytes {
        Err(HelloError::TooLarge { max_bytes })
    } else {
        Ok(Progress::Incomplete)
    }
}

/// Total length (header included) of the handshake message starting `message`, once known.
fn message_len(message: &[u8]) -> Option<usize> {
    let header = message.get(..HANDSHAKE_HEADER_BYTES)?;
    // The type byte, then the 24-bit length: widened to a u32 with a zero high byte.
    let body = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    Some(HANDSHAKE_HEADER_BYTES + body)
}

fn parse_message(message: &[u8]) -> Result<Hello, HelloError> {
    let contents = match tls_parser::parse_tls_message_handshake(message) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(contents)))) => contents,
        Ok(_) => return Err(HelloError::Malformed("not a ClientHello")),
        Err(_) => return Err(HelloError::Malformed("ClientHello body does not parse")),
    };
    // tls-parser reads an extensions block whose length overruns the message as "no extensions";
    // that is a malformed hello, not one without SNI, so check the framing adds up exactly.
    let fixed_bytes = CLIENT_VERSION_BYTES
        + RANDOM_BYTES
        + SESSION_ID_LENGTH_BYTES
        + contents.session_id.map_or(0, <[u8]>::len)
        + CIPHER_SUITES_LENGTH_BYTES
        + CIPHER_SUITE_BYTES * contents.ciphers.len()
        + COMPRESSION_METHODS_LENGTH_BYTES
        + contents.comp.len();
    let extension_bytes = contents.ext.map_or(0, |ext| EXTENSIONS_LENGTH_BYTES + ext.len());
    if fixed_bytes + extension_bytes != message.len() - HANDSHAKE_HEADER_BYTES {
        return Err(HelloError::Malformed("extensions do not fill the message exactly"));
    }
    let mut hello = Hello::default();
    let Some(extensions) = contents.ext else {
        return Ok(hello);
    };
    let extensions = match tls_parser::parse_tls_client_hello_extensions(extensions) {
        Ok(([], extensions)) => extensions,
        _ => return Err(HelloError::Malformed("extensions do not parse")),
    };
    let mut sni_extensions = 0;
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                sni_extensions += 1;
                let mut host_names = names.iter().filter(|(kind, _)| *kind == SNIType::HostName).map(|(_, name)| *name);
                hello.server_name = match (host_names.next(), host_names.next()) {
                    (Some(name), None) => routes::canonicalize(name),
                    _ => None,
                };
            }
            TlsExtension::ALPN(protocols) => {
                hello.alpn = protocols.iter().map(|p| p.to_vec()).collect();
            }
            _ => {}
        }
    }
    hello.sni_status = match (sni_extensions, &hello.server_name) {
        (0, _) => SniStatus::Absent,
        (1, Some(_)) => SniStatus::Valid,
        _ => {
            hello.server_name = None;
            SniStatus::Invalid
        }
    };
    Ok(hello)
}

/// The bytes read from the client so far and what they turned out to be.
#[derive(Debug)]
pub struct Received {
    /// Everything read from the socket, to be replayed to whoever handles the connection next.
    pub bytes: Vec<u8>,
    pub progress: Progress,
}

/// Reads from `stream` until the buffer (starting with `bytes`, anything already read) holds a
/// complete ClientHello or is known not to be TLS, by `deadline` and within `max_bytes`.
pub async fn read(
    stream: &mut TcpStream,
    mut bytes: Vec<u8>,
    max_bytes: usize,
    deadline: Instant,
) -> Result<Received, HelloError> {
    if !bytes.is_empty() {
        match parse(&bytes, max_bytes)? {
            Progress::Incomplete => {}
            progress => return Ok(Received { bytes, progress }),
        }
    }
    bytes.reserve(READ_CHUNK_BYTES.min(max_bytes));
    loop {
        let room = max_bytes.saturating_sub(bytes.len()).clamp(1, READ_CHUNK_BYTES);
        let start = bytes.len();
        bytes.resize(start + room, 0);
        let read = tokio::time::timeout_at(deadline, stream.read(&mut bytes[start..])).await;
        let n = match read {
            Err(_) => return Err(HelloError::Timeout),
            Ok(Err(error)) => return Err(HelloError::Io(error.to_string())),
            Ok(Ok(n)) => n,
        };
        bytes.truncate(start + n);
        if n == 0 {
            // Non-TLS clients that send a little and half-close still get their route.
            return match parse(&bytes, max_bytes)? {
                Progress::NotTls => Ok(Received { bytes, progress: Progress::NotTls }),
                _ => Err(HelloError::ClosedEarly),
            };
        }
        match parse(&bytes, max_bytes)? {
            Progress::Incomplete if bytes.len() >= max_bytes => {
                return Err(HelloError::TooLarge { max_bytes });
            }
            Progress::Incomplete => {}
            progress => return Ok(Received { bytes, progress }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls_parser::TlsExtensionType;

    /// A ClientHello handshake message (no record header) with the given extensions.
    fn hello_message(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; RANDOM_BYTES]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn sni_extension(names: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for name in names {
            list.push(0);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        extension(TlsExtensionType::ServerName.0, &data)
    }

    fn alpn_extension(protocols: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for protocol in protocols {
            list.push(protocol.len() as u8);
            list.extend_from_slice(protocol);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        extension(TlsExtensionType::ApplicationLayerProtocolNegotiation.0, &data)
    }

    /// Frames a handshake message into records carrying at most `fragment` bytes each.
    fn records(message: &[u8], fragment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(fragment) {
            out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn complete(buf: &[u8]) -> Hello {
        match parse(buf, 16384) {
            Ok(Progress::Complete(hello)) => hello,
            other => panic!("expected a complete hello, got {other:?}"),
        }
    }

    #[test]
    fn sni_and_alpn_are_extracted() {
        let mut extensions = sni_extension(&[b"Broker.Example.COM."]);
        extensions.extend(alpn_extension(&[b"mqtt", b"h2"]));
        let buf = records(&hello_message(&extensions), 16384);
        let hello = complete(&buf);
        assert_eq!(hello.server_name.as_deref(), Some("broker.example.com"));
        assert_eq!(hello.sni_status, SniStatus::Valid);
        assert_eq!(hello.alpn, vec![b"mqtt".to_vec(), b"h2".to_vec()]);
        assert_eq!(hello.records_len, buf.len());
    }

    #[test]
    fn every_prefix_is_incomplete_and_segmentation_does_not_matter() {
        let buf = records(&hello_message(&sni_extension(&[b"a.test"])), 16384);
        for end in 1..buf.len() {
            assert_eq!(parse(&buf[..end], 16384), Ok(Progress::Incomplete), "prefix {end}");
        }
        assert_eq!(complete(&buf).server_name.as_deref(), Some("a.test"));
    }

    #[test]
    fn hello_spanning_several_records_is_reassembled() {
        let message = hello_message(&sni_extension(&[b"a.test"]));
        for fragment in [1, 3, 4, 5, 50] {
            let buf = records(&message, fragment);
            for end in 1..buf.len() {
                assert_eq!(parse(&buf[..end], 16384), Ok(Progress::Incomplete));
            }
            let hello = complete(&buf);
            assert_eq!(hello.server_name.as_deref(), Some("a.test"), "fragment {fragment}");
            assert_eq!(hello.records_len, buf.len());
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_part_of_it() {
        let mut buf = records(&hello_message(&sni_extension(&[b"a.test"])), 16384);
        let hello_len = buf.len();
        buf.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        assert_eq!(complete(&buf).records_len, hello_len);
    }

    #[test]
    fn missing_duplicate_and_invalid_names_are_no_sni() {
        let none = complete(&records(&hello_message(&[]), 16384));
        assert_eq!((none.server_name, none.sni_status), (None, SniStatus::Absent));

        let two_names = complete(&records(&hello_message(&sni_extension(&[b"a.test", b"b.test"])), 16384));
        assert_eq!((two_names.server_name, two_names.sni_status), (None, SniStatus::Invalid));

        let mut twice = sni_extension(&[b"a.test"]);
        twice.extend(sni_extension(&[b"b.test"]));
        let two_extensions = complete(&records(&hello_message(&twice), 16384));
        assert_eq!((two_extensions.server_name, two_extensions.sni_status), (None, SniStatus::Invalid));

        for bad in [&b"127.0.0.1"[..], b"a\0b.test", b"a_b.test"] {
            let hello = complete(&records(&hello_message(&sni_extension(&[bad])), 16384));
            assert_eq!((hello.server_name, hello.sni_status), (None, SniStatus::Invalid));
        }
    }

    #[test]
    fn grease_and_unknown_extensions_are_skipped() {
        let mut extensions = extension(0x0a0a, &[]);
        extensions.extend(sni_extension(&[b"a.test"]));
        extensions.extend(extension(0xfe0d, &[0, 1, 2, 3])); // ECH outer: route on the outer name
        extensions.extend(extension(0x1a1a, &[0]));
        let hello = complete(&records(&hello_message(&extensions), 16384));
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));
    }

    #[test]
    fn non_tls_first_bytes_are_recognised() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n", 16384), Ok(Progress::NotTls));
        assert_eq!(parse(b"\x10\x0c\x00\x04MQTT", 16384), Ok(Progress::NotTls));
        assert_eq!(parse(&[0x16, 0x01], 16384), Ok(Progress::NotTls));
        assert_eq!(parse(&[0x16], 16384), Ok(Progress::Incomplete));
    }

    #[test]
    fn limits_and_framing_errors() {
        let big = hello_message(&extension(0x1234, &vec![0u8; 3000]));
        assert_eq!(parse(&records(&big, 16384), 1024), Err(HelloError::TooLarge { max_bytes: 1024 }));
        // The cap applies before the bytes arrive: a record header claiming too much is enough.
        assert_eq!(parse(&[0x16, 3, 1, 0x10, 0x00], 1024), Err(HelloError::TooLarge { max_bytes: 1024 }));
        assert_eq!(parse(&[0x16, 3, 1, 0x40, 0x01], 65536), Err(HelloError::RecordTooLong { len: 16385 }));
        assert_eq!(parse(&[0x16, 3, 1, 0, 0], 16384), Err(HelloError::EmptyRecord));
        // A handshake header claiming more than the cap.
        assert_eq!(parse(&[0x16, 3, 1, 0, 4, 1, 0x01, 0, 0], 16384), Err(HelloError::TooLarge { max_bytes: 16384 }));
        assert_eq!(parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0], 16384), Err(HelloError::NotClientHello { msg_type: 2 }));
        let mut alert_inside = records(&hello_message(&[]), 10);
        alert_inside.truncate(15);
        alert_inside.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        assert_eq!(parse(&alert_inside, 16384), Err(HelloError::UnexpectedRecord { content_type: 0x15 }));
        let mut overrun = hello_message(&sni_extension(&[b"a.test"]));
        let one_cipher_suite = CIPHER_SUITES_LENGTH_BYTES + CIPHER_SUITE_BYTES;
        let null_compression = COMPRESSION_METHODS_LENGTH_BYTES + 1;
        let extensions_length_at = HANDSHAKE_HEADER_BYTES
            + CLIENT_VERSION_BYTES
            + RANDOM_BYTES
            + SESSION_ID_LENGTH_BYTES
            + one_cipher_suite
            + null_compression;
        overrun[extensions_length_at] = 0x7f;
        assert!(matches!(parse(&records(&overrun, 16384), 16384), Err(HelloError::Malformed(_))));
        let mut trailing = hello_message(&sni_extension(&[b"a.test"]));
        trailing.push(0);
        let body_len = (trailing.len() - 4) as u32;
        trailing[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
        assert!(matches!(parse(&records(&trailing, 16384), 16384), Err(HelloError::Malformed(_))));
        let mut truncated_body = hello_message(&[]);
        truncated_body.truncate(20);
        truncated_body[1..4].copy_from_slice(&16u32.to_be_bytes()[1..]);
        assert!(matches!(parse(&records(&truncated_body, 16384), 16384), Err(HelloError::Malformed(_))));
    }
}
