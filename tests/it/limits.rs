//! Resource limits under hostile clients: connection caps (total, per source address, TLS
//! handshakes), the handshake timeout, accept-error back-off, and a flood during which
//! established sessions keep working. Each test fails if its protection is removed. (The hello
//! deadline and the idle timeout are pinned in hello_limits.rs and relay.rs.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::hello::raw_client_hello;
use crate::support::tls::{expect_refused, simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn tcp_route(backend: &TestBackend) -> RouteYaml {
    RouteYaml::new("plain", "tcp").server(backend.addr).proxy("none")
}

fn limits(extra: &str) -> String {
    format!(
        "limits: {{ hello_timeout: 3s, max_hello_bytes: 16384, idle_timeout: 1m, handshake_timeout: 3s, drain_timeout: 1s, {extra} }}"
    )
}

/// A plain TCP client from a chosen loopback source address.
async fn connect_from(source: &str, proxy: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(proxy).await
}

/// Sends `text` and expects it echoed: the connection is established end to end.
async fn echo(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    assert_eq!(read_n(stream, text.len()).await, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_max_connections_are_not_served_until_a_slot_frees() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let yaml = config_with_limits(&["127.0.0.1:0"], "plain", &limits("max_connections: 2"), &[tcp_route(&backend)]);
    let proxy = start_proxy(&yaml).await;

    let mut first = TcpStream::connect(proxy.addr(0)).await.unwrap();
    echo(&mut first, b"one").await;
    let mut second = TcpStream::connect(proxy.addr(0)).await.unwrap();
    echo(&mut second, b"two").await;

    // The kernel completes the third TCP handshake (backlog), but snigate does not accept it.
    let mut third = TcpStream::connect(proxy.addr(0)).await.unwrap();
    third.write_all(b"three").await.unwrap();
    let mut buf = [0u8; 5];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(early.is_err(), "the third connection was served above max_connections: {early:?}");
    assert_eq!(backend.accept_count(), 2, "no backend work for a connection above the cap");

    drop(first);
    assert_eq!(read_n(&mut third, 5).await, b"three", "served once a slot is free");
    assert_eq!(backend.accept_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_ip_cap_refuses_the_extra_connection_only_for_that_address() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let yaml =
        config_with_limits(&["0.0.0.0:0"], "plain", &limits("max_connections_per_ip: 2"), &[tcp_route(&backend)]);
    let proxy = start_proxy(&yaml).await;
    let target: SocketAddr = format!("127.0.0.1:{}", proxy.addr(0).port()).parse().unwrap();

    let mut a1 = connect_from("127.0.0.1", target).await.unwrap();
    echo(&mut a1, b"a1").await;
    let mut a2 = connect_from("127.0.0.1", target).await.unwrap();
    echo(&mut a2, b"a2").await;

    let mut a3 = connect_from("127.0.0.1", target).await.unwrap();
    let _ = a3.write_all(b"a3").await;
    let closed = read_until_closed(&mut a3).await;
    assert!(closed.bytes().is_empty(), "third connection from 127.0.0.1 got data: {closed:?}");
    assert_eq!(backend.accept_count(), 2, "the refused connection never reached a backend");

    let mut b1 = connect_from("127.0.0.2", target).await.unwrap();
    echo(&mut b1, b"b1").await;

    drop(a1);
    // The slot comes back once the proxy has seen the close; retry briefly (bounded).
    let mut served = false;
    for _ in 0..50 {
        let mut again = connect_from("127.0.0.1", target).await.unwrap();
        again.write_all(b"again").await.unwrap();
        let mut buf = [0u8; 5];
        if let Ok(Ok(5)) = tokio::time::timeout(WAIT, again.read_exact(&mut buf)).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a closed connection gives its per-address slot back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_closed_at_handshake_timeout() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("a", &["a.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).server(backend.addr);
    let yaml = config_with_limits(&["127.0.0.1:0"], "reject", "limits: { handshake_timeout: 1s }", &[route]);
    let proxy = start_proxy(&yaml).await;

    // A complete ClientHello, then silence: the server's flight arrives, the client never answers.
    let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
    client.write_all(&raw_client_hello(Some(b"a.test"), &[])).await.unwrap();
    let started = Instant::now();
    let closed = read_until_closed(&mut client).await;
    assert!(!closed.bytes().is_empty(), "the server answered the hello before timing out");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
    assert_eq!(backend.accept_count(), 0, "no backend for an unfinished handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_above_max_handshakes_wait_briefly_then_are_refused() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("a", &["a.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).server(backend.addr);
    let yaml = config_with_limits(
        &["127.0.0.1:0"],
        "reject",
        "limits: { max_handshakes: 1, handshake_timeout: 5s }",
        &[route],
    );
    let proxy = start_proxy(&yaml).await;

    // This one holds the only handshake slot: hello sent, never finished.
    let mut staller = TcpStream::connect(proxy.addr(0)).await.unwrap();
    staller.write_all(&raw_client_hello(Some(b"a.test"), &[])).await.unwrap();
    let mut server_flight = [0u8; 1];
    within("the server flight for the stalled handshake", staller.read_exact(&mut server_flight)).await.unwrap();

    let how = expect_refused(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await;
    assert!(!how.is_empty());
    assert_eq!(backend.accept_count(), 0);

    drop(staller);
    // With the slot free again (bounded retries while the proxy notices the close), it works.
    let mut ok = false;
    for _ in 0..20 {
        if tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "handshakes work again once the slot is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_handshakes_bounds_handshakes_in_progress_not_established_sessions() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let server = ca.server_cert("a", &["a.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let route = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&server).server(backend.addr).proxy("none");
    let yaml = config_with_limits(&["127.0.0.1:0"], "reject", &limits("max_handshakes: 1"), &[route]);
    let proxy = start_proxy(&yaml).await;

    // One handshake slot, three sessions one after the other: each finished handshake frees the slot.
    let mut sessions = Vec::new();
    for i in 0..3 {
        let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test")
            .await
            .unwrap_or_else(|error| panic!("session {i} with {i} sessions open: {error}"));
        tls.write_all(b"ping").await.unwrap();
        assert_eq!(within("echo", read_n(&mut tls, 4)).await, b"ping");
        sessions.push(tls);
    }
    for tls in &mut sessions {
        tls.write_all(b"again").await.unwrap();
        assert_eq!(within("echo", read_n(tls, 5)).await, b"again", "established sessions keep working");
    }
}

/// CPU seconds (user + system) the process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_from_a_full_fd_table_back_off_instead_of_spinning() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await.port();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        config_with_limits(
            &[&format!("127.0.0.1:{port}")],
            "plain",
            "limits: { hello_timeout: 30s }",
            &[tcp_route(&backend)],
        ),
    )
    .unwrap();
    // 40 descriptors: the runtime, the listener and a few connections use them all.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -n 40 && exec {} run --config {}", env!("CARGO_BIN_EXE_snigate"), config.display()))
        .env("RUST_LOG", "error")
        .spawn()
        .expect("start snigate");
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if TcpStream::connect(proxy).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "snigate did not start listening");

    // Idle connections (no hello yet) until accept fails with EMFILE; more wait in the backlog.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(TcpStream::connect(proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_seconds(child.id()) - before;
    drop(held);

    // Still alive and serving once descriptors are free again.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(mut stream) = TcpStream::connect(proxy).await {
            if stream.write_all(b"back").await.is_ok() {
                let mut buf = [0u8; 4];
                if let Ok(Ok(4)) = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf)).await {
                    served = true;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(used < 1.0, "accept loop used {used:.2} CPU seconds in 2 s with a full fd table: spinning");
    assert!(served, "snigate serves again after the fd table drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_slow_and_half_open_connections_does_not_disturb_established_sessions() {
    const ESTABLISHED: usize = 100;
    const FLOOD: usize = 2000;
    const ROUND_TRIPS: usize = 20;
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let yaml = config_with_limits(
        &["0.0.0.0:0"],
        "plain",
        "limits: { hello_timeout: 2s, max_connections: 10000 }",
        &[tcp_route(&backend)],
    );
    let proxy = start_proxy(&yaml).await;
    let target: SocketAddr = format!("127.0.0.1:{}", proxy.addr(0).port()).parse().unwrap();

    let mut sessions = Vec::new();
    for i in 0..ESTABLISHED {
        let mut stream = connect_from("127.0.0.1", target).await.unwrap();
        echo(&mut stream, format!("hello {i}").as_bytes()).await;
        sessions.push(stream);
    }

    // The flood: from 127.0.0.2..=127.0.0.9, half of them silent, half sending a partial hello.
    let flood = tokio::spawn(async move {
        let mut held = Vec::with_capacity(FLOOD);
        let partial = &raw_client_hello(Some(b"a.test"), &[])[..20];
        for i in 0..FLOOD {
            let source = format!("127.0.0.{}", 2 + i % 8);
            if let Ok(mut stream) = connect_from(&source, target).await {
                if i % 2 == 0 {
                    let _ = stream.write_all(partial).await;
                }
                held.push(stream);
            }
        }
        held
    });

    // Meanwhile every established session keeps echoing.
    let mut workers = Vec::new();
    for (i, mut stream) in sessions.into_iter().enumerate() {
        workers.push(tokio::spawn(async move {
            for round in 0..ROUND_TRIPS {
                let text = format!("session {i} round {round}");
                stream.write_all(text.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
                let mut buf = vec![0u8; text.len()];
                tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
                    .await
                    .map_err(|_| "echo timed out".to_string())?
                    .map_err(|e| format!("read: {e}"))?;
                if buf != text.as_bytes() {
                    return Err("echo mismatch".to_string());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), String>(())
        }));
    }
    for worker in workers {
        worker.await.unwrap().expect("an established session failed during the flood");
    }
    let held = within("the flood to finish connecting", flood).await.unwrap();
    assert!(held.len() >= FLOOD / 2, "flood opened only {} connections", held.len());
    assert_eq!(backend.accept_count(), ESTABLISHED, "flood connections reached no backend");
}
