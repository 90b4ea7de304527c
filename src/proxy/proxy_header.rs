//! PROXY protocol headers sent to backends (v1 text, v2 binary with TLVs), and decoding of
//! received v2 headers for the demo backends.
//!
//! The v2 header and its top-level TLVs are built with `ppp`; the SSL TLV's value (client bits,
//! verify, sub-TLVs) is encoded here because ppp has no builder for nested TLVs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Type, Version, PROTOCOL_PREFIX};

/// Mosquitto (and HAProxy's default) refuse longer bodies; the README (PROXY header reference) promises ≤ 500 bytes.
pub const MAX_HEADER_BYTES: usize = 500;

/// SSL TLV client bit: the client connected over TLS.
pub const PP2_CLIENT_SSL: u8 = 0x01;
/// SSL TLV client bit: the client presented a certificate on this connection.
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// SSL TLV client bit: the TLS session carries a client certificate (perhaps by resumption).
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// Every v2 header starts with these: signature (12), version/command, family/protocol, length (2).
const V2_FIXED_HEADER_LEN: usize = PROTOCOL_PREFIX.len() + 1 + 1 + 2;
/// The big-endian u16 body length follows the signature and the version and family bytes.
const V2_LENGTH_AT: usize = PROTOCOL_PREFIX.len() + 2;
/// Room reserved for a v2 header: addresses and the usual TLVs fit without regrowing.
const V2_CAPACITY_BYTES: usize = 256;
/// Room reserved for a v1 line: a TCP4 line fits (the longest, TCP6, is 107 bytes).
const V1_CAPACITY_BYTES: usize = 64;
/// Room reserved for the SSL TLV value: client bits, verify and five short strings.
const SSL_CAPACITY_BYTES: usize = 128;
/// The SSL TLV value starts with the client bits (1 byte) and the verify result (u32).
const SSL_FIXED_BYTES: usize = 1 + 4;
/// SSL TLV verify result: 0 means the client presented a certificate and it was verified.
const SSL_VERIFY_OK: u32 = 0;
/// SSL TLV verify result when there is no verified certificate (any non-zero value says so).
const SSL_VERIFY_NO_CERTIFICATE: u32 = 1;

/// The TLV type codes a decoded header is matched on (`ppp::v2::Type` as bytes).
const TLV_ALPN: u8 = Type::ALPN as u8;
const TLV_AUTHORITY: u8 = Type::Authority as u8;
const TLV_SSL: u8 = Type::SSL as u8;
const TLV_SSL_VERSION: u8 = Type::SSLVersion as u8;
const TLV_SSL_CN: u8 = Type::SSLCommonName as u8;
const TLV_SSL_CIPHER: u8 = Type::SSLCipher as u8;

/// Everything a header may carry about one client connection.
#[derive(Debug, Clone, Default)]
pub struct Meta<'a> {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// AUTHORITY TLV: the (canonical) SNI.
    pub authority: Option<&'a str>,
    /// ALPN TLV: negotiated (terminate) or first offered (passthrough).
    pub alpn: Option<&'a [u8]>,
    /// SSL TLV, on terminated connections only.
    pub ssl: Option<Ssl<'a>>,
}

/// The SSL TLV of a terminated connection.
#[derive(Debug, Clone, Default)]
pub struct Ssl<'a> {
    /// A verified client certificate belongs to this session.
    pub cert_in_session: bool,
    /// ... and was presented on this connection (not only carried by resumption).
    pub cert_in_connection: bool,
    pub version: &'a str,
    /// CN sub-TLV: the configured identity of the verified client certificate.
    pub common_name: Option<&'a str>,
    pub cipher: &'a str,
    pub sig_alg: &'a str,
    pub key_alg: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("PROXY header would be {0} bytes, over the {MAX_HEADER_BYTES}-byte limit")]
    TooLong(usize),
    #[error("TLV value of {0} bytes does not fit")]
    TlvTooLong(usize),
}

