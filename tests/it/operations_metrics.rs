//! Operations: the admin endpoint. After a mix of traffic (terminated, passed through, unknown
//! SNI, hello timeout, failed client-certificate handshake) `/metrics` — scraped over plain HTTP
//! and parsed here without any crate — shows the expected counters, gauges and histograms;
//! `/healthz` and `/readyz` answer 200, anything else 404.

use std::time::{Duration, Instant};

use crate::support::ops::*;
use crate::support::tls::{expect_refused, server_config, simple_client, tls_connect};
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// rcgen test certificates in tests/it/support/pki.rs expire 2090-01-01T00:00:00Z.
const TEST_CERT_NOT_AFTER: f64 = 3_786_912_000.0;

// ---------------------------------------------------------------------------------------------
// Support: HTTP, metrics, polling.

/// The sum of every sample called `name` whose labels include `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
        .sum()
}

/// Sends `message` over TLS and expects it back, then closes cleanly (close_notify, EOF back).
async fn echo_and_close(mut tls: tokio_rustls::client::TlsStream<TcpStream>, message: &[u8]) {
    tls.write_all(message).await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(read_n(&mut tls, message.len()).await, message);
    tls.shutdown().await.unwrap();
    let closed = read_until_closed(&mut tls).await;
    assert!(closed.bytes().is_empty(), "nothing after the echo: {closed:?}");
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_show_the_expected_counters() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Metrics CA");
    let client_ca = pki.ca("client-ca", "Metrics client CA");
    let term_leaf = ca.server_cert("t", &["t.test"]);
    let pass_leaf = ca.server_cert("p", &["p.test"]);
    let mtls_leaf = ca.server_cert("m", &["m.test"]);
    let term_backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let pass_backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&pass_leaf, &[]))).await;
    let mtls_backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let routes = [
        RouteYaml::new("term", "terminate").sni(&["t.test"]).cert(&term_leaf).server(term_backend.addr),
        RouteYaml::new("pass", "passthrough").sni(&["p.test"]).server(pass_backend.addr),
        RouteYaml::new("mtls", "terminate")
            .sni(&["m.test"])
            .cert(&mtls_leaf)
            .client_auth("required", &client_ca)
            .server(mtls_backend.addr),
    ];
    let limits = "limits: { hello_timeout: 1s, idle_timeout: 1m, handshake_timeout: 3s, drain_timeout: 1s, close_jitter: 100ms }";
    let config = format!("admin: \"127.0.0.1:0\"\n{}", config_with_limits(&["127.0.0.1:0"], "reject", limits, &routes));
    let proxy = start_proxy(&config).await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.expect("admin endpoint"));
    let client = simple_client(&ca.cert_der, None);

    // A terminated connection with 1000 bytes each way.
    let term_payload = vec![b't'; 1000];
    let (tls, _) = tls_connect(addr, client.clone(), "t.test").await.expect("terminate route");
    echo_and_close(tls, &term_payload).await;
    // A passthrough connection (the backend terminates) with 100 bytes of plaintext.
    let (tls, _) = tls_connect(addr, client.clone(), "p.test").await.expect("passthrough route");
    echo_and_close(tls, &[b'p'; 100]).await;
    // An unknown SNI.
    let mut unknown = TcpStream::connect(addr).await.unwrap();
    unknown.write_all(&crate::support::hello::raw_client_hello(Some(b"nope.test"), &[])).await.unwrap();
    assert_eq!(read_until_closed(&mut unknown).await.bytes(), UNRECOGNIZED_NAME_ALERT);
    // A hello that never completes (hello_timeout 1 s).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let closed = read_until_closed(&mut slow).await;
    assert!(closed.bytes().is_empty(), "hello timeout closes silently: {closed:?}");
    // A handshake that fails: no client certificate on a route that requires one.
    let refused = expect_refused(addr, client.clone(), "m.test").await;
    println!("missing client certificate: {refused}");

    // Counters are updated when connections end: poll until everything has been counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        let samples = scrape(admin).await;
        let active = total(&samples, "snigate_connections_active", &[]);
        let term_in = total(&samples, "snigate_bytes_total", &[("route", "term"), ("direction", "client_to_backend")]);
        let failures = total(&samples, "snigate_handshake_failures_total", &[("route", "mtls")]);
        if active == 0.0 && term_in >= 1000.0 && failures >= 1.0 {
            break samples;
        }
        assert!(Instant::now() < deadline, "metrics did not settle (active {active}, term bytes in {term_in})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let get = |name: &str, labels: &[(&str, &str)]| metric(&samples, name, labels);

    assert_eq!(get("snigate_connections_total", &[("route", "term"), ("mode", "terminate")]), Some(1.0));
    assert_eq!(get("snigate_connections_total", &[("route", "pass"), ("mode", "passthrough")]), Some(1.0));
    assert_eq!(get("snigate_connections_total", &[("route", "mtls"), ("mode", "terminate")]), Some(1.0));
    assert!(total(&samples, "snigate_connections_accepted_total", &[]) >= 5.0);
    for (route, direction, at_least) in [
        ("term", "client_to_backend", 1000.0),
        ("term", "backend_to_client", 1000.0),
        ("pass", "client_to_backend", 100.0),
        ("pass", "backend_to_client", 100.0),
    ] {
        let bytes = get("snigate_bytes_total", &[("route", route), ("direction", direction)]).unwrap_or(0.0);
        assert!(bytes >= at_least, "snigate_bytes_total{{route={route},direction={direction}}} = {bytes} < {at_least}");
    }
    let rejected_unknown = get("snigate_connections_rejected_total", &[("reason", "unknown_sni")]).unwrap_or(0.0);
    assert!(rejected_unknown >= 1.0, "unknown_sni rejections: {rejected_unknown}");
    let hello_timeouts = get("snigate_hello_rejects_total", &[("reason", "hello_timeout")]).unwrap_or(0.0);
    assert!(hello_timeouts >= 1.0, "hello_timeout rejects: {hello_timeouts}");
    let failures: Vec<_> =
        samples.iter().filter(|s| s.name == "snigate_handshake_failures_total").map(|s| (&s.labels, s.value)).collect();
    println!("handshake failures: {failures:?}");
    assert!(total(&samples, "snigate_handshake_failures_total", &[("route", "mtls")]) >= 1.0);
    assert!(get("snigate_handshake_duration_seconds_count", &[("route", "term")]).unwrap_or(0.0) >= 1.0);
    assert!(get("snigate_handshake_duration_seconds_sum", &[("route", "term")]).unwrap_or(-1.0) >= 0.0);
    for route in ["term", "pass", "mtls"] {
        assert_eq!(total(&samples, "snigate_connections_active", &[("route", route)]), 0.0, "active on {route}");
    }
    assert!(get("snigate_config_reloads_total", &[("result", "success")]).unwrap_or(0.0) >= 1.0);
    assert!(get("snigate_config_last_reload_success_timestamp_seconds", &[]).unwrap_or(0.0) > 1.6e9);
    assert_eq!(get("snigate_certificate_expiry_timestamp_seconds", &[("route", "term")]), Some(TEST_CERT_NOT_AFTER));
    assert_eq!(get("snigate_certificate_expiry_timestamp_seconds", &[("route", "mtls")]), Some(TEST_CERT_NOT_AFTER));
    assert_eq!(
        get("snigate_certificate_expiry_timestamp_seconds", &[("route", "pass")]),
        None,
        "passthrough has no cert"
    );

    // The HTTP side of the admin endpoint.
    let metrics = http_get(admin, "/metrics").await.unwrap();
    let content_type = metrics.headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.clone());
    let content_type = content_type.expect("/metrics has a content type");
    assert!(
        content_type.starts_with("application/openmetrics-text") || content_type.starts_with("text/plain"),
        "content type {content_type:?}"
    );
    if content_type.starts_with("application/openmetrics-text") {
        assert!(metrics.body.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    }
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/no-such-page", 404)] {
        let response = http_get(admin, path).await.unwrap();
        assert_eq!(response.status, status, "GET {path}: {}", response.body);
    }
    proxy.shutdown().await;
}

