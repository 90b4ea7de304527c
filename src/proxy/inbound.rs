//! Inbound PROXY headers, from the load balancers listed in `accept_proxy_from` only: a v1 or v2
//! header is required from them (parsed with ppp, also when it arrives in pieces, within the
//! hello deadline) and its source address becomes the client address. Its TLVs are dropped: what
//! snigate sends on is built from its own view of the connection.

use std::net::{IpAddr, SocketAddr};

use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::close_cause::CloseCause;

/// Largest inbound header accepted. v1 is at most 107 bytes; v2 bodies from cloud load
/// balancers carry a few TLVs (VPC endpoint IDs, unique IDs) and stay well under this.
pub const MAX_INBOUND_HEADER_BYTES: usize = 4096;
/// Bytes asked of the socket per read; a v1 line or a typical v2 header arrives in one.
const READ_CHUNK_BYTES: usize = 1024;
/// The longest v1 line the spec allows, CRLF included.
const MAX_V1_LINE_BYTES: usize = 107;
/// A v1 line ends at its first CRLF.
const CRLF: &[u8] = b"\r\n";
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;
const V1_PREFIX: &[u8] = b"PROXY ";

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("no complete PROXY header from a trusted peer within hello_timeout")]
    Timeout,
    #[error("peer closed the connection during the PROXY header")]
    ClosedEarly,
    #[error("PROXY header larger than {MAX_INBOUND_HEADER_BYTES} bytes")]
    TooLarge,
    #[error("bad PROXY header from a trusted peer: {0}")]
    Malformed(String),
    #[error("reading the PROXY header: {0}")]
    Io(String),
}

impl InboundError {
    /// The connection's close cause.
    pub fn reason(&self) -> CloseCause {
        match self {
            InboundError::Timeout => CloseCause::ProxyHeaderTimeout,
            InboundError::ClosedEarly => CloseCause::ClientClosed,
            InboundError::TooLarge | InboundError::Malformed(_) => CloseCause::ProxyHeaderMalformed,
            InboundError::Io(_) => CloseCause::ClientIo,
        }
    }
}

/// What a trusted peer's header said, and the bytes that followed it.
#[derive(Debug)]
pub struct Inbound {
    /// The original client; `None` for the LOCAL command or UNKNOWN family (a health check).
    pub client: Option<SocketAddr>,
    /// Bytes read past the header: the start of the ClientHello.
    pub rest: Vec<u8>,
}

/// Whether `address` may send a PROXY header.
pub fn is_trusted(trusted: &[ipnet::IpNet], address: IpAddr) -> bool {
    let address = address.to_canonical();
    trusted.iter().any(|net| net.contains(&address))
}

/// Whether bytes that are not TLS start like a PROXY header (v1 or v2).
pub fn looks_like_proxy_header(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V2_SIGNATURE.len());
    looks_like_v1(bytes) || (n > 0 && bytes[..n] == V2_SIGNATURE[..n])
}

/// Reads a PROXY v1 or v2 header by `deadline`.
pub async fn read(stream: &mut TcpStream, deadline: Instant) -> Result<Inbound, InboundError> {
    let mut bytes: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        let start = bytes.len();
        let room = (MAX_INBOUND_HEADER_BYTES + READ_CHUNK_BYTES).saturating_sub(start).min(READ_CHUNK_BYTES);
        bytes.resize(start + room, 0);
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut bytes[start..])).await {
            Err(_) => return Err(InboundError::Timeout),
            Ok(Err(error)) => return Err(InboundError::Io(error.to_string())),
            Ok(Ok(0)) => return Err(InboundError::ClosedEarly),
            Ok(Ok(n)) => n,
        };
        bytes.truncate(start + n);
        if let Some(parsed) = parse(&bytes)? {
            let (client, header_len) = parsed;
            bytes.drain(..header_len);
            return Ok(Inbound { client, rest: bytes });
        }
        if bytes.len() >= MAX_INBOUND_HEADER_BYTES {
            return Err(InboundError::TooLarge);
        }
    }
}

