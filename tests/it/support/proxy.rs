//! An independent PROXY protocol decoder (v1 text, v2 binary), written from HAProxy's
//! proxy-protocol.txt. Deliberately strict: anything the spec does not allow is an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// `\r\n\r\n\0\r\nQUIT\n`
pub const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

pub const CMD_LOCAL: u8 = 0x0;
pub const CMD_PROXY: u8 = 0x1;

pub const FAM_UNSPEC: u8 = 0x00;
pub const FAM_TCP4: u8 = 0x11;
pub const FAM_UDP4: u8 = 0x12;
pub const FAM_TCP6: u8 = 0x21;
pub const FAM_UDP6: u8 = 0x22;
pub const FAM_UNIX_STREAM: u8 = 0x31;
pub const FAM_UNIX_DGRAM: u8 = 0x32;

pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;

pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// The v1 header is at most 107 bytes including CRLF.
pub const V1_MAX_LEN: usize = 107;

/// A decoded v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Header {
    /// High nibble of byte 13 (must be 2).
    pub version: u8,
    /// Low nibble of byte 13: 0 LOCAL, 1 PROXY.
    pub command: u8,
    /// Byte 14 as sent (0x11 TCP4, 0x21 TCP6, …).
    pub family: u8,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    /// TLVs in wire order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
    /// 16 + body length.
    pub total_len: usize,
    /// The exact header bytes.
    pub raw: Vec<u8>,
}

/// The body of a PP2_TYPE_SSL TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslTlv {
    pub client: u8,
    pub verify: u32,
    /// Sub-TLVs in wire order.
    pub sub: Vec<(u8, Vec<u8>)>,
}

impl SslTlv {
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.sub.iter().find(|(t, _)| *t == kind).map(|(_, v)| v.as_slice())
    }

    fn get_string(&self, kind: u8) -> Option<String> {
        self.get(kind).map(|v| String::from_utf8(v.to_vec()).expect("SSL sub-TLV is not UTF-8"))
    }

    pub fn version(&self) -> Option<String> {
        self.get_string(PP2_SUBTYPE_SSL_VERSION)
    }
    pub fn cn(&self) -> Option<String> {
        self.get_string(PP2_SUBTYPE_SSL_CN)
    }
    pub fn cipher(&self) -> Option<String> {
        self.get_string(PP2_SUBTYPE_SSL_CIPHER)
    }
    pub fn sig_alg(&self) -> Option<String> {
        self.get_string(PP2_SUBTYPE_SSL_SIG_ALG)
    }
    pub fn key_alg(&self) -> Option<String> {
        self.get_string(PP2_SUBTYPE_SSL_KEY_ALG)
    }
    pub fn sub_types(&self) -> Vec<u8> {
        self.sub.iter().map(|(t, _)| *t).collect()
    }
}

impl V2Header {
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs.iter().find(|(t, _)| *t == kind).map(|(_, v)| v.as_slice())
    }

    pub fn tlv_count(&self, kind: u8) -> usize {
        self.tlvs.iter().filter(|(t, _)| *t == kind).count()
    }

    pub fn tlv_types(&self) -> Vec<u8> {
        self.tlvs.iter().map(|(t, _)| *t).collect()
    }

    pub fn authority(&self) -> Option<String> {
        self.tlv(PP2_TYPE_AUTHORITY).map(|v| String::from_utf8(v.to_vec()).expect("AUTHORITY is not UTF-8"))
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tlv(PP2_TYPE_ALPN).map(<[u8]>::to_vec)
    }

    /// The parsed SSL TLV; panics if it is present but malformed.
    pub fn ssl(&self) -> Option<SslTlv> {
        self.tlv(PP2_TYPE_SSL).map(|v| parse_ssl_tlv(v).unwrap_or_else(|e| panic!("bad SSL TLV: {e}")))
    }

    pub fn ssl_cn(&self) -> Option<String> {
        self.ssl().and_then(|s| s.cn())
    }
    pub fn ssl_version(&self) -> Option<String> {
        self.ssl().and_then(|s| s.version())
    }
    pub fn ssl_cipher(&self) -> Option<String> {
        self.ssl().and_then(|s| s.cipher())
    }
    pub fn ssl_verify(&self) -> Option<u32> {
        self.ssl().map(|s| s.verify)
    }
}

