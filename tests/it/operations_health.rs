//! Operations: active health checks. A server that stops answering its checks is marked down
//! (`snigate_backend_up 0`), new clients skip it, and with `on_backend_down: close_sessions` its
//! live sessions are closed so clients reconnect to a healthy server; with every server down a
//! new client is refused at once. MQTT checks send the route's PROXY header and a CONNECT and
//! need a CONNACK back — checked against an in-test responder and, when installed, Mosquitto.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::ops::*;
use crate::support::proxy::{read_v2, FAM_TCP4};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Support: HTTP, metrics, polling, servers that can go dark, clients that know their server.

/// The backend server `server` of `route` as `/metrics` reports it (1 up, 0 down).
async fn backend_up(admin: SocketAddr, route: &str, server: SocketAddr) -> Option<f64> {
    metric(&scrape(admin).await, "snigate_backend_up", &[("route", route), ("server", &server.to_string())])
}

async fn wait_backend_up(admin: SocketAddr, route: &str, server: SocketAddr, want: f64, limit: Duration) {
    let what = format!("snigate_backend_up{{route={route:?},server=\"{server}\"}} to be {want}");
    eventually(limit, &what, || async move {
        match backend_up(admin, route, server).await {
            Some(value) if value == want => Ok(()),
            other => Err(format!("it is {other:?}")),
        }
    })
    .await;
}

/// A plain echo server that first writes its one-byte tag to every connection. It can go dark:
/// stop listening (connects and health checks fail) while the connections it accepted stay open
/// and keep echoing — so only the proxy can close them.
struct DarkableServer {
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DarkableServer {
    async fn start(tag: u8) -> DarkableServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let spawned = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { continue };
                spawned.lock().unwrap().push(tokio::spawn(async move {
                    if tcp.write_all(&[tag]).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 1024];
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tcp.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }));
            }
        });
        DarkableServer { addr, accept: Some(accept), connections }
    }

    /// Stops listening: the listener is closed when this returns; accepted sockets stay open.
    async fn go_dark(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }
}

impl Drop for DarkableServer {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        for connection in self.connections.lock().unwrap().iter() {
            connection.abort();
        }
    }
}

/// A listener whose accept queue is full: connects to it hang (the kernel drops the SYNs), so a
/// health check times out and a proxy that tried it would wait its whole connect_timeout.
struct Blackhole {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = std::net::TcpStream::connect(addr).unwrap();
        let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
        if probe.is_ok() {
            println!("note: connects to a full accept queue do not hang here; the promptness check proves less");
        }
        Blackhole { addr, _listener: listener, _filler: filler }
    }
}

/// A client connected through a `tcp` route, knowing which server's tag it got.
struct TaggedClient {
    tcp: TcpStream,
    tag: u8,
}

impl TaggedClient {
    async fn connect(proxy: SocketAddr) -> TaggedClient {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.write_all(b"hello").await.unwrap();
        let answer = read_n(&mut tcp, 6).await;
        assert_eq!(&answer[1..], b"hello", "echo through the proxy");
        TaggedClient { tcp, tag: answer[0] }
    }

    async fn echo(&mut self, message: &[u8]) -> Result<(), String> {
        let exchange = async {
            self.tcp.write_all(message).await.map_err(|e| format!("write: {e}"))?;
            let mut back = vec![0u8; message.len()];
            self.tcp.read_exact(&mut back).await.map_err(|e| format!("read: {e}"))?;
            if back != message {
                return Err(format!("echo mismatch: {back:?}"));
            }
            Ok(())
        };
        tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err("echo timed out".into()))
    }
}