/// The PROXY v1 line: addresses only.
pub fn encode_v1(meta: &Meta) -> Vec<u8> {
    let (Some(source), Some(destination)) = (meta.source, meta.destination) else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let (source, destination) = same_family(source, destination);
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let mut line = String::with_capacity(V1_CAPACITY_BYTES);
    let _ = write!(
        line,
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    line.into_bytes()
}

/// The PROXY v2 header (command PROXY, TCP over IPv4 or IPv6) with TLVs in ascending type order.
pub fn encode_v2(meta: &Meta) -> Result<Vec<u8>, HeaderError> {
    let version_command = Version::Two | Command::Proxy;
    let builder = match (meta.source, meta.destination) {
        (Some(source), Some(destination)) => {
            Builder::with_addresses(version_command, Protocol::Stream, same_family(source, destination))
        }
        _ => Builder::with_addresses(version_command, Protocol::Unspecified, ppp::v2::Addresses::Unspecified),
    };
    let mut builder = builder.reserve_capacity(V2_CAPACITY_BYTES);
    if let Some(alpn) = meta.alpn {
        builder = builder.write_tlv(Type::ALPN, alpn).map_err(|_| HeaderError::TlvTooLong(alpn.len()))?;
    }
    if let Some(authority) = meta.authority {
        builder = builder
            .write_tlv(Type::Authority, authority.as_bytes())
            .map_err(|_| HeaderError::TlvTooLong(authority.len()))?;
    }
    if let Some(ssl) = &meta.ssl {
        let value = encode_ssl(ssl)?;
        builder = builder.write_tlv(Type::SSL, &value).map_err(|_| HeaderError::TlvTooLong(value.len()))?;
    }
    let header = builder.build().map_err(|_| HeaderError::TooLong(usize::from(u16::MAX)))?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLong(header.len()));
    }
    Ok(header)
}

/// The SSL TLV value: client bits, verify result, then VERSION, CN, CIPHER, SIG_ALG, KEY_ALG.
fn encode_ssl(ssl: &Ssl) -> Result<Vec<u8>, HeaderError> {
    let mut client = PP2_CLIENT_SSL;
    if ssl.cert_in_connection {
        client |= PP2_CLIENT_CERT_CONN;
    }
    if ssl.cert_in_session {
        client |= PP2_CLIENT_CERT_SESS;
    }
    // rustls only reports certificates it verified, so "present" means "verified" here.
    let verify = if ssl.cert_in_session { SSL_VERIFY_OK } else { SSL_VERIFY_NO_CERTIFICATE };
    let mut value = Vec::with_capacity(SSL_CAPACITY_BYTES);
    value.push(client);
    value.extend_from_slice(&verify.to_be_bytes());
    let sub_tlvs = [
        (Type::SSLVersion, Some(ssl.version)),
        (Type::SSLCommonName, ssl.common_name.filter(|_| ssl.cert_in_session)),
        (Type::SSLCipher, Some(ssl.cipher)),
        (Type::SSLSignatureAlgorithm, Some(ssl.sig_alg)),
        (Type::SSLKeyAlgorithm, Some(ssl.key_alg)),
    ];
    for (kind, text) in sub_tlvs {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            continue;
        };
        let len = u16::try_from(text.len()).map_err(|_| HeaderError::TlvTooLong(text.len()))?;
        value.push(u8::from(kind));
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(text.as_bytes());
    }
    Ok(value)
}

/// Both addresses in one family: IPv4-mapped IPv6 becomes IPv4; a remaining mix becomes IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
    let (source, destination) = (canonical(source), canonical(destination));
    if source.is_ipv4() == destination.is_ipv4() {
        return (source, destination);
    }
    let as_v6 = |address: SocketAddr| match address.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), address.port()),
        IpAddr::V6(_) => address,
    };
    (as_v6(source), as_v6(destination))
}

/// A received v2 header, decoded for display (the demo backends print it back to the client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub authority: Option<String>,
    pub alpn: Option<String>,
    pub ssl_client_bits: Option<u8>,
    pub ssl_verify: Option<u32>,
    pub ssl_version: Option<String>,
    pub ssl_cn: Option<String>,
    pub ssl_cipher: Option<String>,
}

