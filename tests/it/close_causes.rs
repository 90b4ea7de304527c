//! Ordinary closes are counted and logged as clean closes, per mode: a TLS client that closes TCP
//! without close_notify (after its last message, or after an MQTT DISCONNECT), a backend that
//! closes first, and a client that left before the proxy shut its side down (ENOTCONN).

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::hello::raw_client_hello;
use crate::support::ops::*;
use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// MQTT DISCONNECT (packet type 14, no payload).
const MQTT_DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// Waits until `count` closes of `route` are counted, then returns them by cause.
async fn closes(proxy: &RunningProxy, route: &str, count: f64) -> Vec<(String, f64)> {
    let by_cause = || {
        parse_exposition(&proxy.metrics.encode())
            .into_iter()
            .filter(|s| s.name == "snigate_connection_closes_total")
            .filter(|s| s.labels.iter().any(|(k, v)| k == "route" && v == route))
            .map(|s| {
                (s.labels.iter().find(|(k, _)| k == "reason").map(|(_, v)| v.clone()).unwrap_or_default(), s.value)
            })
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "the connection's close to be counted", || async {
        let total: f64 = by_cause().iter().map(|(_, n)| n).sum();
        if total >= count {
            Ok(())
        } else {
            Err(format!("{total} closes counted: {:?}", by_cause()))
        }
    })
    .await;
    by_cause()
}

async fn assert_clean(proxy: &RunningProxy, route: &str) {
    assert_eq!(closes(proxy, route, 1.0).await, [("closed".to_string(), 1.0)]);
}

/// A backend that reads to EOF, answers late (the client has gone: its kernel resets), then
/// waits before closing, so the proxy's shutdown of the client side meets a reset socket.
async fn late_answer_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        let mut request = Vec::new();
        let _ = within("the client's EOF at the backend", tcp.read_to_end(&mut request)).await;
        let _ = tcp.write_all(b"late answer").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    addr
}

struct Terminate {
    proxy: RunningProxy,
    client: std::sync::Arc<rustls::ClientConfig>,
    _pki: Pki,
}

async fn terminate_route(backend: BackendOpts) -> (Terminate, TestBackend) {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("server", &["t.test"]);
    let backend = TestBackend::start(backend).await;
    let route = RouteYaml::new("t", "terminate").sni(&["t.test"]).cert(&leaf).server(backend.addr);
    let proxy = start_proxy(&config_v4("reject", &[route])).await;
    (Terminate { proxy, client: simple_client(&ca.cert_der, None), _pki: pki }, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_client_closing_tcp_without_close_notify_is_a_clean_close() {
    let (t, mut backend) = terminate_route(BackendOpts::plain(ProxyExpect::V2)).await;
    let (mut tls, _) = tls_connect(t.proxy.addr(0), t.client.clone(), "t.test").await.unwrap();
    echo(&mut tls, b"last message").await.unwrap();
    drop(tls.into_inner().0);
    assert_eq!(backend.finished().await.error, None, "the backend sees an orderly EOF");
    assert_clean(&t.proxy, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_mqtt_disconnect_then_fin_is_a_clean_close() {
    let (t, mut backend) = terminate_route(BackendOpts::plain(ProxyExpect::V2)).await;
    let (mut tls, _) = tls_connect(t.proxy.addr(0), t.client.clone(), "t.test").await.unwrap();
    echo(&mut tls, &MQTT_DISCONNECT).await.unwrap();
    drop(tls.into_inner().0);
    assert_eq!(backend.finished().await.received, MQTT_DISCONNECT);
    assert_clean(&t.proxy, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_backend_closing_first_is_a_clean_close() {
    let greeting = BackendOpts::plain(ProxyExpect::V2).behaviour(Behaviour::GreetAndShutdown(b"bye".to_vec()));
    let (t, _backend) = terminate_route(greeting).await;
    let (mut tls, _) = tls_connect(t.proxy.addr(0), t.client.clone(), "t.test").await.unwrap();
    let mut got = Vec::new();
    within("the backend's close to reach the client", tls.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"bye");
    // Like most clients, it answers the proxy's close_notify by closing TCP without one.
    drop(tls.into_inner().0);
    assert_clean(&t.proxy, "t").await;
}

/// The first bytes a client of `mode` sends (a hello for passthrough, anything for tcp).
fn first_bytes(mode: &str) -> Vec<u8> {
    match mode {
        "passthrough" => raw_client_hello(Some(b"p.test"), &[]),
        _ => b"plain request".to_vec(),
    }
}

async fn forward_route(mode: &str, server: SocketAddr, proxy_protocol: &str) -> RunningProxy {
    let route = RouteYaml::new(mode, mode).sni(&["p.test"]).server(server).proxy(proxy_protocol);
    let default = if mode == "tcp" { "tcp" } else { "reject" };
    start_proxy(&config_v4(default, &[route])).await
}

async fn peer_gone_before_shutdown_is_clean(mode: &str) {
    let proxy = forward_route(mode, late_answer_backend().await, "none").await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&first_bytes(mode)).await.unwrap();
    drop(tcp);
    assert_clean(&proxy, mode).await;
}

async fn backend_closing_first_is_clean(mode: &str) {
    let greeting = BackendOpts::plain(ProxyExpect::V2).behaviour(Behaviour::GreetAndShutdown(b"bye".to_vec()));
    let backend = TestBackend::start(greeting).await;
    let proxy = forward_route(mode, backend.addr, "v2").await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&first_bytes(mode)).await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert_eq!(closed.bytes(), b"bye");
    drop(tcp);
    assert_clean(&proxy, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_client_gone_before_the_proxy_shuts_its_side_is_a_clean_close() {
    peer_gone_before_shutdown_is_clean("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_client_gone_before_the_proxy_shuts_its_side_is_a_clean_close() {
    peer_gone_before_shutdown_is_clean("passthrough").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_backend_closing_first_is_a_clean_close() {
    backend_closing_first_is_clean("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_backend_closing_first_is_a_clean_close() {
    backend_closing_first_is_clean("passthrough").await;
}