/// A config with the admin endpoint and one default `tcp` route `pool` over `servers`.
fn pool_config(servers: &[SocketAddr], limits: &str, backend_lines: &[&str]) -> String {
    let servers: Vec<String> = servers.iter().map(|s| q(s.to_string())).collect();
    let mut text = format!(
        "admin: \"127.0.0.1:0\"\nlisten: [\"127.0.0.1:0\"]\ndefault: \"pool\"\n{limits}\nroutes:\n  - name: \"pool\"\n    mode: tcp\n    backend:\n      servers: [{}]\n",
        servers.join(", ")
    );
    for line in backend_lines {
        text += &format!("      {line}\n");
    }
    text
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_under_load_closes_its_sessions_and_new_clients_go_to_the_healthy_server() {
    let mut one = DarkableServer::start(b'1').await;
    let two = DarkableServer::start(b'2').await;
    let proxy = start_proxy(&pool_config(
        &[one.addr, two.addr],
        "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 500ms }",
        &[
            "proxy_protocol: none",
            "connect_timeout: 5s",
            "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }",
            "on_backend_down: close_sessions",
        ],
    ))
    .await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.unwrap());

    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(TaggedClient::connect(addr).await);
    }
    let (mut on_one, mut on_two): (Vec<TaggedClient>, Vec<TaggedClient>) =
        clients.into_iter().partition(|client| client.tag == b'1');
    println!("{} clients on server 1, {} on server 2", on_one.len(), on_two.len());
    assert!(!on_one.is_empty() && !on_two.is_empty(), "round-robin spreads clients over both servers");
    assert_eq!(on_one.len() + on_two.len(), 20, "every client reached one of the two servers");

    one.go_dark().await;
    let went_dark = Instant::now();

    // The proxy closes server 1's sessions (server 1 itself keeps them open) within a few seconds.
    let closes = on_one.iter_mut().map(|client| async move {
        within_for(
            Duration::from_secs(5),
            "a session of the down server to be closed",
            read_until_closed(&mut client.tcp),
        )
        .await
    });
    let closed = futures_join_all(closes).await;
    println!("server 1's sessions all closed {:?} after it went dark", went_dark.elapsed());
    for outcome in &closed {
        assert!(outcome.bytes().is_empty(), "no data from a closed session: {outcome:?}");
    }
    for (i, client) in on_two.iter_mut().enumerate() {
        client.echo(format!("two-{i}").as_bytes()).await.unwrap_or_else(|e| panic!("server 2 client {i}: {e}"));
    }
    wait_backend_up(admin, "pool", one.addr, 0.0, Duration::from_secs(5)).await;
    assert_eq!(backend_up(admin, "pool", two.addr).await, Some(1.0));
    let expected = on_one.len() as f64;
    eventually(Duration::from_secs(3), "the closes to be counted as backend_down", || async move {
        let samples = scrape(admin).await;
        match metric(&samples, "snigate_connection_closes_total", &[("route", "pool"), ("reason", "backend_down")]) {
            Some(count) if count == expected => Ok(()),
            other => Err(format!("it is {other:?}, expected {expected}")),
        }
    })
    .await;

    for i in 0..10 {
        let mut fresh = TaggedClient::connect(addr).await;
        assert_eq!(fresh.tag, b'2', "new client {i} must go to the healthy server");
        fresh.echo(b"fresh").await.unwrap();
    }
    for (i, client) in on_two.iter_mut().enumerate() {
        client.echo(b"still").await.unwrap_or_else(|e| panic!("server 2 client {i} later: {e}"));
    }
    proxy.shutdown().await;
}

/// Awaits every future (all polled concurrently) and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_refuses_new_clients_at_once() {
    let (first, second) = (Blackhole::start().await, Blackhole::start().await);
    let proxy = start_proxy(&pool_config(
        &[first.addr, second.addr],
        "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 200ms }",
        &[
            "proxy_protocol: none",
            "connect_timeout: 5s",
            "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }",
        ],
    ))
    .await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.unwrap());
    wait_backend_up(admin, "pool", first.addr, 0.0, Duration::from_secs(5)).await;
    wait_backend_up(admin, "pool", second.addr, 0.0, Duration::from_secs(5)).await;

    // Trying either server would take connect_timeout (5 s); skipping both is immediate.
    let started = Instant::now();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let closed = within_for(Duration::from_secs(3), "the proxy to refuse a client with every server down", async {
        read_until_closed(&mut client).await
    })
    .await;
    println!("refused after {:?}: {closed:?}", started.elapsed());
    assert!(closed.bytes().is_empty(), "nothing relayed: {closed:?}");
    eventually(
        Duration::from_secs(3),
        "connections_rejected_total{reason=\"backend_unavailable\"} >= 1",
        || async move {
            let samples = scrape(admin).await;
            match metric(&samples, "snigate_connections_rejected_total", &[("reason", "backend_unavailable")]) {
                Some(count) if count >= 1.0 => Ok(()),
                other => Err(format!("it is {other:?}")),
            }
        },
    )
    .await;
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// MQTT checks.

const ANSWER_CONNACK: u8 = 0;
const ANSWER_GARBAGE: u8 = 1;
const ANSWER_CLOSE: u8 = 2;

/// An MQTT health-check responder: reads and verifies the PROXY v2 header and the CONNECT,
/// then answers as `answer` says.
struct MqttResponder {
    addr: SocketAddr,
    answer: Arc<AtomicU8>,
    valid_checks: Arc<AtomicUsize>,
    problems: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for MqttResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttResponder {
    async fn start() -> MqttResponder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(AtomicU8::new(ANSWER_CONNACK));
        let valid_checks = Arc::new(AtomicUsize::new(0));
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let (mode, valid, found) = (answer.clone(), valid_checks.clone(), problems.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                let (mode, valid, found) = (mode.clone(), valid.clone(), found.clone());
                tokio::spawn(async move {
                    let checked = tokio::time::timeout(WAIT, check_one(tcp, peer, addr, &mode)).await;
                    match checked {
                        Ok(Ok(())) => drop(valid.fetch_add(1, Ordering::SeqCst)),
                        Ok(Err(problem)) => found.lock().unwrap().push(problem),
                        Err(_) => found.lock().unwrap().push("check connection stalled".into()),
                    }
                });
            }
        });
        MqttResponder { addr, answer, valid_checks, problems, task }
    }

    fn answer(&self, answer: u8) {
        self.answer.store(answer, Ordering::SeqCst);
    }
}