/// `Metrics::route` caches a route's handles by name only, with the `mode` label of the first
/// connection: after a reload changes the route's mode, its connections are still counted
/// under the old mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_metrics_follow_a_mode_change_at_reload() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Mode-change CA");
    let leaf = ca.server_cert("x", &["x.test"]);
    let tls_backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&leaf, &[]))).await;
    let plain_backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let limits = "limits: { hello_timeout: 3s, idle_timeout: 1m, drain_timeout: 1s, close_jitter: 100ms }";
    let config = |route: RouteYaml| {
        format!("admin: \"127.0.0.1:0\"\n{}", config_with_limits(&["127.0.0.1:0"], "reject", limits, &[route]))
    };
    let passthrough = RouteYaml::new("x", "passthrough").sni(&["x.test"]).server(tls_backend.addr);
    let terminate = RouteYaml::new("x", "terminate").sni(&["x.test"]).cert(&leaf).server(plain_backend.addr);
    let proxy = start_proxy(&config(passthrough)).await;
    let (addr, admin) = (proxy.addr(0), proxy.admin.unwrap());
    let client = simple_client(&ca.cert_der, None);
    let (tls, _) = tls_connect(addr, client.clone(), "x.test").await.unwrap();
    echo_and_close(tls, b"passthrough").await;

    std::fs::write(&proxy.config_path, config(terminate)).unwrap();
    within("reload", proxy.reload.reload()).await.expect("reload to terminate");
    let (tls, _) = tls_connect(addr, client.clone(), "x.test").await.unwrap();
    echo_and_close(tls, b"terminate").await;
    assert_eq!(plain_backend.accept_count(), 1, "the second connection was terminated by the reloaded route");

    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        let samples = scrape(admin).await;
        if total(&samples, "snigate_connections_active", &[]) == 0.0 {
            break samples;
        }
        assert!(Instant::now() < deadline, "connections_active did not return to 0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_mode: Vec<_> =
        samples.iter().filter(|s| s.name == "snigate_connections_total").map(|s| (&s.labels, s.value)).collect();
    println!("connections_total: {by_mode:?}");
    assert_eq!(
        metric(&samples, "snigate_connections_total", &[("route", "x"), ("mode", "passthrough")]),
        Some(1.0),
        "only the connection before the reload was a passthrough connection"
    );
    assert_eq!(
        metric(&samples, "snigate_connections_total", &[("route", "x"), ("mode", "terminate")]),
        Some(1.0),
        "the connection after the reload is a terminate connection"
    );
    proxy.shutdown().await;
}

