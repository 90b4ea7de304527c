//! Server lifecycle: binding every listen address, and `run` returning after cancellation
//! (live connections drained or closed within drain_timeout).

use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_after_cancel_and_closes_live_connections() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    // Connections still open after drain_timeout are closed spread over close_jitter.
    let limits = "limits: { hello_timeout: 3s, idle_timeout: 1m, drain_timeout: 1s, close_jitter: 200ms }";
    let proxy = start_proxy(&config_with_limits(
        &["127.0.0.1:0"],
        "plain",
        limits,
        &[RouteYaml::new("plain", "tcp").server(backend.addr)],
    ))
    .await;
    let addr = proxy.addr(0);
    let mut live = TcpStream::connect(addr).await.unwrap();
    live.write_all(b"live").await.unwrap();
    assert_eq!(read_n(&mut live, 4).await, b"live");

    // run() must return after drain_timeout + close_jitter, closing the idle connection.
    proxy.shutdown().await;
    let closed =
        within_for(Duration::from_secs(5), "live connection closed by the drain", read_until_closed(&mut live)).await;
    println!("live connection after shutdown: {closed:?}");
    assert!(closed.bytes().is_empty());
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed after run() returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_reports_every_listen_address_in_order() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let fixed = closed_port().await;
    let listen = fixed.to_string();
    let proxy = start_proxy(&config_yaml(
        &["127.0.0.1:0", &listen, "127.0.0.1:0"],
        "plain",
        &[RouteYaml::new("plain", "tcp").server(backend.addr)],
    ))
    .await;
    assert_eq!(proxy.addr(1), fixed, "a fixed port is reported as configured, in listen order");
    assert_ne!(proxy.addr(0).port(), 0);
    assert_ne!(proxy.addr(2).port(), 0);
    for i in 0..3 {
        let mut tcp = TcpStream::connect(proxy.addr(i)).await.unwrap();
        tcp.write_all(b"k").await.unwrap();
        assert_eq!(read_n(&mut tcp, 1).await, b"k");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_fails_on_an_address_in_use() {
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let result =
        try_start_proxy(&config_yaml(&[&taken], "plain", &[RouteYaml::new("plain", "tcp").server("127.0.0.1:1")]))
            .await;
    assert!(result.is_err(), "binding a port that is in use must fail");
    println!("{}", result.err().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_port_lets_two_instances_share_a_port_and_is_off_by_default() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let port = closed_port().await.port();
    let listen = format!("127.0.0.1:{port}");
    let route = || RouteYaml::new("plain", "tcp").server(backend.addr).proxy("none");
    let shared = |reuse: bool| format!("reuse_port: {reuse}\n{}", config_yaml(&[&listen], "plain", &[route()]));

    let first = start_proxy(&shared(true)).await;
    let second = start_proxy(&shared(true)).await;
    assert_eq!((first.addr(0), second.addr(0)), (listen.parse().unwrap(), listen.parse().unwrap()));
    let third = try_start_proxy(&shared(false)).await;
    assert!(third.is_err(), "without reuse_port a taken port is an error");

    // With one instance gone, every new connection reaches the other.
    first.shutdown().await;
    for i in b'a'..=b't' {
        let mut client = TcpStream::connect(&listen).await.unwrap();
        client.write_all(&[i]).await.unwrap();
        let mut echoed = [0u8; 1];
        let read = within("echo through the remaining instance", client.read_exact(&mut echoed)).await;
        assert!(read.is_ok() && echoed == [i], "connection {i}: {read:?}");
    }
    second.shutdown().await;
}
