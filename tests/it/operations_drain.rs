//! Operations: SIGTERM on the `snigate` binary. `/readyz` fails first, the listeners close, live
//! connections get `drain_timeout` to finish (the process exits as soon as they have), the rest
//! are closed spread over `close_jitter`, and the process exits 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::ops::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Support: HTTP, polling, the binary.

/// A running `snigate` child with one plain `tcp` route to an in-test echo backend.
struct Draining {
    child: ChildProxy,
    listen: SocketAddr,
    admin: SocketAddr,
    _backend: TestBackend,
    _dir: tempfile::TempDir,
}

async fn start_child(limits: &str) -> Draining {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let (listen, admin) = (closed_port().await, closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let route = RouteYaml::new("plain", "tcp").proxy("none").server(backend.addr);
    let text = format!(
        "admin: {}\n{}",
        q(admin.to_string()),
        config_with_limits(&[&listen.to_string()], "plain", limits, &[route])
    );
    std::fs::write(&config, text).unwrap();
    let mut child = ChildProxy::spawn(&config, dir.path().join("snigate.log"));
    child.wait_ready(admin).await;
    Draining { child, listen, admin, _backend: backend, _dir: dir }
}

/// Sends SIGTERM and checks what must happen first, while `live` is still open: `/readyz`
/// turns 503 (while the live connection still echoes) and the listener stops accepting.
/// Returns when SIGTERM was sent.
async fn terminate_and_check_the_drain_starts(proxy: &Draining, live: &mut TcpStream) -> Instant {
    let admin = proxy.admin;
    let sent = Instant::now();
    proxy.child.signal("TERM");
    eventually(Duration::from_secs(5), "/readyz to answer 503 after SIGTERM", || async move {
        match http_get(admin, "/readyz").await {
            Ok(response) if response.status == 503 => Ok(()),
            Ok(response) => Err(format!("/readyz answered {}", response.status)),
            Err(error) => Err(error),
        }
    })
    .await;
    echo(live, b"still here while draining").await.expect("the live connection keeps working during the drain");
    let listen = proxy.listen;
    eventually(Duration::from_secs(3), "the listener to refuse new connections", || async move {
        match TcpStream::connect(listen).await {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{listen} still accepts")),
        }
    })
    .await;
    let healthz = http_get(admin, "/healthz").await.expect("the admin endpoint serves during the drain");
    assert_eq!(healthz.status, 200, "/healthz stays 200 while draining");
    sent
}

// ---------------------------------------------------------------------------------------------

/// The client closes during the drain: the process exits then, long before the drain deadline
/// (set to 30 s here so that "exited within 10 s" can only mean the drain saw the last close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readyz_first_then_exits_zero_once_the_client_closes() {
    let mut proxy = start_child("limits: { drain_timeout: 30s, close_jitter: 1s }").await;
    let mut live = TcpStream::connect(proxy.listen).await.unwrap();
    echo(&mut live, b"before SIGTERM").await.unwrap();

    terminate_and_check_the_drain_starts(&proxy, &mut live).await;
    echo(&mut live, b"one more").await.unwrap();

    // The client finishes: half-close, the echo backend closes back, the relay ends.
    live.shutdown().await.unwrap();
    let closed = read_until_closed(&mut live).await;
    assert_eq!(closed, Closed::Eof(Vec::new()), "an orderly close through the proxy");
    let closed_at = Instant::now();
    let status = proxy.child.wait_exit(Duration::from_secs(10)).await;
    println!("exited {status} {:?} after the client closed", closed_at.elapsed());
    assert_eq!(status.code(), Some(0), "exit status after the drain:\n{}", proxy.child.log_text());
    let log = proxy.child.log_text();
    assert!(
        !log.contains("drain timeout passed"),
        "the drain ended because the client closed, not by its deadline:\n{log}"
    );
    assert!(TcpStream::connect(proxy.admin).await.is_err(), "the admin endpoint is gone after exit");
}

/// The client stays: it is closed after the drain deadline, within the jitter window (plus
/// slack), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readyz_first_then_closes_a_staying_client_after_the_deadline_and_exits_zero() {
    const DRAIN: Duration = Duration::from_secs(2);
    const JITTER: Duration = Duration::from_secs(1);
    /// Generous slack over drain + jitter for scheduling and process start-up noise.
    const SLACK: Duration = Duration::from_secs(3);
    let mut proxy = start_child("limits: { drain_timeout: 2s, close_jitter: 1s }").await;
    let mut live = TcpStream::connect(proxy.listen).await.unwrap();
    echo(&mut live, b"before SIGTERM").await.unwrap();

    let sent = terminate_and_check_the_drain_starts(&proxy, &mut live).await;
    let closed =
        within_for(DRAIN + JITTER + SLACK + Duration::from_secs(2), "the drain to close the staying client", async {
            read_until_closed(&mut live).await
        })
        .await;
    let closed_after = sent.elapsed();
    println!("staying client closed {closed_after:?} after SIGTERM: {closed:?}");
    assert!(closed.bytes().is_empty(), "no data after the drain: {closed:?}");
    assert!(closed_after >= DRAIN, "closed {closed_after:?} after SIGTERM, before drain_timeout {DRAIN:?}");
    assert!(
        closed_after <= DRAIN + JITTER + SLACK,
        "closed {closed_after:?} after SIGTERM, beyond drain_timeout + close_jitter + {SLACK:?}"
    );
    let status = proxy.child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after the drain:\n{}", proxy.child.log_text());
    let log = proxy.child.log_text();
    assert!(log.contains("drain timeout passed"), "the drain deadline closed the client:\n{log}");
}
