//! `routes[].limits` and fair handshake admission: one tenant's reconnect storm is held to its
//! own limits (open connections, handshakes in progress, handshakes per second) and cannot take
//! another route's handshake slots; a refused client is told cheaply (a TLS alert before any
//! handshake, or on a tcp `mqtt:` route the CONNACK) and counted per route and reason.

use std::time::{Duration, Instant};

use crate::mqtt_routes::{close_counted, connack, connect, count_reaches};
use crate::support::hello::raw_client_hello;
use crate::support::ops::eventually;
use crate::support::tls::{expect_refused, simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The fatal `internal_error` alert snigate refuses a TLS client with when a limit says no.
const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

fn limits(extra: &str) -> String {
    format!("limits: {{ hello_timeout: 3s, idle_timeout: 1m, handshake_timeout: 5s, drain_timeout: 1s, {extra} }}")
}

/// Two terminate routes to `backend` (no PROXY header): `a` for a.test with `a_limits`, `b` for
/// b.test without limits, both serving `leaf` (valid for both names).
fn tenants(leaf: &Leaf, backend: &TestBackend, a_limits: &str) -> [RouteYaml; 2] {
    let route = |name: &str, sni: &str| {
        RouteYaml::new(name, "terminate").sni(&[sni]).cert(leaf).server(backend.addr).proxy("none")
    };
    [route("a", "a.test").limits(a_limits), route("b", "b.test")]
}

/// A raw ClientHello for `sni`, sent on a new connection that never finishes the handshake.
async fn hello_only(proxy: &RunningProxy, sni: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr(0)).await.unwrap();
    stream.write_all(&raw_client_hello(Some(sni.as_bytes()), &[])).await.unwrap();
    stream
}

/// The first bytes the proxy answers a raw hello with: the server's flight starts with a
/// handshake record (0x16); a refusal is the whole alert record, then EOF.
async fn first_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 7];
    within("the proxy's answer to the hello", stream.read_exact(&mut buf)).await.unwrap();
    buf.to_vec()
}

