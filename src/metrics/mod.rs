//! Every Prometheus metric snigate exports, in one place (`prometheus-client`).
//!
//! To add a metric: add a field to [`Metrics`], register it in [`Metrics::new`] with a
//! `snigate_` name, a unit suffix (`_seconds`, `_bytes`) and `_total` for counters, and the labels
//! it needs (`route`, `mode`, `reason`, `server`). Per-connection code reaches per-route metrics
//! through [`Metrics::route`], which caches the labelled handles so the hot path does one map
//! lookup per connection instead of one per update.
//!
//! A `reason` label is never a free string: it is the label of a closed enum in
//! `close_cause` ([`CloseCause`], [`HelloReject`], [`HandshakeFailure`], [`MqttRefusal`]).

pub mod close_cause;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use close_cause::{CloseCause, HandshakeFailure, HelloReject, MqttRefusal};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: String,
    mode: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteVersion {
    route: String,
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteResumed {
    route: String,
    /// `true` for a resumed session (ticket or session id), `false` for a full handshake.
    resumed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteServer {
    route: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabel {
    url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateResult {
    certificate: String,
    result: &'static str,
}

/// How one attempt to obtain an ACME certificate ended (`snigate_acme_orders_total`'s `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeResult {
    /// The certificate was issued and stored.
    Issued,
    /// The CA could not be reached, or its answers could not be read (connect, TLS, HTTP, timeout).
    Unreachable,
    /// The CA refused a request with a problem document (rate limit, bad account, bad CSR, …).
    Refused,
    /// The CA could not validate a name (its authorization or the order became invalid).
    Invalid,
    /// A local step failed: a file of storage, `directory_ca` or the EAB key could not be read or written, or
    /// the key or CSR could not be made.
    LocalFailed,
}

impl AcmeResult {
    pub const ALL: &[AcmeResult] = &[
        AcmeResult::Issued,
        AcmeResult::Unreachable,
        AcmeResult::Refused,
        AcmeResult::Invalid,
        AcmeResult::LocalFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AcmeResult::Issued => "issued",
            AcmeResult::Unreachable => "unreachable",
            AcmeResult::Refused => "refused",
            AcmeResult::Invalid => "invalid",
            AcmeResult::LocalFailed => "local_failed",
        }
    }
}

type HistogramFamily = Family<RouteOnly, Histogram, fn() -> Histogram>;

fn handshake_histogram() -> Histogram {
    // 1 ms to ~4 s: a local full handshake takes about a millisecond, a congested one seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    accepted: Counter,
    connection_slots: Gauge,
    connections: Family<RouteLabels, Counter>,
    active: Family<RouteLabels, Gauge>,
    rejected: Family<Reason, Counter>,
    hello_rejects: Family<Reason, Counter>,
    closes: Family<RouteReason, Counter>,
    handshake_seconds: HistogramFamily,
    handshake_failures: Family<RouteReason, Counter>,
    tls_handshakes: Family<RouteResumed, Counter>,
    bytes: Family<BytesLabels, Counter>,
    backend_connect_failures: Family<RouteServer, Counter>,
    backend_up: Family<RouteServer, Gauge>,
    mqtt_connects: Family<RouteVersion, Counter>,
    mqtt_refusals: Family<RouteReason, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    certificate_expiry: Family<RouteOnly, Gauge<f64, std::sync::atomic::AtomicU64>>,
    crl_next_update: Family<UrlLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    crl_fetch_failures: Family<UrlLabel, Counter>,
    crl_ages: Arc<CrlAges>,
    acme_orders: Family<CertificateResult, Counter>,
    acme_challenges_answered: Counter,
    acme_next_attempt: Family<CertificateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    per_route: RwLock<HashMap<String, Arc<RouteMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A route's labelled metric handles, cached.
#[derive(Debug)]
pub struct RouteMetrics {
    pub route: String,
    mode: String,
    connections: Counter,
    active: Gauge,
    handshake_seconds: Histogram,
    /// Full and resumed handshakes; only terminate routes have them (no zero series elsewhere).
    handshakes: Option<(Counter, Counter)>,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// Counts one live connection in `snigate_connections_active` until dropped.
#[derive(Debug)]
pub struct ActiveConnection(Gauge);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RouteMetrics {
    /// A connection was routed here: counts it and holds it in the active gauge.
    pub fn opened(&self) -> ActiveConnection {
        self.connections.inc();
        self.active.inc();
        ActiveConnection(self.active.clone())
    }

    /// A TLS handshake completed in `duration`, full or resumed.
    pub fn handshake(&self, duration: Duration, resumed: bool) {
        self.handshake_seconds.observe(duration.as_secs_f64());
        if let Some((full, resumed_count)) = &self.handshakes {
            if resumed { resumed_count } else { full }.inc();
        }
    }

    pub fn transferred(&self, client_to_backend: u64, backend_to_client: u64) {
        self.bytes_in.inc_by(client_to_backend);
        self.bytes_out.inc_by(backend_to_client);
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("snigate"),
            accepted: Counter::default(),
            connection_slots: Gauge::default(),
            connections: Family::default(),
            active: Family::default(),
            rejected: Family::default(),
            hello_rejects: Family::default(),
            closes: Family::default(),
            handshake_seconds: Family::new_with_constructor(handshake_histogram),
            handshake_failures: Family::default(),
            tls_handshakes: Family::default(),
            bytes: Family::default(),
            backend_connect_failures: Family::default(),
            backend_up: Family::default(),
            mqtt_connects: Family::default(),
            mqtt_refusals: Family::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            certificate_expiry: Family::default(),
            crl_next_update: Family::default(),
            crl_fetch_failures: Family::default(),
            crl_ages: Arc::default(),
            acme_orders: Family::default(),
            acme_challenges_answered: Counter::default(),
            acme_next_attempt: Family::default(),
            per_route: RwLock::new(HashMap::new()),
        };
        metrics.register_connection_metrics();
        metrics.register_backend_and_config_metrics();
        metrics.register_crl_metrics();
        metrics.register_acme_metrics();
        Arc::new(metrics)
    }

    /// Accepting, routing, handshakes, closes, bytes and the MQTT CONNECT.
    fn register_connection_metrics(&mut self) {
        let r = &mut self.registry;
        r.register("connections_accepted", "TCP connections accepted", self.accepted.clone());
        r.register(
            "connection_slots",
            "Connections accepted at most: max_connections, or fewer when the open-file limit cannot hold them",
            self.connection_slots.clone(),
        );
        r.register("connections", "Connections routed, by route and mode", self.connections.clone());
        r.register("connections_active", "Open connections, by route and mode", self.active.clone());
        r.register(
            "connections_rejected",
            "Connections closed before reaching a backend, by reason",
            self.rejected.clone(),
        );
        r.register(
            "hello_rejects",
            "ClientHellos refused (timeout, size, malformed), by reason",
            self.hello_rejects.clone(),
        );
        r.register("connection_closes", "Routed connections closed, by route and cause", self.closes.clone());
        r.register(
            "handshake_duration_seconds",
            "TLS handshake time on terminate routes",
            self.handshake_seconds.clone(),
        );
        r.register(
            "handshake_failures",
            "Failed TLS handshakes on terminate routes, by reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "tls_handshakes",
            "Completed TLS handshakes on terminate routes, full (resumed=false) or resumed (resumed=true)",
            self.tls_handshakes.clone(),
        );
        r.register("bytes", "Bytes relayed, by route, mode and direction", self.bytes.clone());
        r.register(
            "mqtt_connects",
            "CONNECTs read on mqtt routes, by route and protocol version",
            self.mqtt_connects.clone(),
        );
        r.register("mqtt_refusals", "Clients refused on mqtt routes, by route and reason", self.mqtt_refusals.clone());
    }

    /// Backend health and connect failures, config loads and certificate expiry.
    fn register_backend_and_config_metrics(&mut self) {
        let r = &mut self.registry;
        r.register("backend_up", "Backend server health: 1 up, 0 down", self.backend_up.clone());
        r.register(
            "backend_connect_failures",
            "Failed connects to a backend server",
            self.backend_connect_failures.clone(),
        );
        r.register("config_reloads", "Config loads at start and reload, by result", self.reloads.clone());
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            self.last_reload_success.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which a terminate route's certificate expires",
            self.certificate_expiry.clone(),
        );
    }

    /// The CRLs of `crl_urls`: age and next update of the one in use, failed fetches.
    fn register_crl_metrics(&mut self) {
        let r = &mut self.registry;
        r.register(
            "crl_next_update_timestamp_seconds",
            "Unix time of the nextUpdate of the CRL in use from a crl_urls URL",
            self.crl_next_update.clone(),
        );
        r.register(
            "crl_fetch_failures",
            "Fetches of a crl_urls URL that gave no usable CRL",
            self.crl_fetch_failures.clone(),
        );
        r.register_collector(Box::new(self.crl_ages.clone()));
    }

    /// The certificates of `acme:` routes: attempts by result, the next talk with the CA.
    fn register_acme_metrics(&mut self) {
        let r = &mut self.registry;
        r.register(
            "acme_orders",
            "Attempts to obtain an acme certificate, by result (issued, unreachable, refused, invalid, local_failed)",
            self.acme_orders.clone(),
        );
        r.register(
            "acme_challenge_handshakes",
            "TLS-ALPN-01 validations answered with their challenge certificate",
            self.acme_challenges_answered.clone(),
        );
        r.register(
            "acme_next_attempt_timestamp_seconds",
            "Unix time an acme certificate is next renewed, or its failed attempt retried",
            self.acme_next_attempt.clone(),
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The cached handles for a route.
    pub fn route(&self, route: &str, mode: &str) -> Arc<RouteMetrics> {
        if let Some(found) = self.per_route.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            // A reload may change a route's mode: then its handles are made anew.
            if found.mode == mode {
                return found.clone();
            }
        }
        let labels = RouteLabels { route: route.to_string(), mode: mode.to_string() };
        let bytes = |direction| BytesLabels { route: route.to_string(), mode: mode.to_string(), direction };
        // One statement per lookup: a family's read guard must be gone before the next lookup in
        // the same family may need its write lock.
        let connections = self.connections.get_or_create(&labels).clone();
        let active = self.active.get_or_create(&labels).clone();
        let handshake_seconds = self.handshake_seconds.get_or_create(&RouteOnly { route: route.to_string() }).clone();
        let handshakes = (mode == "terminate").then(|| {
            let labels = |resumed| RouteResumed { route: route.to_string(), resumed };
            let full = self.tls_handshakes.get_or_create(&labels("false")).clone();
            (full, self.tls_handshakes.get_or_create(&labels("true")).clone())
        });
        let bytes_in = self.bytes.get_or_create(&bytes("client_to_backend")).clone();
        let bytes_out = self.bytes.get_or_create(&bytes("backend_to_client")).clone();
        let handles = Arc::new(RouteMetrics {
            route: route.to_string(),
            mode: mode.to_string(),
            connections,
            active,
            handshake_seconds,
            handshakes,
            bytes_in,
            bytes_out,
        });
        let mut per_route = self.per_route.write().unwrap_or_else(|p| p.into_inner());
        per_route.insert(route.to_string(), handles.clone());
        handles
    }

    pub fn accepted(&self) {
        self.accepted.inc();
    }

    /// The connection cap in force.
    pub fn connection_slots(&self, slots: usize) {
        self.connection_slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// A connection closed before it reached a backend.
    pub fn rejected(&self, cause: CloseCause) {
        self.rejected.get_or_create(&Reason { reason: cause.label() }).inc();
    }

    pub fn hello_rejected(&self, reason: HelloReject) {
        self.hello_rejects.get_or_create(&Reason { reason: reason.label() }).inc();
    }

    /// A routed connection closed.
    pub fn closed(&self, route: &str, cause: CloseCause) {
        self.closes.get_or_create(&RouteReason { route: route.to_string(), reason: cause.label() }).inc();
    }

    pub fn handshake_failed(&self, route: &str, reason: HandshakeFailure) {
        self.handshake_failures.get_or_create(&RouteReason { route: route.to_string(), reason: reason.label() }).inc();
    }

    pub fn backend_connect_failed(&self, route: &str, server: &str) {
        self.backend_connect_failures
            .get_or_create(&RouteServer { route: route.to_string(), server: server.to_string() })
            .inc();
    }

    pub fn backend_health(&self, route: &str, server: &str, up: bool) {
        self.backend_up
            .get_or_create(&RouteServer { route: route.to_string(), server: server.to_string() })
            .set(i64::from(up));
    }

    /// A CONNECT of `version` (`3.1`, `3.1.1`, `5.0`) read on an `mqtt:` route.
    pub fn mqtt_connect(&self, route: &str, version: &'static str) {
        self.mqtt_connects.get_or_create(&RouteVersion { route: route.to_string(), version }).inc();
    }

    pub fn mqtt_refused(&self, route: &str, reason: MqttRefusal) {
        self.mqtt_refusals.get_or_create(&RouteReason { route: route.to_string(), reason: reason.label() }).inc();
    }

    /// A config load at start or reload; success also stamps the last-success time.
    pub fn config_loaded(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if success {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_reload_success.set(now.as_secs_f64());
        }
    }

    /// Stops exporting a removed route's certificate expiry.
    pub fn forget_certificate(&self, route: &str) {
        self.certificate_expiry.remove(&RouteOnly { route: route.to_string() });
    }

    /// Stops exporting the health of a server a reload removed.
    pub fn forget_backend(&self, route: &str, server: &str) {
        self.backend_up.remove(&RouteServer { route: route.to_string(), server: server.to_string() });
    }

    pub fn certificate_expiry(&self, route: &str, not_after_unix_seconds: i64) {
        self.certificate_expiry
            .get_or_create(&RouteOnly { route: route.to_string() })
            .set(not_after_unix_seconds as f64);
    }
}

impl Metrics {
    /// An `acme:` certificate is followed: its counters are exported from 0.
    pub fn acme_followed(&self, certificate: &str) {
        for result in AcmeResult::ALL {
            let labels = CertificateResult { certificate: certificate.to_string(), result: result.label() };
            let _created = self.acme_orders.get_or_create(&labels);
        }
    }

    pub fn acme_challenge_answered(&self) {
        self.acme_challenges_answered.inc();
    }

    pub fn acme_attempt(&self, certificate: &str, result: AcmeResult) {
        let labels = CertificateResult { certificate: certificate.to_string(), result: result.label() };
        self.acme_orders.get_or_create(&labels).inc();
    }

    pub fn acme_next_attempt(&self, certificate: &str, at_unix_seconds: i64) {
        let labels = CertificateLabel { certificate: certificate.to_string() };
        self.acme_next_attempt.get_or_create(&labels).set(at_unix_seconds as f64);
    }

    /// Stops exporting a certificate no route asks for any more.
    pub fn forget_acme(&self, certificate: &str) {
        for result in AcmeResult::ALL {
            self.acme_orders
                .remove(&CertificateResult { certificate: certificate.to_string(), result: result.label() });
        }
        self.acme_next_attempt.remove(&CertificateLabel { certificate: certificate.to_string() });
    }

    /// A `crl_urls` URL is fetched: its failure counter is exported from 0.
    pub fn crl_followed(&self, url: &str) {
        let _created = self.crl_fetch_failures.get_or_create(&UrlLabel { url: url.to_string() });
    }

    /// The CRL of `url` in use now: its thisUpdate and nextUpdate, Unix seconds.
    pub fn crl_in_use(&self, url: &str, this_update: i64, next_update: Option<i64>) {
        let labels = UrlLabel { url: url.to_string() };
        match next_update {
            Some(next_update) => {
                self.crl_next_update.get_or_create(&labels).set(next_update as f64);
            }
            None => {
                self.crl_next_update.remove(&labels);
            }
        }
        self.crl_ages.0.write().unwrap_or_else(|p| p.into_inner()).insert(url.to_string(), this_update);
    }

    pub fn crl_fetch_failed(&self, url: &str) {
        self.crl_fetch_failures.get_or_create(&UrlLabel { url: url.to_string() }).inc();
    }

    /// Stops exporting a URL no route names any more.
    pub fn forget_crl(&self, url: &str) {
        let labels = UrlLabel { url: url.to_string() };
        self.crl_next_update.remove(&labels);
        self.crl_fetch_failures.remove(&labels);
        self.crl_ages.0.write().unwrap_or_else(|p| p.into_inner()).remove(url);
    }
}

/// `snigate_crl_age_seconds`: now minus the thisUpdate of each URL's CRL in use, computed at
/// scrape time so it grows between fetches.
#[derive(Debug, Default)]
struct CrlAges(RwLock<HashMap<String, i64>>);

impl Collector for CrlAges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let ages = self.0.read().unwrap_or_else(|p| p.into_inner());
        let help = "Seconds since the thisUpdate of the CRL in use from a crl_urls URL";
        let mut family = encoder.encode_descriptor("crl_age_seconds", help, None, MetricType::Gauge)?;
        for (url, this_update) in ages.iter() {
            let labels = UrlLabel { url: url.clone() };
            ConstGauge::new(now - *this_update as f64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_are_cached_and_exported() {
        let metrics = Metrics::new();
        let route = metrics.route("tenant-a", "terminate");
        assert!(Arc::ptr_eq(&route, &metrics.route("tenant-a", "terminate")));
        let active = route.opened();
        route.transferred(10, 20);
        route.handshake(Duration::from_millis(3), true);
        metrics.rejected(CloseCause::UnknownSni);
        metrics.config_loaded(true);
        let text = metrics.encode();
        assert!(text.contains("snigate_connections_total{route=\"tenant-a\",mode=\"terminate\"} 1"), "{text}");
        assert!(text.contains("snigate_connections_active{route=\"tenant-a\",mode=\"terminate\"} 1"), "{text}");
        assert!(
            text.contains(
                "snigate_bytes_total{route=\"tenant-a\",mode=\"terminate\",direction=\"backend_to_client\"} 20"
            ),
            "{text}"
        );
        assert!(text.contains("snigate_connections_rejected_total{reason=\"unknown_sni\"} 1"), "{text}");
        assert!(text.contains("snigate_tls_handshakes_total{route=\"tenant-a\",resumed=\"true\"} 1"), "{text}");
        assert!(text.contains("snigate_tls_handshakes_total{route=\"tenant-a\",resumed=\"false\"} 0"), "{text}");
        assert!(text.contains("snigate_handshake_duration_seconds_count{route=\"tenant-a\"} 1"), "{text}");
        drop(active);
        assert!(metrics.encode().contains("snigate_connections_active{route=\"tenant-a\",mode=\"terminate\"} 0"));
    }

    #[test]
    fn crl_age_is_computed_at_scrape_and_gone_once_forgotten() {
        let metrics = Metrics::new();
        let url = "http://127.0.0.1:1/ca.crl";
        metrics.crl_followed(url);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        metrics.crl_in_use(url, now - 100, Some(now + 3600));
        metrics.crl_fetch_failed(url);
        let text = metrics.encode();
        let age_line = text.lines().find(|l| l.starts_with("snigate_crl_age_seconds{")).expect(&text);
        let age: f64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((100.0..110.0).contains(&age), "{age_line}");
        assert!(text.contains(&format!("snigate_crl_fetch_failures_total{{url=\"{url}\"}} 1")), "{text}");
        assert!(text.contains("snigate_crl_next_update_timestamp_seconds{url="), "{text}");
        metrics.forget_crl(url);
        assert!(!metrics.encode().contains(url));
    }
}