/// `Some((client, header length))` once a whole header is in `bytes`; `None` if more is needed.
pub fn parse(bytes: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, InboundError> {
    if looks_like_v1(bytes) {
        // The line ends at the first CRLF; ppp judges a cut-off line by its fields ("PROXY T" is a
        // bad protocol), so parse only whole lines, and refuse a stray CR or LF inside one.
        let Some(crlf) = bytes.windows(CRLF.len()).position(|pair| pair == CRLF) else {
            return match bytes.len() >= MAX_V1_LINE_BYTES {
                true => {
                    Err(InboundError::Malformed(format!("PROXY v1 line without CRLF in {MAX_V1_LINE_BYTES} bytes")))
                }
                false => Ok(None),
            };
        };
        let line = &bytes[..crlf + CRLF.len()];
        if line.len() > MAX_V1_LINE_BYTES || bytes[..crlf].iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(InboundError::Malformed("PROXY v1 line is too long or holds a stray CR/LF".into()));
        }
        return match ppp::v1::Header::try_from(line) {
            Ok(header) => {
                let client = match header.addresses {
                    ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                    ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                    ppp::v1::Addresses::Unknown => None,
                };
                Ok(Some((client, line.len())))
            }
            Err(error) => Err(InboundError::Malformed(error.to_string())),
        };
    }
    let result = ppp::v2::Header::try_from(bytes);
    if result.is_incomplete() {
        return Ok(None);
    }
    let header = result.map_err(|error| InboundError::Malformed(error.to_string()))?;
    let client = match (header.command, header.addresses) {
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        _ => None,
    };
    Ok(Some((client, header.len())))
}

fn looks_like_v1(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V1_PREFIX.len());
    n > 0 && bytes[..n] == V1_PREFIX[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_header_gives_the_client_and_its_length() {
        let bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 8883\r\n\x16\x03\x01";
        let (client, len) = parse(bytes).unwrap().unwrap();
        assert_eq!(client, Some("203.0.113.7:40000".parse().unwrap()));
        assert_eq!(len, bytes.len() - 3);
    }

    #[test]
    fn v2_header_in_pieces_is_incomplete_until_whole() {
        let header = crate::proxy::proxy_header::encode_v2(&crate::proxy::proxy_header::Meta {
            source: Some("[2001:db8::7]:5000".parse().unwrap()),
            destination: Some("[2001:db8::1]:8883".parse().unwrap()),
            authority: Some("forged.example"),
            ..Default::default()
        })
        .unwrap();
        for end in 1..header.len() {
            assert!(parse(&header[..end]).unwrap().is_none(), "prefix {end}");
        }
        let (client, len) = parse(&header).unwrap().unwrap();
        assert_eq!(client, Some("[2001:db8::7]:5000".parse().unwrap()));
        assert_eq!(len, header.len());
    }

    #[test]
    fn v1_line_in_pieces_is_incomplete_until_its_crlf() {
        let line = b"PROXY TCP6 2001:db8::9 2001:db8::1 40000 8883\r\n";
        for end in 1..line.len() {
            assert!(parse(&line[..end]).unwrap().is_none(), "prefix {end}");
        }
        let (client, len) = parse(line).unwrap().unwrap();
        assert_eq!(client, Some("[2001:db8::9]:40000".parse().unwrap()));
        assert_eq!(len, line.len());
        assert!(matches!(parse(&[b'P'; 200]), Err(InboundError::Malformed(_))));
        // Found by fuzzing: a stray LF before the CRLF once made the header 1 byte short.
        assert!(matches!(parse(b"PROXY UNKNOWN \n\r\r\n"), Err(InboundError::Malformed(_))));
        let unknown = b"PROXY UNKNOWN whatever follows\r\n\x16";
        assert_eq!(parse(unknown).unwrap(), Some((None, unknown.len() - 1)));
    }

    #[test]
    fn garbage_from_a_trusted_peer_is_malformed() {
        assert!(matches!(parse(b"\x16\x03\x01\x02\x00"), Err(InboundError::Malformed(_))));
        assert!(matches!(parse(b"PROXY TCP4 nonsense here\r\n"), Err(InboundError::Malformed(_))));
    }

    #[test]
    fn trust_and_header_detection() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&trusted, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&trusted, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!is_trusted(&trusted, "11.1.2.3".parse().unwrap()));
        assert!(looks_like_proxy_header(b"PROXY TCP4"));
        assert!(looks_like_proxy_header(b"PRO"));
        assert!(looks_like_proxy_header(b"\r\n\r\n\0\r\nQUIT\n!"));
        assert!(!looks_like_proxy_header(b"GET / HTTP/1.1"));
    }
}
