//! Self-tests of the test suite's own PROXY decoder and hello tools, on golden bytes written by
//! hand from HAProxy's proxy-protocol.txt (so the decoder the other tests trust is trustworthy).

use std::net::SocketAddr;

use crate::support::hello::{parse_records, raw_client_hello, reframe_into_two_records, wrap_records};
use crate::support::proxy::*;
use tokio::io::AsyncReadExt;

/// TCP4 192.168.0.1:56324 -> 192.168.0.11:443, ALPN "mqtt", AUTHORITY "a.test",
/// SSL{client 0x07, verify 0, VERSION "TLSv1.3", CN "dev"}.
#[rustfmt::skip]
const GOLDEN_TCP4_WITH_SSL: &[u8] = &[
    // signature
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    0x21, // version 2, command PROXY
    0x11, // TCP over IPv4
    0x00, 0x34, // 52 bytes follow: 12 address + 7 ALPN + 9 AUTHORITY + 24 SSL
    0xC0, 0xA8, 0x00, 0x01, // src 192.168.0.1
    0xC0, 0xA8, 0x00, 0x0B, // dst 192.168.0.11
    0xDC, 0x04, // src port 56324
    0x01, 0xBB, // dst port 443
    0x01, 0x00, 0x04, b'm', b'q', b't', b't', // ALPN
    0x02, 0x00, 0x06, b'a', b'.', b't', b'e', b's', b't', // AUTHORITY
    0x20, 0x00, 0x15, // SSL, 21 bytes
    0x07, // client: SSL | CERT_CONN | CERT_SESS
    0x00, 0x00, 0x00, 0x00, // verify = 0
    0x21, 0x00, 0x07, b'T', b'L', b'S', b'v', b'1', b'.', b'3', // VERSION
    0x22, 0x00, 0x03, b'd', b'e', b'v', // CN
];

/// TCP6 [::1]:1234 -> [::1]:8883, no TLVs.
#[rustfmt::skip]
const GOLDEN_TCP6: &[u8] = &[
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    0x21, 0x21, 0x00, 0x24,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    0x04, 0xD2, // 1234
    0x22, 0xB3, // 8883
];

/// LOCAL command, UNSPEC family, no body (a health check).
#[rustfmt::skip]
const GOLDEN_LOCAL: &[u8] =
    &[0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00];

#[test]
fn decodes_golden_tcp4_header_with_tlvs_and_ssl() {
    let header = parse_v2(GOLDEN_TCP4_WITH_SSL).unwrap();
    assert_eq!(header.version, 2);
    assert_eq!(header.command, CMD_PROXY);
    assert_eq!(header.family, FAM_TCP4);
    assert_eq!(header.src, Some("192.168.0.1:56324".parse::<SocketAddr>().unwrap()));
    assert_eq!(header.dst, Some("192.168.0.11:443".parse::<SocketAddr>().unwrap()));
    assert_eq!(header.total_len, GOLDEN_TCP4_WITH_SSL.len());
    assert_eq!(header.raw, GOLDEN_TCP4_WITH_SSL);
    assert_eq!(header.tlv_types(), vec![PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_SSL]);
    assert_eq!(header.alpn().as_deref(), Some(&b"mqtt"[..]));
    assert_eq!(header.authority().as_deref(), Some("a.test"));
    let ssl = header.ssl().unwrap();
    assert_eq!(ssl.client, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS);
    assert_eq!(ssl.verify, 0);
    assert_eq!(ssl.sub_types(), vec![PP2_SUBTYPE_SSL_VERSION, PP2_SUBTYPE_SSL_CN]);
    assert_eq!(header.ssl_version().as_deref(), Some("TLSv1.3"));
    assert_eq!(header.ssl_cn().as_deref(), Some("dev"));
    assert_eq!(header.ssl_cipher(), None);
}

#[test]
fn decodes_golden_tcp6_and_local_headers() {
    let header = parse_v2(GOLDEN_TCP6).unwrap();
    assert_eq!(header.family, FAM_TCP6);
    assert_eq!(header.src, Some("[::1]:1234".parse::<SocketAddr>().unwrap()));
    assert_eq!(header.dst, Some("[::1]:8883".parse::<SocketAddr>().unwrap()));
    assert!(header.tlvs.is_empty());
    assert_eq!(header.total_len, 52);

    let local = parse_v2(GOLDEN_LOCAL).unwrap();
    assert_eq!(local.command, CMD_LOCAL);
    assert_eq!(local.family, FAM_UNSPEC);
    assert_eq!(local.src, None);
    assert_eq!(local.total_len, 16);
}

#[test]
fn encoder_helper_matches_golden_bytes() {
    let addresses = [0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0x0B, 0xDC, 0x04, 0x01, 0xBB];
    let ssl = [&[0x07u8, 0, 0, 0, 0][..], &[0x21, 0x00, 0x07], b"TLSv1.3", &[0x22, 0x00, 0x03], b"dev"].concat();
    let encoded = encode_v2_for_tests(
        CMD_PROXY,
        FAM_TCP4,
        &addresses,
        &[(PP2_TYPE_ALPN, b"mqtt"), (PP2_TYPE_AUTHORITY, b"a.test"), (PP2_TYPE_SSL, &ssl)],
    );
    assert_eq!(encoded, GOLDEN_TCP4_WITH_SSL);
}