/// Verifies one check connection: a PROXY v2 PROXY-command header naming the proxy's own end of
/// this connection as source and us as destination, then an MQTT CONNECT; answers it.
async fn check_one(mut tcp: TcpStream, peer: SocketAddr, own: SocketAddr, mode: &AtomicU8) -> Result<(), String> {
    let header = read_v2(&mut tcp).await?;
    if header.raw[12] != 0x21 {
        return Err(format!("version/command byte {:#04x}, expected 0x21 (v2 PROXY)", header.raw[12]));
    }
    if header.family != FAM_TCP4 {
        return Err(format!("family {:#04x}, expected TCP4", header.family));
    }
    if header.src != Some(peer) {
        return Err(format!("source {:?} is not the proxy's own address {peer}", header.src));
    }
    if header.dst != Some(own) {
        return Err(format!("destination {:?} is not the checked server {own}", header.dst));
    }
    let packet_type = tcp.read_u8().await.map_err(|e| format!("CONNECT type: {e}"))?;
    if packet_type != 0x10 {
        return Err(format!("first packet type {packet_type:#04x}, expected CONNECT 0x10"));
    }
    let mut remaining = 0usize;
    for shift in 0..4 {
        let byte = tcp.read_u8().await.map_err(|e| format!("CONNECT length: {e}"))?;
        remaining |= usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; remaining];
    tcp.read_exact(&mut body).await.map_err(|e| format!("CONNECT body ({remaining} bytes): {e}"))?;
    if !body.starts_with(b"\x00\x04MQTT") || !matches!(body.get(6), Some(4 | 5)) {
        return Err(format!("not an MQTT 3.1.1/5 CONNECT: {body:02x?}"));
    }
    match mode.load(Ordering::SeqCst) {
        ANSWER_CONNACK => tcp.write_all(&[0x20, 0x02, 0x00, 0x00]).await.map_err(|e| format!("CONNACK: {e}"))?,
        ANSWER_GARBAGE => {
            tcp.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await.map_err(|e| format!("garbage: {e}"))?
        }
        _ => {
            drop(tcp);
            return Ok(());
        }
    }
    // The checker may send DISCONNECT and close; wait for that briefly.
    let mut rest = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut rest)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_health_check_against_an_in_test_responder() {
    let responder = MqttResponder::start().await;
    let proxy = start_proxy(&pool_config(
        &[responder.addr],
        "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 200ms }",
        &["proxy_protocol: v2", "health_check: { type: mqtt, interval: 200ms, timeout: 1s, rise: 1, fall: 2 }"],
    ))
    .await;
    let admin = proxy.admin.unwrap();
    let server = responder.addr;
    let problems = || responder.problems.lock().unwrap().clone();

    eventually(Duration::from_secs(10), "three valid MQTT health checks", || {
        let (valid, problems) = (responder.valid_checks.load(Ordering::SeqCst), problems());
        async move {
            assert!(problems.is_empty(), "bad health checks: {problems:?}");
            if valid >= 3 {
                Ok(())
            } else {
                Err(format!("{valid} so far"))
            }
        }
    })
    .await;
    assert_eq!(backend_up(admin, "pool", server).await, Some(1.0), "answered checks keep the server up");

    responder.answer(ANSWER_GARBAGE);
    wait_backend_up(admin, "pool", server, 0.0, Duration::from_secs(10)).await;
    responder.answer(ANSWER_CONNACK);
    wait_backend_up(admin, "pool", server, 1.0, Duration::from_secs(10)).await;
    responder.answer(ANSWER_CLOSE);
    wait_backend_up(admin, "pool", server, 0.0, Duration::from_secs(10)).await;
    let problems = problems();
    assert!(problems.is_empty(), "every check carried a valid header and CONNECT: {problems:?}");
    println!("{} valid checks", responder.valid_checks.load(Ordering::SeqCst));
    proxy.shutdown().await;
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_health_check_against_real_mosquitto() {
    const MOSQUITTO: &str = "/usr/sbin/mosquitto";
    if !std::path::Path::new(MOSQUITTO).exists() {
        println!("skipped: mosquitto not installed");
        return;
    }
    let port = closed_port().await;
    let proxy = start_proxy(&pool_config(
        &[port],
        "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 200ms }",
        &["proxy_protocol: none", "health_check: { type: mqtt, interval: 200ms, timeout: 1s, rise: 1, fall: 2 }"],
    ))
    .await;
    let admin = proxy.admin.unwrap();
    // Nothing listens yet: the checks take the server down.
    wait_backend_up(admin, "pool", port, 0.0, Duration::from_secs(10)).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(&config, format!("listener {} 127.0.0.1\nallow_anonymous true\n", port.port())).unwrap();
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let mosquitto = std::process::Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start mosquitto");
    let mut mosquitto = KillOnDrop(mosquitto);
    let log_text = || std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = mosquitto.0.try_wait() {
            panic!("mosquitto exited with {status}:\n{}", log_text());
        }
        match tokio::time::timeout(Duration::from_secs(5), backend_up(admin, "pool", port)).await {
            Ok(Some(1.0)) => break,
            _ if Instant::now() >= deadline => panic!("Mosquitto never passed the MQTT check:\n{}", log_text()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    println!("up against Mosquitto");

    let _ = mosquitto.0.kill();
    let _ = mosquitto.0.wait();
    wait_backend_up(admin, "pool", port, 0.0, Duration::from_secs(10)).await;
    drop(mosquitto);
    proxy.shutdown().await;
}

/// A reload that leaves a route's servers as they are must not forget that they are down: the
/// new route table starts every server "up" (config.rs builds `server_up` all true and
/// `Checker::spawn` exports `snigate_backend_up 1` for each), so after every reload new clients
/// are sent to dead servers — each paying the full connect_timeout on a blackholed one — until
/// `fall` checks have failed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_health_state_of_unchanged_servers() {
    let (first, second) = (Blackhole::start().await, Blackhole::start().await);
    let config = pool_config(
        &[first.addr, second.addr],
        "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 200ms }",
        &[
            "proxy_protocol: none",
            "connect_timeout: 5s",
            // A slow interval: a reload that forgets the health state shows it for >= 3 s (until
            // the second failed check), however slowly this test runs.
            "health_check: { type: tcp, interval: 3s, timeout: 200ms, rise: 1, fall: 2 }",
        ],
    );
    let proxy = start_proxy(&config).await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.unwrap());
    wait_backend_up(admin, "pool", first.addr, 0.0, Duration::from_secs(10)).await;
    wait_backend_up(admin, "pool", second.addr, 0.0, Duration::from_secs(10)).await;

    // Reload the very same file.
    within("reload", proxy.reload.reload()).await.expect("reload of an unchanged file");
    let after_reload = (backend_up(admin, "pool", first.addr).await, backend_up(admin, "pool", second.addr).await);
    let started = Instant::now();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(3), read_until_closed(&mut client)).await;
    println!("backend_up right after the reload: {after_reload:?}; client: {closed:?} after {:?}", started.elapsed());
    assert_eq!(after_reload, (Some(0.0), Some(0.0)), "a reload must not report down servers as up");
    assert!(closed.is_ok(), "with every server still down, a client right after a reload must be refused at once");
    proxy.shutdown().await;
}

