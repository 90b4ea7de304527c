//! Operations: the admin endpoint. After a mix of traffic (terminated, passed through, unknown
//! SNI, hello timeout, failed client-certificate handshake) `/metrics` — scraped over plain HTTP
//! and parsed here without any crate — shows the expected counters, gauges and histograms;
//! `/healthz` and `/readyz` answer 200, anything else 404.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::{expect_refused, server_config, simple_client, tls_connect};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// rcgen test certificates in tests/common/pki.rs expire 2090-01-01T00:00:00Z.
const TEST_CERT_NOT_AFTER: f64 = 3_786_912_000.0;

// ---------------------------------------------------------------------------------------------
// Support: HTTP, metrics, polling.

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// A hand-written HTTP/1.1 GET (`Connection: close`), bounded by [`WAIT`].
async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| format!("receive: {e}"))?;
        parse_http(&raw)
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err(format!("GET {path}: no answer")))
}

fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
            let size_text = String::from_utf8_lossy(&rest[..end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size.min(rest.len())]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = decoded;
    } else if let Some(length) =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).to_string() })
}

/// One sample of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses Prometheus / OpenMetrics text into samples (comments and `# EOF` skipped).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, labels, rest) = match line.find(['{', ' ']) {
            Some(at) if line.as_bytes()[at] == b'{' => {
                let (labels, consumed) = parse_labels(&line[at + 1..]).unwrap_or_else(|e| panic!("{e} in {line:?}"));
                (&line[..at], labels, &line[at + 1 + consumed..])
            }
            Some(at) => (&line[..at], Vec::new(), &line[at..]),
            None => panic!("sample without a value: {line:?}"),
        };
        let value_text = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = value_text.parse().unwrap_or_else(|_| panic!("bad value {value_text:?} in {line:?}"));
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// Parses `a="x",b="y"}`; returns the labels and the bytes consumed (through the `}`).
fn parse_labels(text: &str) -> Result<(Vec<(String, String)>, usize), String> {
    let bytes = text.as_bytes();
    let mut labels = Vec::new();
    let mut at = 0;
    loop {
        match bytes.get(at) {
            Some(b'}') => return Ok((labels, at + 1)),
            Some(b',') | Some(b' ') => at += 1,
            Some(_) => {
                let eq = text[at..].find('=').ok_or("label without `=`")? + at;
                let name = text[at..eq].trim().to_string();
                if bytes.get(eq + 1) != Some(&b'"') {
                    return Err(format!("label {name} value is not quoted"));
                }
                let mut value = String::new();
                let mut chars = text[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break eq + 2 + i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err("dangling escape".into()),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    }
                };
                labels.push((name, value));
                at = end + 1;
            }
            None => return Err("unterminated label set".into()),
        }
    }
}

/// The value of the one sample called `name` whose labels include `labels`.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .collect();
    assert!(matching.len() <= 1, "several samples match {name} {labels:?}: {matching:?}");
    matching.first().map(|s| s.value)
}

/// GET /metrics, parsed.
async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let response = http_get(admin, "/metrics").await.unwrap_or_else(|e| panic!("scraping /metrics: {e}"));
    assert_eq!(response.status, 200, "/metrics answered {}: {}", response.status, response.body);
    parse_exposition(&response.body)
}

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
    unknown.write_all(&common::hello::raw_client_hello(Some(b"nope.test"), &[])).await.unwrap();
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