/// A decoded v1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Header {
    /// "TCP4", "TCP6" or "UNKNOWN".
    pub protocol: String,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    /// The whole line including CRLF.
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    V1(V1Header),
    V2(V2Header),
}

fn take_tlvs(mut body: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut tlvs = Vec::new();
    while !body.is_empty() {
        if body.len() < 3 {
            return Err(format!("{} trailing bytes cannot hold a TLV header", body.len()));
        }
        let kind = body[0];
        let len = u16::from_be_bytes([body[1], body[2]]) as usize;
        if body.len() < 3 + len {
            return Err(format!("TLV 0x{kind:02x} claims {len} bytes, only {} left", body.len() - 3));
        }
        tlvs.push((kind, body[3..3 + len].to_vec()));
        body = &body[3 + len..];
    }
    Ok(tlvs)
}

/// Parses the value of a PP2_TYPE_SSL TLV.
pub fn parse_ssl_tlv(value: &[u8]) -> Result<SslTlv, String> {
    if value.len() < 5 {
        return Err(format!("SSL TLV body is {} bytes, needs at least 5", value.len()));
    }
    let client = value[0];
    let verify = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let sub = take_tlvs(&value[5..]).map_err(|e| format!("SSL sub-TLVs: {e}"))?;
    Ok(SslTlv { client, verify, sub })
}

/// Parses a complete v2 header at the start of `buf` (trailing bytes after it are ignored).
pub fn parse_v2(buf: &[u8]) -> Result<V2Header, String> {
    if buf.len() < 16 {
        return Err(format!("need 16 bytes for the fixed part, have {}", buf.len()));
    }
    if buf[..12] != V2_SIGNATURE {
        return Err(format!("bad v2 signature {:02x?}", &buf[..12]));
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0F;
    if version != 2 {
        return Err(format!("version nibble is {version}, expected 2"));
    }
    if command > CMD_PROXY {
        return Err(format!("unknown command {command}"));
    }
    let family = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < 16 + len {
        return Err(format!("header claims {len} body bytes, only {} present", buf.len() - 16));
    }
    let body = &buf[16..16 + len];
    let (addr_len, src, dst) = match family {
        FAM_TCP4 | FAM_UDP4 => {
            if body.len() < 12 {
                return Err(format!("IPv4 address block needs 12 bytes, body has {}", body.len()));
            }
            let src_ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst_ip = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let src_port = u16::from_be_bytes([body[8], body[9]]);
            let dst_port = u16::from_be_bytes([body[10], body[11]]);
            (
                12,
                Some(SocketAddr::new(IpAddr::V4(src_ip), src_port)),
                Some(SocketAddr::new(IpAddr::V4(dst_ip), dst_port)),
            )
        }
        FAM_TCP6 | FAM_UDP6 => {
            if body.len() < 36 {
                return Err(format!("IPv6 address block needs 36 bytes, body has {}", body.len()));
            }
            let src_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&body[0..16]).unwrap());
            let dst_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&body[16..32]).unwrap());
            let src_port = u16::from_be_bytes([body[32], body[33]]);
            let dst_port = u16::from_be_bytes([body[34], body[35]]);
            (
                36,
                Some(SocketAddr::new(IpAddr::V6(src_ip), src_port)),
                Some(SocketAddr::new(IpAddr::V6(dst_ip), dst_port)),
            )
        }
        FAM_UNIX_STREAM | FAM_UNIX_DGRAM => {
            if body.len() < 216 {
                return Err(format!("UNIX address block needs 216 bytes, body has {}", body.len()));
            }
            (216, None, None)
        }
        FAM_UNSPEC => (0, None, None),
        other => return Err(format!("unknown address family/protocol byte 0x{other:02x}")),
    };
    if command == CMD_PROXY && family == FAM_UNSPEC {
        // Allowed by the spec (receiver must use the real connection addresses), but never
        // what snigate should send for a TCP client.
    }
    let tlvs = take_tlvs(&body[addr_len..])?;
    Ok(V2Header { version, command, family, src, dst, tlvs, total_len: 16 + len, raw: buf[..16 + len].to_vec() })
}