/// Removing `health_check:` from a route at reload must not leave its servers stuck down: with no
/// check left to bring them back up, a server that was down when the check was removed would be
/// skipped ("marked down by its health check") until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_removes_the_health_check_brings_its_down_servers_back() {
    let port = closed_port().await;
    let limits = "limits: { hello_timeout: 5s, idle_timeout: 5m, drain_timeout: 1s, close_jitter: 200ms }";
    let checked = pool_config(
        &[port],
        limits,
        &["proxy_protocol: none", "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }"],
    );
    let unchecked = pool_config(&[port], limits, &["proxy_protocol: none"]);
    let proxy = start_proxy(&checked).await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.unwrap());
    wait_backend_up(admin, "pool", port, 0.0, Duration::from_secs(10)).await;

    // The server comes to life and, in the same moment, the operator drops the health check.
    let listener = TcpListener::bind(port).await.expect("bind the freed port");
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = tcp.write_all(b"S").await;
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    std::fs::write(&proxy.config_path, unchecked).unwrap();
    within("reload", proxy.reload.reload()).await.expect("reload without health_check");

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut answer = [0u8; 6];
    let reached = tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer)).await;
    let up = backend_up(admin, "pool", port).await;
    server.abort();
    println!("after dropping the health check: backend_up {up:?}, client {reached:?} {answer:?}");
    assert!(
        matches!(reached, Ok(Ok(_))) && &answer == b"Shello",
        "without a health check the server must be used again; the client got {reached:?}"
    );
    assert_eq!(up, Some(1.0), "a server without a health check is not reported down");
    proxy.shutdown().await;
}