#[test]
fn rejects_malformed_v2_headers() {
    // Wrong signature byte.
    let mut bad = GOLDEN_TCP6.to_vec();
    bad[7] = b'X';
    assert!(parse_v2(&bad).is_err());
    // Version nibble 1.
    let mut bad = GOLDEN_TCP6.to_vec();
    bad[12] = 0x11;
    assert!(parse_v2(&bad).is_err());
    // Command 2.
    let mut bad = GOLDEN_TCP6.to_vec();
    bad[12] = 0x22;
    assert!(parse_v2(&bad).is_err());
    // Truncated body.
    assert!(parse_v2(&GOLDEN_TCP6[..40]).is_err());
    // Body too short for the IPv6 addresses.
    let mut bad = GOLDEN_TCP6[..16 + 12].to_vec();
    bad[15] = 12;
    assert!(parse_v2(&bad).is_err());
    // A TLV whose length runs past the body.
    let mut bad = GOLDEN_TCP4_WITH_SSL.to_vec();
    bad[16 + 12 + 2] = 0x40; // ALPN claims 64 bytes
    assert!(parse_v2(&bad).is_err());
    // Two trailing bytes that cannot hold a TLV header.
    let mut bad = GOLDEN_TCP6.to_vec();
    bad[15] = 0x26;
    bad.extend_from_slice(&[0x01, 0x00]);
    assert!(parse_v2(&bad).is_err());
    // Unknown family.
    let mut bad = GOLDEN_TCP6.to_vec();
    bad[13] = 0x41;
    assert!(parse_v2(&bad).is_err());
}

#[test]
fn rejects_malformed_ssl_tlv() {
    assert!(parse_ssl_tlv(&[0x01, 0, 0]).is_err());
    assert!(parse_ssl_tlv(&[0x01, 0, 0, 0, 1, 0x22, 0x00, 0x09, b'x']).is_err());
    let ok = parse_ssl_tlv(&[0x01, 0, 0, 0, 1]).unwrap();
    assert_eq!((ok.client, ok.verify, ok.sub.len()), (1, 1, 0));
}

#[test]
fn decodes_v1_lines() {
    let v4 = parse_v1(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n").unwrap();
    assert_eq!(v4.protocol, "TCP4");
    assert_eq!(v4.src, Some("192.168.0.1:56324".parse().unwrap()));
    assert_eq!(v4.dst, Some("192.168.0.11:443".parse().unwrap()));

    let v6 = parse_v1(b"PROXY TCP6 ::1 2001:db8::2 1234 8883\r\n").unwrap();
    assert_eq!(v6.protocol, "TCP6");
    assert_eq!(v6.src, Some("[::1]:1234".parse().unwrap()));
    assert_eq!(v6.dst, Some("[2001:db8::2]:8883".parse().unwrap()));

    let unknown = parse_v1(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(unknown.protocol, "UNKNOWN");
    assert_eq!(unknown.src, None);
}

#[test]
fn rejects_malformed_v1_lines() {
    for bad in [
        &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n"[..], // no CR
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",        // missing port
        b"PROXY TCP4 ::1 ::1 1 2\r\n",                           // v6 address in TCP4
        b"PROXY TCP6 127.0.0.1 127.0.0.1 1 2\r\n",               // v4 address in TCP6
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n",               // port out of range
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",                  // leading zero
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 1\r\n",                  // double space
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",                   // unknown protocol
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 1\r\n",                   // lowercase
    ] {
        assert!(parse_v1(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
    }
    let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
    assert!(parse_v1(too_long.as_bytes()).is_err());
}

#[tokio::test]
async fn stream_readers_consume_exactly_the_header() {
    let mut input = GOLDEN_TCP4_WITH_SSL.to_vec();
    input.extend_from_slice(b"payload");
    let mut reader = &input[..];
    let header = read_v2(&mut reader).await.unwrap();
    assert_eq!(header.authority().as_deref(), Some("a.test"));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"payload");

    let input = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\nhello".to_vec();
    let mut reader = &input[..];
    let header = read_v1(&mut reader).await.unwrap();
    assert_eq!(header.src, Some("10.0.0.1:1000".parse().unwrap()));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"hello");

    // v1 bytes are not a v2 header.
    let mut reader = &b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n"[..];
    assert!(read_v2(&mut reader).await.is_err());
}

#[tokio::test]
async fn hello_tools_build_parse_and_capture_records() {
    let hello = raw_client_hello(Some(b"A.Test."), &[b"mqtt"]);
    let records = parse_records(&hello).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, 0x16);
    let payload = &records[0].2;
    assert_eq!(payload[0], 0x01, "ClientHello");
    let declared = u32::from_be_bytes([0, payload[1], payload[2], payload[3]]) as usize;
    assert_eq!(declared + 4, payload.len());
    let needle = b"A.Test.";
    assert!(hello.windows(needle.len()).any(|w| w == needle));

    let two = reframe_into_two_records(&hello, 10);
    let split = parse_records(&two).unwrap();
    assert_eq!(split.len(), 2);
    assert_eq!(split[0].2.len(), 10);
    assert_eq!([split[0].2.clone(), split[1].2.clone()].concat(), *payload);
    assert_eq!(two, wrap_records(payload, &[10, payload.len() - 10], [0x03, 0x01]));

    let mut input = two.clone();
    input.extend_from_slice(b"after");
    let mut reader = &input[..];
    let captured = crate::support::hello::read_hello_records(&mut reader, 1 << 16).await.unwrap();
    assert_eq!(captured, two);
    assert_eq!(reader, b"after");
}
