//! The PROXY header on the backend side: v1 text form, v2 over IPv6, no header with
//! `proxy_protocol: none`, and dst = the listener the client actually used.

use crate::support::proxy::*;
use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_header_is_sent() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V1)).await;
    let proxy =
        start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").proxy("v1").server(backend.addr)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"after the header").await.unwrap();
    assert_eq!(read_n(&mut tcp, 16).await, b"after the header");
    let accepted = backend.accepted().await;
    let header = accepted.v1();
    let expected = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n", local.port(), proxy.addr(0).port());
    assert_eq!(header.line, expected);
    assert_eq!(header.src, Some(local));
    assert_eq!(header.dst, Some(proxy.addr(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_header_is_sent_on_terminate_route() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("server", &["a.test"]);
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V1)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).proxy("v1").server(backend.addr)],
    ))
    .await;
    let (mut tls, local) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await.unwrap();
    tls.write_all(b"v1 plaintext").await.unwrap();
    assert_eq!(read_n(&mut tls, 12).await, b"v1 plaintext");
    let accepted = backend.accepted().await;
    assert_eq!(accepted.v1().src, Some(local));
    assert_eq!(accepted.v1().dst, Some(proxy.addr(0)));
    assert_eq!(accepted.v1().protocol, "TCP4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_none_sends_no_header() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let proxy =
        start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").proxy("none").server(backend.addr)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"raw bytes").await.unwrap();
    // The echo comes back unchanged: had a header been sent, it would be echoed first.
    assert_eq!(read_n(&mut tcp, 9).await, b"raw bytes");
    tcp.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut tcp).await, Closed::Eof(Vec::new()));
    let finished = backend.finished().await;
    assert_eq!(finished.received, b"raw bytes");
    assert!(backend.accepted().await.header.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_header_dst_is_the_listener_the_client_used() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_yaml(
        &["127.0.0.1:0", "127.0.0.1:0"],
        "plain",
        &[RouteYaml::new("plain", "tcp").server(backend.addr)],
    ))
    .await;
    assert_ne!(proxy.addr(0), proxy.addr(1));
    for i in [1, 0] {
        let mut tcp = TcpStream::connect(proxy.addr(i)).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(b"x").await.unwrap();
        read_n(&mut tcp, 1).await;
        let accepted = backend.accepted().await;
        assert_eq!(accepted.v2().src, Some(local));
        assert_eq!(accepted.v2().dst, Some(proxy.addr(i)), "listener {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_over_ipv6() {
    if !ipv6_available().await {
        println!("SKIPPED: IPv6 loopback [::1] is not available on this machine");
        return;
    }
    let mut backend = TestBackend::start_on("[::1]:0", BackendOpts::plain(ProxyExpect::V2)).await.unwrap();
    let proxy =
        start_proxy(&config_yaml(&["[::1]:0"], "plain", &[RouteYaml::new("plain", "tcp").server(backend.addr)])).await;
    assert!(proxy.addr(0).is_ipv6());
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"six").await.unwrap();
    assert_eq!(read_n(&mut tcp, 3).await, b"six");
    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.family, FAM_TCP6);
    assert_eq!(header.src, Some(local));
    assert_eq!(header.dst, Some(proxy.addr(0)));
    assert_eq!(header.total_len, 16 + 36, "tcp mode: addresses only, no TLVs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_over_ipv6_uses_tcp6() {
    if !ipv6_available().await {
        println!("SKIPPED: IPv6 loopback [::1] is not available on this machine");
        return;
    }
    let mut backend = TestBackend::start_on("[::1]:0", BackendOpts::plain(ProxyExpect::V1)).await.unwrap();
    let proxy = start_proxy(&config_yaml(
        &["[::1]:0"],
        "plain",
        &[RouteYaml::new("plain", "tcp").proxy("v1").server(backend.addr)],
    ))
    .await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"6").await.unwrap();
    read_n(&mut tcp, 1).await;
    let accepted = backend.accepted().await;
    let header = accepted.v1();
    assert_eq!(header.protocol, "TCP6");
    assert_eq!(header.line, format!("PROXY TCP6 ::1 ::1 {} {}\r\n", local.port(), proxy.addr(0).port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_client_to_ipv6_backend_still_gets_tcp4_header() {
    // The header describes the client's connection, not the backend connection.
    if !ipv6_available().await {
        println!("SKIPPED: IPv6 loopback [::1] is not available on this machine");
        return;
    }
    let mut backend = TestBackend::start_on("[::1]:0", BackendOpts::plain(ProxyExpect::V2)).await.unwrap();
    let proxy = start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").server(backend.addr)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"4").await.unwrap();
    read_n(&mut tcp, 1).await;
    let accepted = backend.accepted().await;
    assert_eq!(accepted.v2().family, FAM_TCP4);
    assert_eq!(accepted.v2().src, Some(local));
}