/// Parses one v1 line (must end in CRLF and be at most 107 bytes).
pub fn parse_v1(line: &[u8]) -> Result<V1Header, String> {
    if line.len() > V1_MAX_LEN {
        return Err(format!("v1 line is {} bytes, max {V1_MAX_LEN}", line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|_| "v1 line is not ASCII".to_string())?;
    let Some(text_no_crlf) = text.strip_suffix("\r\n") else {
        return Err(format!("v1 line does not end in CRLF: {text:?}"));
    };
    if text_no_crlf.contains(['\r', '\n']) {
        return Err(format!("v1 line has a stray CR/LF: {text:?}"));
    }
    let parts: Vec<&str> = text_no_crlf.split(' ').collect();
    if parts.first() != Some(&"PROXY") {
        return Err(format!("v1 line does not start with `PROXY `: {text:?}"));
    }
    match parts.get(1).copied() {
        Some("UNKNOWN") => Ok(V1Header { protocol: "UNKNOWN".into(), src: None, dst: None, line: text.into() }),
        Some(protocol @ ("TCP4" | "TCP6")) => {
            if parts.len() != 6 {
                return Err(format!("v1 {protocol} line needs 6 fields, has {}: {text:?}", parts.len()));
            }
            let parse_ip = |s: &str| -> Result<IpAddr, String> {
                let ip: IpAddr = s.parse().map_err(|_| format!("bad address {s:?}"))?;
                match (protocol, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(format!("address {s:?} does not match {protocol}")),
                }
            };
            let parse_port = |s: &str| -> Result<u16, String> {
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("bad port {s:?}"));
                }
                s.parse().map_err(|_| format!("bad port {s:?}"))
            };
            let src_ip = parse_ip(parts[2])?;
            let dst_ip = parse_ip(parts[3])?;
            let src_port = parse_port(parts[4])?;
            let dst_port = parse_port(parts[5])?;
            Ok(V1Header {
                protocol: protocol.into(),
                src: Some(SocketAddr::new(src_ip, src_port)),
                dst: Some(SocketAddr::new(dst_ip, dst_port)),
                line: text.into(),
            })
        }
        other => Err(format!("unknown v1 protocol {other:?}")),
    }
}

/// Reads exactly one v2 header from `reader` (16 bytes, then the body), nothing more.
pub async fn read_v2<R: AsyncRead + Unpin>(reader: &mut R) -> Result<V2Header, String> {
    let mut buf = vec![0u8; 16];
    reader.read_exact(&mut buf).await.map_err(|e| format!("reading the 16-byte v2 prefix: {e}"))?;
    if buf[..12] != V2_SIGNATURE {
        return Err(format!("expected a PROXY v2 signature, got {:02x?} ({:?})", &buf, String::from_utf8_lossy(&buf)));
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    buf.resize(16 + len, 0);
    reader.read_exact(&mut buf[16..]).await.map_err(|e| format!("reading the {len}-byte v2 body: {e}"))?;
    parse_v2(&buf)
}

/// Reads one v1 line byte by byte (so nothing after the CRLF is consumed).
pub async fn read_v1<R: AsyncRead + Unpin>(reader: &mut R) -> Result<V1Header, String> {
    let mut line = Vec::new();
    loop {
        let byte = reader.read_u8().await.map_err(|e| format!("reading the v1 line after {line:?}: {e}"))?;
        line.push(byte);
        if line.ends_with(b"\r\n") {
            return parse_v1(&line);
        }
        if line.len() >= V1_MAX_LEN {
            return Err(format!("no CRLF within {V1_MAX_LEN} bytes: {:?}", String::from_utf8_lossy(&line)));
        }
    }
}

/// Encodes a v2 header (used only to build golden inputs in decoder self-tests).
pub fn encode_v2_for_tests(command: u8, family: u8, addresses: &[u8], tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = addresses.to_vec();
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}
