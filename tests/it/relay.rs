//! Relaying: half-close in both directions on tcp and terminate routes, bulk data both ways, and
//! the idle timeout.

use std::time::{Duration, Instant};

use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

struct Terminate {
    _pki: Pki,
    ca: Ca,
    server: Leaf,
}

fn terminate_pki() -> Terminate {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Relay CA");
    let server = ca.server_cert("server", &["relay.test"]);
    Terminate { _pki: pki, ca, server }
}

async fn tcp_setup(behaviour: Behaviour) -> (TestBackend, RunningProxy) {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).behaviour(behaviour)).await;
    let proxy = start_proxy(&config_v4("plain", &[RouteYaml::new("plain", "tcp").server(backend.addr)])).await;
    (backend, proxy)
}

async fn terminate_setup(t: &Terminate, behaviour: Behaviour) -> (TestBackend, RunningProxy) {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).behaviour(behaviour)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[RouteYaml::new("relay", "terminate").sni(&["relay.test"]).cert(&t.server).server(backend.addr)],
    ))
    .await;
    (backend, proxy)
}

/// Client writes, half-closes; the backend must see EOF (it sends its trailer only then) and
/// the client must still receive the echo and the trailer afterwards.
async fn client_half_close<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S, backend: &mut TestBackend) {
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.expect("client shutdown(write)");
    let closed = read_until_closed(client).await;
    assert_eq!(closed, Closed::Eof(b"ping<backend saw EOF>".to_vec()));
    let finished = backend.finished().await;
    assert_eq!(finished.error, None);
    assert_eq!(finished.received, b"ping");
}

/// Backend greets and half-closes; the client must see the greeting then EOF, and can still
/// send, which the backend must receive.
async fn backend_half_close<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S, backend: &mut TestBackend) {
    let mut greeting = vec![0u8; 8];
    within("greeting", client.read_exact(&mut greeting)).await.expect("greeting");
    assert_eq!(greeting, b"greeting");
    let mut one = [0u8; 1];
    let eof = within("EOF after the backend's half-close", client.read(&mut one)).await;
    assert!(matches!(eof, Ok(0)), "client must see a clean EOF, got {eof:?}");
    client.write_all(b"late reply").await.expect("client can still write after EOF");
    client.flush().await.unwrap();
    client.shutdown().await.unwrap();
    let finished = backend.finished().await;
    assert_eq!(finished.error, None);
    assert_eq!(finished.received, b"late reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_client_to_backend_tcp() {
    let (mut backend, proxy) = tcp_setup(Behaviour::EchoThenTrailer(b"<backend saw EOF>".to_vec())).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client_half_close(&mut tcp, &mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_backend_to_client_tcp() {
    let (mut backend, proxy) = tcp_setup(Behaviour::GreetAndShutdown(b"greeting".to_vec())).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    // tcp mode: the proxy cannot tell the route from the first bytes unless the client speaks
    // first, so send one byte the backend will count as received.
    backend_half_close_after_prefix(&mut tcp, &mut backend).await;
}

/// Like [`backend_half_close`] but the client speaks first (a plain TCP client on a `default`
/// tcp route has to send something before the proxy can route it).
async fn backend_half_close_after_prefix(tcp: &mut TcpStream, backend: &mut TestBackend) {
    tcp.write_all(b"!").await.unwrap();
    let mut greeting = vec![0u8; 8];
    within("greeting", tcp.read_exact(&mut greeting)).await.expect("greeting");
    assert_eq!(greeting, b"greeting");
    let mut one = [0u8; 1];
    let eof = within("EOF after the backend's half-close", tcp.read(&mut one)).await;
    assert!(matches!(eof, Ok(0)), "client must see a clean EOF, got {eof:?}");
    tcp.write_all(b"late reply").await.expect("client can still write after EOF");
    tcp.shutdown().await.unwrap();
    let finished = backend.finished().await;
    assert_eq!(finished.error, None);
    assert_eq!(finished.received, b"!late reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_client_to_backend_terminate() {
    let t = terminate_pki();
    let (mut backend, proxy) = terminate_setup(&t, Behaviour::EchoThenTrailer(b"<backend saw EOF>".to_vec())).await;
    let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, None), "relay.test").await.unwrap();
    // tokio-rustls shutdown() sends close_notify and FINs the socket: the proxy must pass it on
    // as EOF and keep relaying the backend's answer.
    client_half_close(&mut tls, &mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_backend_to_client_terminate() {
    let t = terminate_pki();
    let (mut backend, proxy) = terminate_setup(&t, Behaviour::GreetAndShutdown(b"greeting".to_vec())).await;
    let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, None), "relay.test").await.unwrap();
    backend_half_close(&mut tls, &mut backend).await;
}

async fn bulk_both_ways<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(client: S, backend: &mut TestBackend) {
    const SIZE: usize = 1 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let expected = data.clone();
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut echoed = Vec::with_capacity(SIZE);
    within("1 MiB echo", reader.read_to_end(&mut echoed)).await.expect("read echo");
    write.await.unwrap();
    assert_eq!(echoed.len(), SIZE);
    assert!(echoed == expected, "echoed bytes differ");
    let finished = backend.finished().await;
    assert_eq!(finished.received.len(), SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_moves_a_mebibyte_both_ways_tcp() {
    let (mut backend, proxy) = tcp_setup(Behaviour::Echo).await;
    let tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    bulk_both_ways(tcp, &mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_moves_a_mebibyte_both_ways_terminate() {
    let t = terminate_pki();
    let (mut backend, proxy) = terminate_setup(&t, Behaviour::Echo).await;
    let (tls, _) = tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, None), "relay.test").await.unwrap();
    bulk_both_ways(tls, &mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_after_idle_timeout() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let limits = "limits: { hello_timeout: 3s, idle_timeout: 1s, drain_timeout: 1s }";
    let proxy = start_proxy(&config_with_limits(
        &["127.0.0.1:0"],
        "plain",
        limits,
        &[RouteYaml::new("plain", "tcp").server(backend.addr)],
    ))
    .await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"hi").await.unwrap();
    assert_eq!(read_n(&mut tcp, 2).await, b"hi");
    let start = Instant::now();
    let closed = within_for(Duration::from_secs(5), "idle close", read_until_closed(&mut tcp)).await;
    let elapsed = start.elapsed();
    println!("idle close after {elapsed:?}: {closed:?}");
    assert!(closed.bytes().is_empty());
    assert!(elapsed >= Duration::from_millis(500), "closed after {elapsed:?}, before idle_timeout");
}