/// Gauges that describe the current config must not outlive it: after a reload removes a
/// terminate route and a health-checked server, their `snigate_certificate_expiry_timestamp_seconds`
/// and `snigate_backend_up` series must go (a stale `backend_up 0` or a stale expiry keeps an
/// alert firing for something that no longer exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_the_gauges_of_removed_routes_and_servers() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Stale-gauge CA");
    let a_leaf = ca.server_cert("a", &["a.test"]);
    let b_leaf = ca.server_cert("b", &["b.test"]);
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let gone = closed_port().await;
    let limits = "limits: { hello_timeout: 3s, idle_timeout: 1m, drain_timeout: 1s, close_jitter: 100ms }";
    let check = "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }";
    let a = RouteYaml::new("a", "terminate").sni(&["a.test"]).cert(&a_leaf).server(backend.addr).backend(check);
    let b = RouteYaml::new("b", "terminate").sni(&["b.test"]).cert(&b_leaf).server(backend.addr);
    let config = |routes: &[RouteYaml]| {
        format!("admin: \"127.0.0.1:0\"\n{}", config_with_limits(&["127.0.0.1:0"], "reject", limits, routes))
    };
    let proxy = start_proxy(&config(&[a.clone().server(gone), b])).await;
    let admin = proxy.admin.unwrap();
    let gone_label = gone.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let samples = scrape(admin).await;
        if metric(&samples, "snigate_backend_up", &[("route", "a"), ("server", &gone_label)]) == Some(0.0) {
            assert_eq!(
                metric(&samples, "snigate_certificate_expiry_timestamp_seconds", &[("route", "b")]),
                Some(TEST_CERT_NOT_AFTER)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the closed server was never marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&proxy.config_path, config(&[a])).unwrap();
    within("reload", proxy.reload.reload()).await.expect("reload without route b and the dead server");
    let samples = scrape(admin).await;
    assert_eq!(
        metric(&samples, "snigate_certificate_expiry_timestamp_seconds", &[("route", "a")]),
        Some(TEST_CERT_NOT_AFTER)
    );
    assert_eq!(
        metric(&samples, "snigate_backend_up", &[("route", "a"), ("server", &backend.addr.to_string())]),
        Some(1.0)
    );
    let stale_expiry = metric(&samples, "snigate_certificate_expiry_timestamp_seconds", &[("route", "b")]);
    let stale_up = metric(&samples, "snigate_backend_up", &[("route", "a"), ("server", &gone_label)]);
    println!("after the reload: expiry of removed route b {stale_expiry:?}, backend_up of removed server {stale_up:?}");
    assert_eq!(stale_expiry, None, "route b is gone: its certificate expiry series must go too");
    assert_eq!(stale_up, None, "server {gone} is gone: its backend_up series must go too");
    proxy.shutdown().await;
}
