//! `tls.crl_urls`: CRLs fetched over HTTP from a server in the test, at start and at each
//! refresh; a server gone keeps the last good CRL (and counts failures); a route whose CRL never
//! came refuses client certificates until it does; `revoke_live` applies to fetched CRLs; the
//! CRL gauges are in /metrics. Real TLS handshakes throughout, on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::ops::*;
use crate::support::tls::{client_config, expect_refused, simple_client, tls_connect, ClientOpts, Versions};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a test waits for a refresh with `crl_refresh: 1s` (a fetch each second or so).
const REFRESH_WAIT: Duration = Duration::from_secs(10);
/// Largest request head the test server reads.
const MAX_REQUEST_HEAD: usize = 8192;

/// An HTTP server answering every GET with the bytes it is given (404 while it has none).
struct CrlServer {
    addr: SocketAddr,
    served: Arc<Mutex<Option<Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CrlServer {
    async fn start(bytes: Option<Vec<u8>>) -> CrlServer {
        CrlServer::start_on("127.0.0.1:0".parse().unwrap(), bytes).await
    }

    async fn start_on(addr: SocketAddr, bytes: Option<Vec<u8>>) -> CrlServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(bytes));
        let requests = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(listener, served.clone(), requests.clone()));
        CrlServer { addr, served, requests, task }
    }

    fn url(&self) -> String {
        format!("http://{}/ca.crl", self.addr)
    }

    fn serve_bytes(&self, bytes: Vec<u8>) {
        *self.served.lock().unwrap() = Some(bytes);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops answering: the listener closes, connects are refused.
    async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

async fn serve(listener: TcpListener, served: Arc<Mutex<Option<Vec<u8>>>>, requests: Arc<AtomicUsize>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else { continue };
        let (served, requests) = (served.clone(), requests.clone());
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            requests.fetch_add(1, Ordering::SeqCst);
            let body = served.lock().unwrap().clone();
            let response = match body {
                Some(body) => {
                    let mut out =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                            .into_bytes();
                    out.extend_from_slice(&body);
                    out
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = tcp.write_all(&response).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// The test PKI: a server certificate for `c.test`, a client CA and two of its clients.
struct Keys {
    pki: Pki,
    server_ca: Ca,
    client_ca: Ca,
    server: Leaf,
    good: Leaf,
    bad: Leaf,
}

impl Keys {
    fn new() -> Keys {
        let pki = Pki::new();
        let server_ca = pki.ca("server-ca", "Server CA");
        let client_ca = pki.ca("client-ca", "Client CA");
        let server = server_ca.server_cert("c", &["c.test"]);
        let good = client_ca.client_cert("good", &ClientSpec::cn("device-good"));
        let bad = client_ca.client_cert("bad", &ClientSpec::cn("device-bad"));
        Keys { pki, server_ca, client_ca, server, good, bad }
    }

    /// A CRL of the client CA revoking `revoked`, PEM.
    fn crl(&self, revoked: &[&Leaf]) -> Vec<u8> {
        std::fs::read(self.client_ca.crl("served", revoked)).unwrap()
    }
}

struct Setup {
    keys: Keys,
    _backend: TestBackend,
    proxy: RunningProxy,
}

impl Setup {
    fn client(&self, leaf: &Leaf) -> Arc<rustls::ClientConfig> {
        simple_client(&self.keys.server_ca.cert_der, Some(leaf))
    }

    async fn accepted(&self, leaf: &Leaf) -> Result<(), String> {
        let (mut tls, _) = tls_connect(self.proxy.addr(0), self.client(leaf), "c.test").await?;
        echo(&mut tls, b"hi").await.map_err(|e| format!("echo: {e:?}"))
    }

    async fn refused(&self, leaf: &Leaf) -> String {
        expect_refused(self.proxy.addr(0), self.client(leaf), "c.test").await
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&parse_exposition(&self.proxy.metrics.encode()), name, labels)
    }

    fn handshake_failures(&self, reason: &str) -> Option<f64> {
        self.metric("snigate_handshake_failures_total", &[("route", "c"), ("reason", reason)])
    }

    /// The count of `reason` once the refusals in flight are counted: it reads the same twice,
    /// 300 ms apart (at most 10 tries).
    async fn settled_handshake_failures(&self, reason: &str) -> f64 {
        let mut last = self.handshake_failures(reason).unwrap_or(0.0);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.handshake_failures(reason).unwrap_or(0.0);
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// Waits until `count` handshakes failed for `reason` (the client may see the refusal before
    /// the proxy counts it).
    async fn counted(&self, reason: &str, count: f64) {
        eventually(Duration::from_secs(3), &format!("{count} handshake failures {reason}"), || async move {
            match self.handshake_failures(reason) {
                Some(counted) if counted == count => Ok(()),
                other => Err(format!("counted {other:?}")),
            }
        })
        .await;
    }
}

/// A proxy with an admin endpoint and one route `c` requiring client certificates of the client
/// CA, checked against the CRL at `url`, refreshed every second.
async fn start(keys: Keys, url: &str, extra_tls: &[&str]) -> Setup {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let mut route = RouteYaml::new("c", "terminate")
        .sni(&["c.test"])
        .cert(&keys.server)
        .client_auth("required", &keys.client_ca)
        .tls(format!("crl_urls: [{}]", q(url)))
        .tls("crl_refresh: 1s")
        .server(backend.addr);
    for line in extra_tls {
        route = route.tls(*line);
    }
    let yaml = format!("admin: \"127.0.0.1:0\"\n{}", config_v4("reject", &[route]));
    let proxy = start_proxy(&yaml).await;
    Setup { keys, _backend: backend, proxy }
}

/// A CRL server serving `first` (none: 404) and a proxy using it.
async fn setup_with_server(first: impl Fn(&Keys) -> Option<Vec<u8>>, extra_tls: &[&str]) -> (Setup, CrlServer) {
    let keys = Keys::new();
    let server = CrlServer::start(first(&keys)).await;
    let started = Instant::now();
    let setup = start(keys, &server.url(), extra_tls).await;
    println!("proxy started with its CRL fetched in {:?}", started.elapsed());
    (setup, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_fetched_at_start_refuses_the_revoked_certificate_and_its_gauges_are_exported() {
    let (s, server) = setup_with_server(|keys| Some(keys.crl(&[&keys.bad])), &[]).await;
    let url = server.url();
    s.accepted(&s.keys.good).await.expect("a certificate the fetched CRL does not revoke is served");
    println!("revoked: {}", s.refused(&s.keys.bad).await);
    s.counted("certificate_revoked", 1.0).await;

    let samples = scrape(s.proxy.admin.expect("admin endpoint")).await;
    let url_label = [("url", url.as_str())];
    let next_update = metric(&samples, "snigate_crl_next_update_timestamp_seconds", &url_label);
    assert_eq!(next_update, Some(3_755_376_000.0), "the CRL's nextUpdate, 2089-01-01");
    let age = metric(&samples, "snigate_crl_age_seconds", &url_label).expect("age gauge");
    let this_update = 1_704_067_200.0; // 2024-01-01, as the test PKI writes it
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((age - (now - this_update)).abs() < 60.0, "age since thisUpdate: {age}");
    assert_eq!(metric(&samples, "snigate_crl_fetch_failures_total", &url_label), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_crl_is_picked_up_at_the_next_refresh() {
    let (s, server) = setup_with_server(|keys| Some(keys.crl(&[])), &[]).await;
    s.accepted(&s.keys.bad).await.expect("not revoked yet");
    server.serve_bytes(s.keys.crl(&[&s.keys.bad]));
    let changed = Instant::now();
    eventually(REFRESH_WAIT, "the refreshed CRL to refuse the newly revoked certificate", || async {
        let attempt = s.accepted(&s.keys.bad).await;
        match s.handshake_failures("certificate_revoked") {
            Some(revoked) if revoked >= 1.0 && attempt.is_err() => Ok(()),
            revoked => Err(format!("attempt {attempt:?}, revocations counted {revoked:?}")),
        }
    })
    .await;
    println!("new CRL served to the revoked certificate refused: {:?}", changed.elapsed());
    assert!(server.requests() >= 2, "fetched at start and again at a refresh");
    println!("after the refresh: {}", s.refused(&s.keys.bad).await);
    s.accepted(&s.keys.good).await.expect("the good certificate still passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_server_gone_keeps_the_last_good_crl_and_counts_failures() {
    let (s, server) = setup_with_server(|keys| Some(keys.crl(&[&keys.bad])), &[]).await;
    let url = server.url();
    s.refused(&s.keys.bad).await;
    server.stop().await;
    eventually(REFRESH_WAIT, "failed fetches to be counted", || async {
        match s.metric("snigate_crl_fetch_failures_total", &[("url", url.as_str())]) {
            Some(failures) if failures >= 2.0 => Ok(()),
            other => Err(format!("failures: {other:?}")),
        }
    })
    .await;
    println!("revoked, with the CRL server gone: {}", s.refused(&s.keys.bad).await);
    s.accepted(&s.keys.good).await.expect("the last good CRL keeps serving the good certificate");
    s.counted("certificate_revoked", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_crl_never_came_refuses_client_certificates_until_it_does() {
    let port = closed_port().await;
    let s = start(Keys::new(), &format!("http://{port}/ca.crl"), &[]).await;
    println!("no CRL yet: {}", s.refused(&s.keys.good).await);
    s.counted("revocation_unknown", 1.0).await;
    let server = CrlServer::start_on(port, Some(s.keys.crl(&[&s.keys.bad]))).await;
    let up = Instant::now();
    eventually(REFRESH_WAIT, "the route to accept once its CRL is fetched", || s.accepted(&s.keys.good)).await;
    println!("CRL server up to the route accepting: {:?}", up.elapsed());
    assert!(server.requests() >= 1);
    s.refused(&s.keys.bad).await;
    s.counted("certificate_revoked", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_live_closes_a_session_a_fetched_crl_revokes() {
    let (s, server) = setup_with_server(|keys| Some(keys.crl(&[])), &["revoke_live: true"]).await;
    let (mut bad, _) = tls_connect(s.proxy.addr(0), s.client(&s.keys.bad), "c.test").await.unwrap();
    let (mut good, _) = tls_connect(s.proxy.addr(0), s.client(&s.keys.good), "c.test").await.unwrap();
    echo(&mut bad, b"b-1").await.unwrap();
    echo(&mut good, b"g-1").await.unwrap();
    server.serve_bytes(s.keys.crl(&[&s.keys.bad]));
    let changed = Instant::now();
    let closed = within_for(REFRESH_WAIT, "the revoked live session to be closed", read_until_closed(&mut bad)).await;
    println!("new CRL served to the live session closed: {:?}", changed.elapsed());
    assert!(closed.bytes().is_empty(), "no data after revocation: {closed:?}");
    echo(&mut good, b"g-2").await.expect("the good session stays");
    eventually(Duration::from_secs(3), "the close to be counted as certificate_revoked", || async {
        match s.metric("snigate_connection_closes_total", &[("route", "c"), ("reason", "certificate_revoked")]) {
            Some(closes) if closes >= 1.0 => Ok(()),
            other => Err(format!("closes: {other:?}")),
        }
    })
    .await;
}

#[test]
fn check_reports_a_crl_url_it_cannot_fetch_at_its_position_without_fetching() {
    let keys = Keys::new();
    let route = RouteYaml::new("c", "terminate")
        .sni(&["c.test"])
        .cert(&keys.server)
        .client_auth("required", &keys.client_ca)
        .tls("crl_urls: [\"http://127.0.0.1:9/ok.crl\", \"https://crl.example.test/a.crl\", \"ldap://x/y\"]")
        .tls("crl_refresh: 500ms")
        .server("127.0.0.1:1");
    let yaml = config_v4("reject", &[route]);
    let errors = snigate::config::parse(&yaml, &keys.pki.path().join("routes.yaml")).unwrap_err();
    let text = errors.to_string();
    println!("{text}");
    let line_of = |needle: &str| yaml.lines().position(|line| line.contains(needle)).unwrap() + 1;
    assert_eq!(errors.0.len(), 3, "{text}");
    assert!(errors.0.iter().any(|e| e.line == line_of("crl_refresh") && e.message.contains("at least")), "{text}");
    let https = errors.0.iter().find(|e| e.message.contains("https is not supported")).expect(&text);
    assert_eq!(https.line, line_of("crl_urls"), "{text}");
    assert!(https.column > 1, "{text}");
    assert!(errors.0.iter().any(|e| e.message.contains("must start with http://")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_server_that_never_answers_delays_the_start_by_the_bounded_wait_only() {
    // Connects complete into the listen backlog; nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ca.crl", silent.local_addr().unwrap());
    let started = Instant::now();
    let s = start(Keys::new(), &url, &[]).await;
    let waited = started.elapsed();
    println!("start with a silent CRL server took {waited:?}");
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(9), "{waited:?}");
    println!("no CRL yet: {}", s.refused(&s.keys.good).await);
    s.counted("revocation_unknown", 1.0).await;
}

/// One connection with a device's kept config: was it resumed, and did the echo come back?
async fn resumed_and_served(s: &Setup, client: &Arc<rustls::ClientConfig>) -> (bool, bool) {
    let Ok((mut tls, _)) = tls_connect(s.proxy.addr(0), client.clone(), "c.test").await else {
        return (false, false);
    };
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    (resumed, echo(&mut tls, b"hi").await.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_a_certificate_a_fetched_crl_revokes_is_refused() {
    let (s, server) = setup_with_server(|keys| Some(keys.crl(&[])), &[]).await;
    let devices = [Versions::Tls13Only, Versions::Tls12Only].map(|versions| {
        client_config(ClientOpts {
            roots: vec![s.keys.server_ca.cert_der.clone()],
            identity: Some(s.keys.bad.identity()),
            versions,
            ..Default::default()
        })
    });
    for device in &devices {
        assert_eq!(resumed_and_served(&s, device).await, (false, true), "a full handshake first");
        assert_eq!(resumed_and_served(&s, device).await, (true, true), "then resumed, not revoked yet");
    }
    server.serve_bytes(s.keys.crl(&[&s.keys.bad]));
    eventually(REFRESH_WAIT, "the refreshed CRL to refuse a full handshake", || async {
        match s.accepted(&s.keys.bad).await {
            Err(_) => Ok(()),
            Ok(()) => Err("still accepted".to_string()),
        }
    })
    .await;
    for (device, version) in devices.iter().zip(["TLS 1.3", "TLS 1.2"]) {
        let before = s.settled_handshake_failures("certificate_revoked").await;
        let (resumed, served) = resumed_and_served(&s, device).await;
        // The ticket still opens (the CA and certificates did not change): the re-check refuses.
        assert!(resumed && !served, "{version}: resumed {resumed}, served {served}");
        s.counted("certificate_revoked", before + 1.0).await;
    }
}
