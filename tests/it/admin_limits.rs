//! The admin endpoint is bounded: a half-sent or idle admin connection is closed after the header
//! timeout, and no more than `ADMIN_MAX_CONNECTIONS` are served at once — extra admin clients wait
//! and are served once slots free, and the proxy's own listener is untouched by all of it.

use std::time::Duration;

use crate::support::ops::*;
use crate::support::*;
use snigate::admin::{ADMIN_HEADER_TIMEOUT, ADMIN_MAX_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for "the server closed it": the header timeout plus scheduling slack.
const CLOSE_BOUND: Duration = Duration::from_secs(20);

async fn admin_proxy() -> (RunningProxy, TestBackend) {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let routes = [RouteYaml::new("plain", "tcp").proxy("none").server(backend.addr)];
    let yaml = format!("admin: \"127.0.0.1:0\"\n{}", config_v4("plain", &routes));
    (start_proxy(&yaml).await, backend)
}

/// Reads until EOF or error; returns what arrived.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_admin_request_is_closed_after_the_header_timeout() {
    let (proxy, _backend) = admin_proxy().await;
    let admin = proxy.admin.unwrap();
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let got = within_for(CLOSE_BOUND, "the half-sent admin request to be closed", read_to_close(&mut tcp)).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "no answer to a half-sent request: {got:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connection_is_closed_after_the_header_timeout() {
    let (proxy, _backend) = admin_proxy().await;
    let admin = proxy.admin.unwrap();
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    // One request on a keep-alive connection, then silence: the wait for the next request head
    // is bounded by the same timeout.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got =
        within_for(CLOSE_BOUND, "the idle keep-alive admin connection to be closed", read_to_close(&mut tcp)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "the request was answered first: {text:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_beyond_the_cap_wait_and_the_proxy_keeps_serving() {
    let (proxy, _backend) = admin_proxy().await;
    let admin = proxy.admin.unwrap();
    let mut idle = Vec::new();
    for _ in 0..ADMIN_MAX_CONNECTIONS {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    // Give the admin task time to accept all of them (well below the header timeout).
    tokio::time::sleep(ADMIN_HEADER_TIMEOUT / 5).await;
    let mut extra = TcpStream::connect(admin).await.unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(ADMIN_HEADER_TIMEOUT / 5, extra.read(&mut first)).await;
    assert!(early.is_err(), "the connection over the cap is not served while every slot is held: {early:?}");

    // Meanwhile the proxy listener answers as usual.
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_n(&mut client, 5).await, b"ping\n");

    // The idle ones time out, and the waiting client is then served.
    let rest = within_for(CLOSE_BOUND, "the waiting admin client to be served", read_to_close(&mut extra)).await;
    let response = parse_http(&rest).expect("an HTTP answer once slots freed");
    assert_eq!(response.status, 200);
    for mut tcp in idle {
        within_for(CLOSE_BOUND, "an idle admin connection to be closed", read_to_close(&mut tcp)).await;
    }
    let metrics = http_get(admin, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    proxy.shutdown().await;
}
