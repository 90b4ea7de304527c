//! Server lifecycle: binding every listen address, and `run` returning after cancellation
//! (live connections drained or closed within drain_timeout).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
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
