//! Inbound PROXY headers (`accept_proxy_from`): required and used from listed peers — also in
//! pieces — and refused from everyone else; received TLVs never reach the backend.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::hello::{raw_client_hello, send_byte_by_byte};
use crate::support::proxy::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn passthrough(backend: &TestBackend) -> RouteYaml {
    RouteYaml::new("pass", "passthrough").sni(&["a.test"]).server(backend.addr)
}

fn tcp_route(backend: &TestBackend) -> RouteYaml {
    RouteYaml::new("plain", "tcp").server(backend.addr)
}

fn trusted_config(trusted: &str, default: &str, limits: &str, routes: &[RouteYaml]) -> String {
    let base = config_with_limits(&["127.0.0.1:0"], default, limits, routes);
    format!("accept_proxy_from: [{}]\n{base}", q(trusted))
}

/// A v2 PROXY header for TCP4 `source` -> `destination` with the given TLVs.
fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else { panic!("IPv4 only") };
    let mut addresses = Vec::new();
    addresses.extend_from_slice(&s.ip().octets());
    addresses.extend_from_slice(&d.ip().octets());
    addresses.extend_from_slice(&s.port().to_be_bytes());
    addresses.extend_from_slice(&d.port().to_be_bytes());
    encode_v2_for_tests(CMD_PROXY, FAM_TCP4, &addresses, tlvs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_v2_header_in_pieces_sets_the_client_address_and_its_tlvs_are_dropped() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).capture_hello()).await;
    let proxy = start_proxy(&trusted_config("127.0.0.1/32", "reject", TEST_LIMITS, &[passthrough(&backend)])).await;
    let original: SocketAddr = "203.0.113.9:4242".parse().unwrap();
    let forged_tlvs: &[(u8, &[u8])] = &[(PP2_TYPE_AUTHORITY, b"evil.test"), (PP2_TYPE_UNIQUE_ID, b"lb-id-1")];
    let mut bytes = v2_header(original, "198.51.100.1:443".parse().unwrap(), forged_tlvs);
    let hello = raw_client_hello(Some(b"a.test"), &[]);
    bytes.extend_from_slice(&hello);

    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.set_nodelay(true).unwrap();
    // Header and hello in 7-byte segments: the header parser has to reassemble too.
    for chunk in bytes.chunks(7) {
        client.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.src, Some(original), "the outbound header carries the address the load balancer named");
    assert_eq!(header.authority().as_deref(), Some("a.test"), "AUTHORITY is the SNI, not the received TLV");
    assert_eq!(header.tlv_count(PP2_TYPE_UNIQUE_ID), 0, "received TLVs are not forwarded");
    assert_eq!(accepted.hello(), &hello[..], "the hello after the inbound header is replayed byte-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_v1_header_sets_the_client_address() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V1)).await;
    let route = tcp_route(&backend).proxy("v1");
    let proxy = start_proxy(&trusted_config("127.0.0.0/8", "plain", TEST_LIMITS, &[route])).await;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    send_byte_by_byte(&mut client, b"PROXY TCP4 192.0.2.77 192.0.2.1 51000 1883\r\n").await;
    client.write_all(b"MQTT-ish bytes").await.unwrap();
    assert_eq!(read_n(&mut client, 14).await, b"MQTT-ish bytes");
    let accepted = backend.accepted().await;
    let header = accepted.v1();
    assert_eq!(header.src, Some("192.0.2.77:51000".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_without_a_header_is_refused() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&trusted_config("127.0.0.1/32", "reject", TEST_LIMITS, &[passthrough(&backend)])).await;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&raw_client_hello(Some(b"a.test"), &[])).await.unwrap();
    let closed = read_until_closed(&mut client).await;
    assert!(closed.bytes().is_empty(), "{closed:?}");
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_from_an_untrusted_peer_is_refused_even_with_a_tcp_default() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&trusted_config("10.0.0.0/8", "plain", TEST_LIMITS, &[tcp_route(&backend)])).await;

    let mut v1 = TcpStream::connect(proxy.addr(0)).await.unwrap();
    v1.write_all(b"PROXY TCP4 192.0.2.77 192.0.2.1 51000 1883\r\nhello").await.unwrap();
    assert!(read_until_closed(&mut v1).await.bytes().is_empty());

    let mut v2 = TcpStream::connect(proxy.addr(0)).await.unwrap();
    v2.write_all(&v2_header("192.0.2.77:1".parse().unwrap(), "192.0.2.1:2".parse().unwrap(), &[])).await.unwrap();
    assert!(read_until_closed(&mut v2).await.bytes().is_empty());

    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_counts_the_address_from_the_trusted_header() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let limits = "limits: { hello_timeout: 3s, max_connections_per_ip: 1 }";
    let proxy = start_proxy(&trusted_config("127.0.0.1/32", "plain", limits, &[tcp_route(&backend)])).await;
    let destination: SocketAddr = "192.0.2.1:1883".parse().unwrap();

    let mut first = TcpStream::connect(proxy.addr(0)).await.unwrap();
    first.write_all(&v2_header("203.0.113.1:1000".parse().unwrap(), destination, &[])).await.unwrap();
    first.write_all(b"one").await.unwrap();
    assert_eq!(read_n(&mut first, 3).await, b"one");

    // Same load balancer, another original client: its own budget.
    let mut other = TcpStream::connect(proxy.addr(0)).await.unwrap();
    other.write_all(&v2_header("203.0.113.2:1000".parse().unwrap(), destination, &[])).await.unwrap();
    other.write_all(b"two").await.unwrap();
    assert_eq!(read_n(&mut other, 3).await, b"two");

    // The first client again, on a second connection: over its cap of 1.
    let mut again = TcpStream::connect(proxy.addr(0)).await.unwrap();
    again.write_all(&v2_header("203.0.113.1:1001".parse().unwrap(), destination, &[])).await.unwrap();
    let _ = again.write_all(b"three").await;
    assert!(read_until_closed(&mut again).await.bytes().is_empty());
    assert_eq!(backend.accept_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_header_from_a_trusted_peer_is_refused() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&trusted_config("127.0.0.1/32", "plain", TEST_LIMITS, &[tcp_route(&backend)])).await;
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n").await.unwrap();
    assert!(read_until_closed(&mut client).await.bytes().is_empty());
    backend.assert_untouched(Duration::from_millis(200)).await;
}
