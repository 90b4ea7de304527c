//! Backend pools: failover to the next server on connect error, round-robin start, and a clean
//! close of the client when every server is down.

use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_backend_down_second_is_used() {
    let dead = closed_port().await;
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy =
        start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").server(dead).server(backend.addr)])).await;
    // Several connections, so whichever server round-robin starts at, the dead one is tried.
    for i in 0..4u8 {
        let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(&[b'a' + i]).await.unwrap();
        assert_eq!(read_n(&mut tcp, 1).await, [b'a' + i], "connection {i}");
        assert_eq!(backend.accepted().await.v2().src, Some(local));
    }
    assert_eq!(backend.accept_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_backend_down_second_is_used_on_terminate_route() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("server", &["a.test"]);
    let dead = closed_port().await;
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).server(dead).server(backend.addr)],
    ))
    .await;
    for _ in 0..2 {
        let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await.unwrap();
        tls.write_all(b"ok").await.unwrap();
        assert_eq!(read_n(&mut tls, 2).await, b"ok");
        assert_eq!(backend.accepted().await.v2().authority().as_deref(), Some("a.test"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_connections_over_live_servers() {
    let mut one = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let mut two = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy =
        start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").server(one.addr).server(two.addr)])).await;
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
        tcp.write_all(b"rr").await.unwrap();
        read_n(&mut tcp, 2).await;
    }
    let (a, b) = (one.accept_count(), two.accept_count());
    assert_eq!(a + b, 4);
    assert!(a >= 1 && b >= 1, "round-robin start should use both servers, got {a} and {b}");
    for _ in 0..a {
        one.accepted().await.v2();
    }
    for _ in 0..b {
        two.accepted().await.v2();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_closes_client() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("server", &["a.test"]);
    let (dead1, dead2) = (closed_port().await, closed_port().await);
    let proxy = start_proxy(&config_v4(
        "reject",
        &[RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).server(dead1).server(dead2)],
    ))
    .await;
    match tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await {
        Err(error) => println!("handshake failed: {error}"),
        Ok((mut tls, _)) => {
            let _ = tls.write_all(b"anyone there?").await;
            let mut buf = Vec::new();
            let result = within("the proxy to close the client", tls.read_to_end(&mut buf)).await;
            println!("client saw {result:?} after {} bytes", buf.len());
            assert!(buf.is_empty(), "no data may arrive from a dead pool: {buf:?}");
        }
    }
    // The proxy is still serving.
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"not tls").await.unwrap();
    read_until_closed(&mut tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_closes_client_tcp() {
    let dead = closed_port().await;
    let proxy = start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").server(dead)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"hello?").await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert!(closed.bytes().is_empty(), "{closed:?}");
}