async fn echo_session(proxy: &RunningProxy, ca: &Ca, sni: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (mut tls, _) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), sni)
        .await
        .unwrap_or_else(|error| panic!("session to {sni}: {error}"));
    tls.write_all(b"ping").await.unwrap();
    assert_eq!(within("echo", read_n(&mut tls, 4)).await, b"ping");
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_its_max_connections_refuses_with_an_alert_while_other_routes_are_served() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("ab", &["a.test", "b.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let routes = tenants(&leaf, &backend, "{max_connections: 2}");
    let proxy = start_proxy(&config_with_limits(&["127.0.0.1:0"], "reject", &limits(""), &routes)).await;

    let first = echo_session(&proxy, &ca, "a.test").await;
    let _second = echo_session(&proxy, &ca, "a.test").await;
    let refused = expect_refused(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await;
    assert!(refused.contains("InternalError"), "refused with the internal_error alert: {refused}");
    close_counted(&proxy, "a", "route_connection_limit").await;
    assert_eq!(backend.accept_count(), 2, "a refused client reaches no backend");

    // The other route has its own count (and only the proxy's max_connections).
    let _b: Vec<_> = [echo_session(&proxy, &ca, "b.test").await, echo_session(&proxy, &ca, "b.test").await].into();
    let _b3 = echo_session(&proxy, &ca, "b.test").await;

    // The place comes back when a session ends (bounded retries while the proxy sees the close).
    drop(first);
    eventually(WAIT, "a's place to come back", || async {
        tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "a.test").await.map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_handshake_rate_a_client_waits_for_a_token_then_is_refused_before_any_handshake() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("ab", &["a.test", "b.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let routes = tenants(&leaf, &backend, "{handshakes_per_second: 1, handshake_burst: 1}");
    let proxy = start_proxy(&config_with_limits(&["127.0.0.1:0"], "reject", &limits(""), &routes)).await;

    // Three hellos at once, one token per second: the first is answered at once, the second
    // after waiting for the next token (≤ 1 s), the third would wait 2 s: refused at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut client = hello_only(&proxy, "a.test").await;
        tasks.push(tokio::spawn(async move {
            let answer = first_answer(&mut client).await;
            (client, answer, started.elapsed())
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(within("an answer", task).await.unwrap());
    }
    let summary: Vec<_> = answers.iter().map(|(_, answer, at)| (answer[0], *at)).collect();
    let handshakes: Vec<_> = answers.iter().filter(|(_, answer, _)| answer[0] == 0x16).map(|(_, _, at)| *at).collect();
    assert_eq!(handshakes.len(), 2, "{summary:?}");
    assert!(handshakes.iter().any(|at| *at >= Duration::from_millis(500)), "one waited for a token: {summary:?}");
    let (refused, _, refused_at) =
        answers.iter_mut().find(|(_, answer, _)| answer[..] == ALERT_INTERNAL_ERROR).expect("one refused");
    assert!(*refused_at < Duration::from_millis(900), "refused without waiting: {summary:?}");
    // The refused client got the alert and nothing else: no ServerHello, the connection closed.
    assert!(read_until_closed(refused).await.bytes().is_empty());
    close_counted(&proxy, "a", "handshake_rate").await;

    // Route b has no rate: served at once, however many a is refused.
    for _ in 0..3 {
        echo_session(&proxy, &ca, "b.test").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_flooding_handshakes_cannot_keep_another_routes_client_behind_its_herd() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("ab", &["a.test", "b.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let routes = tenants(&leaf, &backend, "{}");
    let proxy =
        start_proxy(&config_with_limits(&["127.0.0.1:0"], "reject", &limits("max_handshakes: 4"), &routes)).await;

    // Route a holds every slot with handshakes that never finish, and queues six more.
    let mut holding = Vec::new();
    for _ in 0..4 {
        let mut stalled = hello_only(&proxy, "a.test").await;
        assert_eq!(first_answer(&mut stalled).await[0], 0x16, "a slot was free");
        holding.push(stalled);
    }
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(hello_only(&proxy, "a.test").await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // b's client arrives last. With first-come-first-served slots it would wait behind a's six
    // (each holding its slot for handshake_timeout) and be refused after the 1 s queue wait.
    let b = tokio::spawn({
        let (addr, config) = (proxy.addr(0), simple_client(&ca.cert_der, None));
        async move { tls_connect(addr, config, "b.test").await.map(|_| Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two of a's handshakes end: the freed slots go to a and b in turn.
    drop(holding.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(holding.pop());
    let served = within("b's handshake", b).await.unwrap();
    assert!(served.is_ok(), "b was kept behind a's queue: {served:?}");
    // The first freed slot went to a's queue, the second to b; b's, once its handshake was done,
    // to a's queue again if its waiters were still within their 1 s wait.
    let mut answered = 0;
    for client in &mut queued {
        let mut byte = [0u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_millis(200), client.read(&mut byte)).await {
            answered += usize::from(byte[0] == 0x16);
        }
    }
    assert!((1..=2).contains(&answered), "a's queue got {answered} slots, b one in between");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_its_max_handshakes_leaves_the_other_slots_to_other_routes() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CA");
    let leaf = ca.server_cert("ab", &["a.test", "b.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let routes = tenants(&leaf, &backend, "{max_handshakes: 2}");
    let proxy =
        start_proxy(&config_with_limits(&["127.0.0.1:0"], "reject", &limits("max_handshakes: 4"), &routes)).await;

    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut client = hello_only(&proxy, "a.test").await;
        assert_eq!(first_answer(&mut client).await[0], 0x16);
        stalled.push(client);
    }
    // a is at its own cap: its third waits, then is refused with the alert, with slots still free.
    let mut third = hello_only(&proxy, "a.test").await;
    // Meanwhile b takes the proxy's free slots at once.
    for _ in 0..3 {
        echo_session(&proxy, &ca, "b.test").await;
    }
    assert_eq!(first_answer(&mut third).await, ALERT_INTERNAL_ERROR);
    close_counted(&proxy, "a", "handshake_limit").await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_mqtt_route_answers_its_limits_with_quota_and_rate_connacks() {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::None)).await;
    let quota =
        RouteYaml::new("quota", "tcp").mqtt("{}").limits("{max_connections: 1}").server(backend.addr).proxy("none");
    let yaml = config_with_limits(&["127.0.0.1:0"], "quota", &limits(""), &[quota]);
    let proxy = start_proxy(&yaml).await;

    // The first session takes the route's one place (the echo backend returns its CONNECT).
    let mut first = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let sent = connect(5, "first", None);
    first.write_all(&sent).await.unwrap();
    assert_eq!(within("the forwarded CONNECT", read_n(&mut first, sent.len())).await, sent);
    for (level, expected) in [(5, vec![0x20, 0x03, 0x00, 0x97]), (4, vec![0x20, 0x02, 0x00, 0x03])] {
        let mut refused = TcpStream::connect(proxy.addr(0)).await.unwrap();
        assert_eq!(connack(&mut refused, &connect(level, "second", None)).await, expected, "MQTT level {level}");
    }
    count_reaches(
        &proxy,
        "snigate_mqtt_refusals_total",
        &[("route", "quota"), ("reason", "quota_exceeded")],
        2.0,
        "two quota refusals",
    )
    .await;
    close_counted(&proxy, "quota", "route_connection_limit").await;
    drop(first);

    // The rate: one token, then one per second; the third CONNECT at once would wait 2 s.
    let rate = RouteYaml::new("rate", "tcp")
        .mqtt("{}")
        .limits("{handshakes_per_second: 1, handshake_burst: 1}")
        .server(backend.addr)
        .proxy("none");
    let proxy = start_proxy(&config_with_limits(&["127.0.0.1:0"], "rate", &limits(""), &[rate])).await;
    let mut tasks = Vec::new();
    for id in ["r1", "r2", "r3"] {
        let mut client = TcpStream::connect(proxy.addr(0)).await.unwrap();
        client.write_all(&connect(5, id, None)).await.unwrap();
        tasks.push(tokio::spawn(async move { read_n(&mut client, 4).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(within("an answer", task).await.unwrap());
    }
    let rate_refusals = answers.iter().filter(|answer| answer[..] == [0x20, 0x03, 0x00, 0x9F]).count();
    assert_eq!(rate_refusals, 1, "{answers:x?}");
    count_reaches(
        &proxy,
        "snigate_mqtt_refusals_total",
        &[("route", "rate"), ("reason", "rate_exceeded")],
        1.0,
        "one rate refusal",
    )
    .await;
}