/// Length of the v2 header at the start of `buf` once its fixed part is there; `None` if it is
/// not a v2 header or its fixed part (`V2_FIXED_HEADER_LEN` bytes) has not all arrived.
pub fn v2_header_len(buf: &[u8]) -> Option<usize> {
    let fixed = buf.get(..V2_FIXED_HEADER_LEN)?;
    if &fixed[..PROTOCOL_PREFIX.len()] != PROTOCOL_PREFIX {
        return None;
    }
    let body_len = u16::from_be_bytes([fixed[V2_LENGTH_AT], fixed[V2_LENGTH_AT + 1]]);
    Some(V2_FIXED_HEADER_LEN + usize::from(body_len))
}

/// Decodes a complete v2 header with ppp; the SSL TLV's sub-TLVs are walked here.
pub fn decode_v2(buf: &[u8]) -> Option<Decoded> {
    let header = ppp::v2::Header::try_from(buf).ok()?;
    let mut decoded = Decoded::default();
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            decoded.source = Some(SocketAddr::new(a.source_address.into(), a.source_port));
            decoded.destination = Some(SocketAddr::new(a.destination_address.into(), a.destination_port));
        }
        ppp::v2::Addresses::IPv6(a) => {
            decoded.source = Some(SocketAddr::new(a.source_address.into(), a.source_port));
            decoded.destination = Some(SocketAddr::new(a.destination_address.into(), a.destination_port));
        }
        _ => {}
    }
    let text = |value: &[u8]| String::from_utf8_lossy(value).into_owned();
    for tlv in header.tlvs() {
        let Ok(tlv) = tlv else { return None };
        match tlv.kind {
            TLV_ALPN => decoded.alpn = Some(text(&tlv.value)),
            TLV_AUTHORITY => decoded.authority = Some(text(&tlv.value)),
            TLV_SSL if tlv.value.len() >= SSL_FIXED_BYTES => {
                decoded.ssl_client_bits = Some(tlv.value[0]);
                decoded.ssl_verify = Some(u32::from_be_bytes(tlv.value[1..SSL_FIXED_BYTES].try_into().ok()?));
                let mut rest = &tlv.value[SSL_FIXED_BYTES..];
                while let [kind, high, low, tail @ ..] = rest {
                    let len = usize::from(u16::from_be_bytes([*high, *low]));
                    let value = tail.get(..len)?;
                    match *kind {
                        TLV_SSL_VERSION => decoded.ssl_version = Some(text(value)),
                        TLV_SSL_CN => decoded.ssl_cn = Some(text(value)),
                        TLV_SSL_CIPHER => decoded.ssl_cipher = Some(text(value)),
                        _ => {}
                    }
                    rest = &tail[len..];
                }
            }
            _ => {}
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    fn addresses() -> (SocketAddr, SocketAddr) {
        ("192.0.2.1:51000".parse().unwrap(), "198.51.100.2:8883".parse().unwrap())
    }

    #[test]
    fn v1_golden_lines() {
        let (source, destination) = addresses();
        let meta = Meta { source: Some(source), destination: Some(destination), ..Meta::default() };
        assert_eq!(encode_v1(&meta), b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 8883\r\n");
        let meta6 = Meta {
            source: Some("[2001:db8::1]:1234".parse().unwrap()),
            destination: Some("[::1]:8883".parse().unwrap()),
            ..Meta::default()
        };
        assert_eq!(encode_v1(&meta6), b"PROXY TCP6 2001:db8::1 ::1 1234 8883\r\n");
        let mapped = Meta {
            source: Some("[::ffff:192.0.2.1]:1234".parse().unwrap()),
            destination: Some("[::ffff:127.0.0.1]:8883".parse().unwrap()),
            ..Meta::default()
        };
        assert_eq!(encode_v1(&mapped), b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 8883\r\n");
    }

    #[test]
    fn v2_tcp4_without_tlvs_golden_bytes() {
        let (source, destination) = addresses();
        let meta = Meta { source: Some(source), destination: Some(destination), ..Meta::default() };
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2]);
        expected.extend_from_slice(&[0xC7, 0x38, 0x22, 0xB3]); // 51000, 8883
        assert_eq!(encode_v2(&meta).unwrap(), expected);
    }

    #[test]
    fn v2_terminated_connection_golden_bytes() {
        let (source, destination) = addresses();
        let meta = Meta {
            source: Some(source),
            destination: Some(destination),
            authority: Some("a.test"),
            alpn: Some(b"mqtt"),
            ssl: Some(Ssl {
                cert_in_session: true,
                cert_in_connection: true,
                version: "TLSv1.3",
                common_name: Some("dev1"),
                cipher: "TLS_AES_128_GCM_SHA256",
                sig_alg: "ecdsa-with-SHA256",
                key_alg: "EC256",
            }),
        };
        let mut ssl = vec![0x07, 0, 0, 0, 0];
        for (kind, text) in [
            (0x21, &b"TLSv1.3"[..]),
            (0x22, b"dev1"),
            (0x23, b"TLS_AES_128_GCM_SHA256"),
            (0x24, b"ecdsa-with-SHA256"),
            (0x25, b"EC256"),
        ] {
            ssl.push(kind);
            ssl.extend_from_slice(&(text.len() as u16).to_be_bytes());
            ssl.extend_from_slice(text);
        }
        let mut tlvs = vec![0x01, 0x00, 0x04];
        tlvs.extend_from_slice(b"mqtt");
        tlvs.extend_from_slice(&[0x02, 0x00, 0x06]);
        tlvs.extend_from_slice(b"a.test");
        tlvs.push(0x20);
        tlvs.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
        tlvs.extend_from_slice(&ssl);
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11]);
        expected.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2, 0xC7, 0x38, 0x22, 0xB3]);
        expected.extend_from_slice(&tlvs);
        let encoded = encode_v2(&meta).unwrap();
        assert_eq!(encoded, expected);

        let decoded = decode_v2(&encoded).unwrap();
        assert_eq!(decoded.ssl_cn.as_deref(), Some("dev1"));
        assert_eq!(decoded.ssl_verify, Some(0));
        assert_eq!(v2_header_len(&encoded), Some(encoded.len()));
    }

    #[test]
    fn v2_without_client_certificate_has_no_cn_and_nonzero_verify() {
        let (source, destination) = addresses();
        let meta = Meta {
            source: Some(source),
            destination: Some(destination),
            ssl: Some(Ssl {
                common_name: Some("must-not-appear"),
                version: "TLSv1.2",
                cipher: "ECDHE-ECDSA-AES128-GCM-SHA256",
                ..Ssl::default()
            }),
            ..Meta::default()
        };
        let encoded = encode_v2(&meta).unwrap();
        let ssl_start = 16 + 12 + 3;
        assert_eq!(encoded[16 + 12], 0x20);
        assert_eq!(encoded[ssl_start], PP2_CLIENT_SSL);
        assert_eq!(&encoded[ssl_start + 1..ssl_start + 5], &[0, 0, 0, 1]);
        let decoded = decode_v2(&encoded).unwrap();
        assert_eq!(decoded.ssl_cn, None);
        assert_eq!(decoded.ssl_version.as_deref(), Some("TLSv1.2"));
    }

    #[test]
    fn v2_tcp6_carries_sixteen_byte_addresses() {
        let meta = Meta {
            source: Some("[2001:db8::1]:1234".parse().unwrap()),
            destination: Some("[::1]:8883".parse().unwrap()),
            authority: Some("b.test"),
            ..Meta::default()
        };
        let encoded = encode_v2(&meta).unwrap();
        assert_eq!(&encoded[12..16], &[0x21, 0x21, 0x00, 36 + 3 + 6]);
        assert_eq!(encoded.len(), 16 + 36 + 9);
        let decoded = decode_v2(&encoded).unwrap();
        assert_eq!(decoded.source, meta.source);
        assert_eq!(decoded.destination, meta.destination);
    }

    #[test]
    fn oversized_header_is_refused() {
        let (source, destination) = addresses();
        let long = "x".repeat(300);
        let meta = Meta {
            source: Some(source),
            destination: Some(destination),
            authority: Some(&long),
            alpn: Some(long.as_bytes()),
            ..Meta::default()
        };
        assert!(matches!(encode_v2(&meta), Err(HeaderError::TooLong(_))));
    }
}
