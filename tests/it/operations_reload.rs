//! Operations: config reload. The route table is swapped under live load without dropping a
//! connection; a broken file keeps the running config (and is counted); listeners are diffed;
//! reloaded CRLs can close live sessions (`revoke_live`); the `snigate` binary reloads on a file
//! change and on SIGHUP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::ops::*;
use crate::support::tls::{expect_refused, simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Live connections in `reload_under_load_drops_no_connection` (override with
/// `SNIGATE_OPS_RELOAD_CONNECTIONS`). Each costs four sockets in this process (client, proxy
/// front, proxy back, backend), far below the 20,000-descriptor budget.
const LOAD_CONNECTIONS: usize = 1000;
/// Reloads in `reload_under_load_drops_no_connection`.
const LOAD_RELOADS: usize = 100;
/// Handshakes in flight while the load connects (the proxy's own cap is far above this).
const CONNECT_CONCURRENCY: usize = 64;

const LIMITS: &str = "limits: { hello_timeout: 10s, max_connections: 10000, max_handshakes: 1024, idle_timeout: 5m, handshake_timeout: 10s, drain_timeout: 1s, close_jitter: 100ms }";

// ---------------------------------------------------------------------------------------------
// Support: config files, HTTP scrapes, metric parsing, polling, tagged backends, the binary.

/// Replaces `path` atomically (write a sibling, rename over), as editors and config tools do.
fn replace_file(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A plain TCP backend that writes its one-byte tag to every connection, then echoes.
struct TaggedBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TaggedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TaggedBackend {
    async fn start(tag: u8) -> TaggedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { continue };
                connections.spawn(async move {
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
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TaggedBackend { addr, task }
    }
}

/// Opens a new plain connection through a `tcp` route and returns the tag of the backend it reached.
async fn reached_tag(proxy: SocketAddr) -> Result<u8, String> {
    let attempt = async {
        let mut tcp = TcpStream::connect(proxy).await.map_err(|e| format!("connect: {e}"))?;
        tcp.write_all(b"ping").await.map_err(|e| format!("write: {e}"))?;
        let mut answer = [0u8; 5];
        tcp.read_exact(&mut answer).await.map_err(|e| format!("read: {e}"))?;
        if &answer[1..] != b"ping" {
            return Err(format!("bad echo {answer:?}"));
        }
        Ok(answer[0])
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.unwrap_or_else(|_| Err("no answer within 5 s".into()))
}

/// A raw ClientHello for `sni` on a fresh connection: what the proxy answers before closing.
async fn answer_to_raw_hello(proxy: SocketAddr, sni: &str) -> Closed {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(&crate::support::hello::raw_client_hello(Some(sni.as_bytes()), &[])).await.unwrap();
    read_until_closed(&mut tcp).await
}

fn no_resumption_client(ca: &Ca) -> Arc<rustls::ClientConfig> {
    client_config(ClientOpts { roots: vec![ca.cert_der.clone()], no_resumption: true, ..Default::default() })
}

// ---------------------------------------------------------------------------------------------
// Reload under load.

fn load_config(a_leaf: &Leaf, backend_a: SocketAddr, b: Option<(&Leaf, SocketAddr)>) -> String {
    let mut routes = vec![RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(a_leaf).server(backend_a)];
    if let Some((b_leaf, backend_b)) = b {
        routes.push(RouteYaml::new("b", "terminate").sni(&["b.test"]).cert(b_leaf).server(backend_b));
    }
    config_with_limits(&["127.0.0.1:0"], "reject", LIMITS, &routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_no_connection() {
    let connections: usize =
        std::env::var("SNIGATE_OPS_RELOAD_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(LOAD_CONNECTIONS);
    let started = Instant::now();
    let pki = Pki::new();
    let ca = pki.ca("ca", "Reload CA");
    let first_a = ca.server_cert("a-0", &["a.test"]);
    let b_leaf = ca.server_cert("b", &["b.test"]);
    let backend_a = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let backend_b = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&load_config(&first_a, backend_a.addr, None)).await;
    let addr = proxy.addr(0);

    // The live load: every connection echoes, pausing 20–120 ms, until the reloads are over,
    // then once more.
    let live_client = simple_client(&ca.cert_der, None);
    let connected = Arc::new(AtomicUsize::new(0));
    let echoes = Arc::new(AtomicUsize::new(0));
    // Per connection: echoes completed while the reloads were running.
    let during: Arc<Vec<AtomicUsize>> = Arc::new((0..connections).map(|_| AtomicUsize::new(0)).collect());
    let reloading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = CancellationToken::new();
    let connect_slots = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut load = tokio::task::JoinSet::new();
    for id in 0..connections {
        let slot = connect_slots.clone().acquire_owned().await.unwrap();
        let (config, connected, echoes, errors, done) =
            (live_client.clone(), connected.clone(), echoes.clone(), errors.clone(), done.clone());
        let (during, reloading) = (during.clone(), reloading.clone());
        load.spawn(async move {
            let outcome: Result<usize, String> = async {
                let (mut tls, _) = tls_connect(addr, config, "a.test").await.map_err(|e| format!("connect: {e}"))?;
                drop(slot);
                connected.fetch_add(1, Ordering::SeqCst);
                let mut rounds = 0usize;
                // Bounded: far more rounds than the reloads take at this pace.
                while rounds < 5_000 {
                    let last = done.is_cancelled();
                    let message = format!("conn {id:05} round {rounds:06} ........");
                    echo(&mut tls, message.as_bytes()).await.map_err(|e| format!("round {rounds}: {e}"))?;
                    echoes.fetch_add(1, Ordering::Relaxed);
                    if reloading.load(Ordering::SeqCst) {
                        during[id].fetch_add(1, Ordering::Relaxed);
                    }
                    rounds += 1;
                    if last {
                        break;
                    }
                    let pause = Duration::from_millis(20 + fastrand::u64(0..100));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = done.cancelled() => {}
                    }
                }
                let _ = tls.shutdown().await;
                Ok(rounds)
            }
            .await;
            if let Err(error) = &outcome {
                errors.lock().unwrap().push(format!("connection {id}: {error}"));
            }
            outcome
        });
    }
    eventually(Duration::from_secs(120), "every load connection to be established", || {
        let (connected, errors) = (connected.load(Ordering::SeqCst), errors.lock().unwrap().clone());
        async move {
            assert!(errors.is_empty(), "load connections failed: {errors:?}");
            if connected == connections {
                Ok(())
            } else {
                Err(format!("{connected} of {connections} connected"))
            }
        }
    })
    .await;
    let established_after = started.elapsed();

    // The reloads: even ones toggle route b, odd ones give route a a fresh certificate; after
    // each, a new connection must see the change. At least LOAD_RELOADS of them, and on until
    // every live connection has echoed MIN_ECHOES_DURING times while they ran.
    const MIN_ECHOES_DURING: usize = 3;
    let verify_client = no_resumption_client(&ca);
    let mut a_leaf = first_a;
    let mut b_present = false;
    let echoes_before_reloads = echoes.load(Ordering::Relaxed);
    let reloads_started = Instant::now();
    reloading.store(true, Ordering::SeqCst);
    let mut reloads = 0;
    for i in 0.. {
        if i >= LOAD_RELOADS && during.iter().all(|count| count.load(Ordering::Relaxed) >= MIN_ECHOES_DURING) {
            break;
        }
        assert!(reloads_started.elapsed() < Duration::from_secs(120), "the live load stalled during the reloads");
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if i % 2 == 0 {
            b_present = !b_present;
        } else {
            a_leaf = ca.server_cert(&format!("a-{i}"), &["a.test"]);
        }
        let b = b_present.then_some((&b_leaf, backend_b.addr));
        replace_file(&proxy.config_path, &load_config(&a_leaf, backend_a.addr, b));
        let reloaded = within("reload", proxy.reload.reload()).await.unwrap_or_else(|e| panic!("reload {i}: {e}"));
        assert_eq!(reloaded.routes, if b_present { 2 } else { 1 }, "reload {i}: {reloaded:?}");
        if i % 2 == 0 && b_present {
            let before = backend_b.accept_count();
            let (mut tls, _) = tls_connect(addr, verify_client.clone(), "b.test")
                .await
                .unwrap_or_else(|e| panic!("reload {i}: route b was added but b.test fails: {e}"));
            echo(&mut tls, b"to b").await.unwrap_or_else(|e| panic!("reload {i}: echo through route b: {e}"));
            let _ = tls.shutdown().await;
            assert_eq!(backend_b.accept_count(), before + 1, "reload {i}: b.test must reach route b's backend");
        } else if i % 2 == 0 {
            let answer = answer_to_raw_hello(addr, "b.test").await;
            assert_eq!(
                answer.bytes(),
                UNRECOGNIZED_NAME_ALERT,
                "reload {i}: route b was removed, b.test must get unrecognized_name: {answer:?}"
            );
        } else {
            let (mut tls, _) = tls_connect(addr, verify_client.clone(), "a.test")
                .await
                .unwrap_or_else(|e| panic!("reload {i}: a.test fails after a certificate change: {e}"));
            let seen = tls.get_ref().1.peer_certificates().expect("server certificate")[0].clone();
            assert!(seen == a_leaf.cert_der, "reload {i}: a new client must see route a's new certificate");
            echo(&mut tls, b"to a").await.unwrap_or_else(|e| panic!("reload {i}: echo through route a: {e}"));
            let _ = tls.shutdown().await;
        }
    }
    reloading.store(false, Ordering::SeqCst);
    let reload_time = reloads_started.elapsed();
    let echoes_during_reloads = echoes.load(Ordering::Relaxed) - echoes_before_reloads;
    done.cancel();

    let mut rounds = Vec::new();
    while let Some(joined) = within_for(Duration::from_secs(60), "the load to finish", load.join_next()).await {
        if let Ok(Ok(count)) = joined.map_err(|e| e.to_string()) {
            rounds.push(count);
        }
    }
    let errors = errors.lock().unwrap().clone();
    println!(
        "{connections} live connections (established in {established_after:?}); {reloads} reloads in \
         {reload_time:?} with {echoes_during_reloads} echoes during them; {} echoes in all; {} errors; total {:?}",
        echoes.load(Ordering::Relaxed),
        errors.len(),
        started.elapsed(),
    );
    assert!(
        errors.is_empty(),
        "{} live connections failed during reloads, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(rounds.len(), connections, "every load task finishes cleanly");
    assert!(rounds.iter().all(|&r| r >= 2), "every connection echoed before and after the reloads");
    assert!(echoes_during_reloads > 0, "the load was live while the config was reloaded");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A broken file at reload.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_at_reload_keeps_the_old_config_and_counts_a_failure() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Broken-reload CA");
    let leaf = ca.server_cert("a", &["a.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&leaf).server(backend.addr);
    let good = format!("admin: \"127.0.0.1:0\"\n{}", config_with_limits(&["127.0.0.1:0"], "reject", LIMITS, &[route]));
    let proxy = start_proxy(&good).await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.expect("admin endpoint"));
    let client = no_resumption_client(&ca);
    let (mut live, _) = tls_connect(addr, client.clone(), "a.test").await.unwrap();
    echo(&mut live, b"before").await.unwrap();
    let samples = scrape(admin).await;
    assert_eq!(metric(&samples, "snigate_config_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(metric(&samples, "snigate_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0), 0.0);

    let path = proxy.config_path.display().to_string();
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    // 1. YAML the schema refuses: an unknown key, reported at its line.
    let unknown_key = good.replace("    mode: terminate\n", "    mode: terminate\n    colour: red\n");
    replace_file(&proxy.config_path, &unknown_key);
    let error =
        within("reload", proxy.reload.reload()).await.expect_err("an unknown key must fail the reload").to_string();
    println!("unknown key: {error}");
    let expected = format!("{path}:{}:", line_of(&unknown_key, "colour"));
    assert!(error.contains(&expected) && error.contains("colour"), "error must name {expected}…: {error}");

    // 2. Text that is not YAML at all: an unclosed flow sequence.
    let not_yaml = good.replace("    sni: [\"a.test\"]\n", "    sni: [\"a.test\"\n");
    assert_ne!(not_yaml, good);
    replace_file(&proxy.config_path, &not_yaml);
    let error =
        within("reload", proxy.reload.reload()).await.expect_err("broken YAML must fail the reload").to_string();
    println!("broken YAML: {error}");
    let position =
        error.strip_prefix(&format!("{path}:")).unwrap_or_else(|| panic!("error must start with the file: {error}"));
    let line: usize = position.split(':').next().unwrap().parse().unwrap_or(0);
    assert!(line >= line_of(&not_yaml, "sni:"), "the YAML error must name a line at or after the broken one: {error}");

    // 3. A certificate file that does not exist, reported at the `cert:` line.
    let missing = pki.path().join("missing").join("a.pem");
    let missing_cert = good.replace(leaf.cert_path.to_str().unwrap(), missing.to_str().unwrap());
    replace_file(&proxy.config_path, &missing_cert);
    let error =
        within("reload", proxy.reload.reload()).await.expect_err("a missing cert must fail the reload").to_string();
    println!("missing cert: {error}");
    let expected = format!("{path}:{}:", line_of(&missing_cert, "missing"));
    assert!(error.contains(&expected) && error.contains("missing"), "error must name {expected}…: {error}");

    // The old config still serves: the live connection and new ones.
    echo(&mut live, b"after").await.expect("live connection survives failed reloads");
    let (mut fresh, _) = tls_connect(addr, client.clone(), "a.test").await.expect("old route still served");
    assert!(fresh.get_ref().1.peer_certificates().unwrap()[0] == leaf.cert_der);
    echo(&mut fresh, b"fresh").await.unwrap();
    let samples = scrape(admin).await;
    assert_eq!(metric(&samples, "snigate_config_reloads_total", &[("result", "failure")]), Some(3.0));
    assert_eq!(metric(&samples, "snigate_config_reloads_total", &[("result", "success")]), Some(1.0));

    // A good file afterwards is taken and counted as a success.
    replace_file(&proxy.config_path, &good);
    within("reload", proxy.reload.reload()).await.expect("the fixed file reloads");
    let samples = scrape(admin).await;
    assert_eq!(metric(&samples, "snigate_config_reloads_total", &[("result", "success")]), Some(2.0));
    echo(&mut live, b"still").await.unwrap();
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Listener diff.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_opens_added_and_closes_removed_listeners_without_touching_others() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let (kept, removed, added) = (closed_port().await, closed_port().await, closed_port().await);
    let route = [RouteYaml::new("plain", "tcp").server(backend.addr)];
    let config = |listen: &[SocketAddr]| {
        let listen: Vec<String> = listen.iter().map(ToString::to_string).collect();
        let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
        config_with_limits(&listen, "plain", LIMITS, &route)
    };
    let proxy = start_proxy(&config(&[kept, removed])).await;
    assert_eq!((proxy.addr(0), proxy.addr(1)), (kept, removed));
    let mut on_kept = TcpStream::connect(kept).await.unwrap();
    echo(&mut on_kept, b"kept-1").await.unwrap();
    let mut on_removed = TcpStream::connect(removed).await.unwrap();
    echo(&mut on_removed, b"removed-1").await.unwrap();

    replace_file(&proxy.config_path, &config(&[kept, added]));
    let reloaded = within("reload", proxy.reload.reload()).await.expect("reload with a listener swapped");
    assert_eq!(reloaded.listeners_opened, vec![added], "{reloaded:?}");
    assert_eq!(reloaded.listeners_closed, vec![removed], "{reloaded:?}");

    // Live connections are untouched, on the kept listener and on the removed one.
    echo(&mut on_kept, b"kept-2").await.expect("the kept listener's live connection keeps working");
    echo(&mut on_removed, b"removed-2").await.expect("a connection accepted before its listener closed keeps working");
    // The removed address refuses (polled: the accept loop stops asynchronously).
    eventually(Duration::from_secs(3), "the removed listener to refuse connections", || async move {
        match TcpStream::connect(removed).await {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{removed} still accepts")),
        }
    })
    .await;
    // The added one and the kept one accept and serve.
    let mut on_added = TcpStream::connect(added).await.expect("the added listener accepts");
    echo(&mut on_added, b"added").await.unwrap();
    let mut again = TcpStream::connect(kept).await.expect("the kept listener still accepts");
    echo(&mut again, b"kept-new").await.unwrap();
    echo(&mut on_kept, b"kept-3").await.unwrap();
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Revocation at reload.

struct RevocationSetup {
    _pki: Pki,
    _backend: TestBackend,
    proxy: RunningProxy,
    client_ca: Ca,
    a: Leaf,
    client_a: Arc<rustls::ClientConfig>,
    client_b: Arc<rustls::ClientConfig>,
}

async fn revocation_setup(revoke_live: bool) -> RevocationSetup {
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca", "Server CA");
    let client_ca = pki.ca("client-ca", "Client CA");
    let server = server_ca.server_cert("m", &["m.test"]);
    let a = client_ca.client_cert("client-a", &ClientSpec::cn("device-a"));
    let b = client_ca.client_cert("client-b", &ClientSpec::cn("device-b"));
    let crl = client_ca.crl("clients", &[]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("m", "terminate")
        .sni(&["m.test"])
        .cert(&server)
        .client_auth("required", &client_ca)
        .tls(format!("crl: [{}]", q(crl.to_str().unwrap())))
        .tls(format!("revoke_live: {revoke_live}"))
        .server(backend.addr);
    let proxy = start_proxy(&config_with_limits(&["127.0.0.1:0"], "reject", LIMITS, &[route])).await;
    // Resumption stays on: a reconnect offers its ticket, which must not bypass the new CRL.
    let client_a = simple_client(&server_ca.cert_der, Some(&a));
    let client_b = simple_client(&server_ca.cert_der, Some(&b));
    RevocationSetup { _pki: pki, _backend: backend, proxy, client_ca, a, client_a, client_b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_live_closes_sessions_whose_certificate_a_new_crl_revokes() {
    let setup = revocation_setup(true).await;
    let addr = setup.proxy.addr(0);
    let (mut a, _) = tls_connect(addr, setup.client_a.clone(), "m.test").await.unwrap();
    let (mut b, _) = tls_connect(addr, setup.client_b.clone(), "m.test").await.unwrap();
    echo(&mut a, b"a-1").await.unwrap();
    echo(&mut b, b"b-1").await.unwrap();

    setup.client_ca.crl("clients", &[&setup.a]);
    let reloaded = within("reload", setup.proxy.reload.reload()).await.expect("reload with the new CRL");
    assert_eq!(reloaded.revoked_sessions, 1, "exactly A's session is revoked: {reloaded:?}");

    let closed =
        within_for(Duration::from_secs(5), "A's revoked session to be closed", read_until_closed(&mut a)).await;
    println!("A after the CRL reload: {closed:?}");
    assert!(closed.bytes().is_empty(), "no data after revocation: {closed:?}");
    echo(&mut b, b"b-2").await.expect("B is not revoked and keeps its session");

    let refused = expect_refused(addr, setup.client_a.clone(), "m.test").await;
    println!("A reconnecting: {refused}");
    let (mut b_again, _) = tls_connect(addr, setup.client_b.clone(), "m.test").await.expect("B can reconnect");
    echo(&mut b_again, b"b-3").await.unwrap();
    echo(&mut b, b"b-4").await.unwrap();
    let metrics = setup.proxy.metrics.clone();
    eventually(Duration::from_secs(3), "A's close to be counted as certificate_revoked", || {
        let samples = parse_exposition(&metrics.encode());
        async move {
            let closes = [("route", "m"), ("reason", "certificate_revoked")];
            match metric(&samples, "snigate_connection_closes_total", &closes) {
                Some(1.0) => Ok(()),
                other => Err(format!("it is {other:?}")),
            }
        }
    })
    .await;
    setup.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_revoke_live_a_revoked_session_stays_but_cannot_reconnect() {
    let setup = revocation_setup(false).await;
    let addr = setup.proxy.addr(0);
    let (mut a, _) = tls_connect(addr, setup.client_a.clone(), "m.test").await.unwrap();
    let (mut b, _) = tls_connect(addr, setup.client_b.clone(), "m.test").await.unwrap();
    echo(&mut a, b"a-1").await.unwrap();
    echo(&mut b, b"b-1").await.unwrap();

    setup.client_ca.crl("clients", &[&setup.a]);
    let reloaded = within("reload", setup.proxy.reload.reload()).await.expect("reload with the new CRL");
    assert_eq!(reloaded.revoked_sessions, 0, "revoke_live is off: {reloaded:?}");

    echo(&mut a, b"a-2").await.expect("A's live session stays without revoke_live");
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(&mut a, b"a-3").await.expect("A's live session is still there a little later");
    let refused = expect_refused(addr, setup.client_a.clone(), "m.test").await;
    println!("A reconnecting: {refused}");
    let (mut b_again, _) = tls_connect(addr, setup.client_b.clone(), "m.test").await.expect("B can reconnect");
    echo(&mut b_again, b"b-2").await.unwrap();
    echo(&mut b, b"b-3").await.unwrap();
    setup.proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The binary: file watch and SIGHUP.

fn tcp_route_config(listen: SocketAddr, admin: SocketAddr, server: SocketAddr) -> String {
    let route = RouteYaml::new("plain", "tcp").proxy("none").server(server);
    format!(
        "admin: {}\n{}",
        q(admin.to_string()),
        config_with_limits(&[&listen.to_string()], "plain", LIMITS, &[route])
    )
}

/// Polls new connections until they reach the backend tagged `tag`.
async fn wait_for_tag(proxy: SocketAddr, tag: u8, limit: Duration, child: &ChildProxy, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = reached_tag(proxy).await;
        if seen == Ok(tag) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new connections still reach {seen:?} instead of {:?} after {limit:?}\n--- snigate log ---\n{}",
            tag as char,
            child.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_reloads_on_change() {
    let (x, y) = (TaggedBackend::start(b'X').await, TaggedBackend::start(b'Y').await);
    let (listen, admin) = (closed_port().await, closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, tcp_route_config(listen, admin, x.addr)).unwrap();
    let mut child = ChildProxy::spawn(&config, dir.path().join("snigate.log"));
    child.wait_ready(admin).await;
    assert_eq!(reached_tag(listen).await, Ok(b'X'));

    // An editor-style replace: write a temp file, rename it over the config.
    replace_file(&config, &tcp_route_config(listen, admin, y.addr));
    wait_for_tag(listen, b'Y', Duration::from_secs(10), &child, "after a rename over the config").await;

    // An in-place rewrite of the same file.
    std::fs::write(&config, tcp_route_config(listen, admin, x.addr)).unwrap();
    wait_for_tag(listen, b'X', Duration::from_secs(10), &child, "after an in-place write").await;
    child.wait_for_log("reloaded after a file change").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let (x, y) = (TaggedBackend::start(b'X').await, TaggedBackend::start(b'Y').await);
    let (listen, admin) = (closed_port().await, closed_port().await);
    // The config path is a symlink into another directory: the watch (on the symlink's
    // directory) never sees the target change, so only SIGHUP can make the proxy re-read it.
    let watched_dir = tempfile::tempdir().unwrap();
    let real_dir = tempfile::tempdir().unwrap();
    let real = real_dir.path().join("routes.yaml");
    std::fs::write(&real, tcp_route_config(listen, admin, x.addr)).unwrap();
    let config = watched_dir.path().join("routes.yaml");
    std::os::unix::fs::symlink(&real, &config).unwrap();
    let mut child = ChildProxy::spawn(&config, watched_dir.path().join("snigate.log"));
    child.wait_ready(admin).await;
    assert_eq!(reached_tag(listen).await, Ok(b'X'));

    replace_file(&real, &tcp_route_config(listen, admin, y.addr));
    // Well past the watch's 300 ms debounce: nothing reloaded the change yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reached_tag(listen).await, Ok(b'X'), "the change must not be picked up before SIGHUP");

    child.signal("HUP");
    wait_for_tag(listen, b'Y', Duration::from_secs(10), &child, "after SIGHUP").await;
    // The new table serves before the signal handler writes its line: wait for the line too.
    child.wait_for_log("SIGHUP: reloaded").await;

    // SIGHUP with a broken file keeps the running config.
    replace_file(&real, "listen: [\n");
    child.signal("HUP");
    eventually(Duration::from_secs(10), "the failed SIGHUP reload to be logged", || {
        let log = child.log_text();
        async move {
            if log.contains("SIGHUP: reload failed") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        }
    })
    .await;
    assert_eq!(reached_tag(listen).await, Ok(b'Y'), "a broken file at SIGHUP keeps the running config");
}

// ---------------------------------------------------------------------------------------------
// Top-level settings at reload.

/// A PROXY v2 header claiming the client is 203.0.113.7:4242, followed by `payload`.
fn inbound_v2(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let mut addresses = vec![203, 0, 113, 7];
    addresses.extend_from_slice(&to.ip().octets());
    addresses.extend_from_slice(&4242u16.to_be_bytes());
    addresses.extend_from_slice(&to.port().to_be_bytes());
    let mut bytes = crate::support::proxy::encode_v2_for_tests(
        crate::support::proxy::CMD_PROXY,
        crate::support::proxy::FAM_TCP4,
        &addresses,
        &[],
    );
    bytes.extend_from_slice(payload);
    bytes
}

/// Narrowing `accept_proxy_from` is a trust decision: after the reload, 127.0.0.1 is no longer
/// allowed to claim another client address. (`Server::bind` copies `accept_proxy_from` and the
/// `limits` into the connection `Context` once; `server::reload` only swaps routes and
/// listeners, so the old trust list silently stays.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_narrowed_accept_proxy_from() {
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = [RouteYaml::new("plain", "tcp").server(backend.addr)];
    // 127.0.0.0/8 first, then no trusted peer at all.
    let base = config_with_limits(&["127.0.0.1:0"], "plain", LIMITS, &route);
    let proxy = start_proxy(&format!("accept_proxy_from: [\"127.0.0.0/8\"]\n{base}")).await;
    let addr = proxy.addr(0);

    let mut trusted = TcpStream::connect(addr).await.unwrap();
    trusted.write_all(&inbound_v2(addr, b"hello")).await.unwrap();
    assert_eq!(read_n(&mut trusted, 5).await, b"hello");
    let seen = backend.accepted().await;
    assert_eq!(seen.v2().src, Some("203.0.113.7:4242".parse().unwrap()), "a trusted peer names the client");

    replace_file(&proxy.config_path, &base);
    within("reload", proxy.reload.reload()).await.expect("reload without accept_proxy_from");
    let before = backend.accept_count();
    let mut now_untrusted = TcpStream::connect(addr).await.unwrap();
    now_untrusted.write_all(&inbound_v2(addr, b"hello")).await.unwrap();
    let mut answer = [0u8; 64];
    match within("the proxy to answer the PROXY header", now_untrusted.read(&mut answer)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "127.0.0.1 is no longer in accept_proxy_from, yet its PROXY header was accepted and the payload \
             relayed ({:?}); the backend was told the client is {:?}",
            String::from_utf8_lossy(&answer[..n]),
            backend.accepted().await.v2().src
        ),
    }
    assert_eq!(backend.accept_count(), before, "a refused PROXY header never reaches the backend");
    proxy.shutdown().await;
}
