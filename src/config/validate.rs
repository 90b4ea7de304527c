//! Validation: what the schema cannot express (duplicate names and hostnames, bad wildcards and
//! servers, files, certificate/key pairs, zero limits), each problem with its position, and the
//! runtime [`Config`] built from a [`RawConfig`] that passes, with every TLS config ready to serve.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::acme::{AcmeCertificate, AcmeCertificates};
use super::crl_url::CrlSources;
use super::error::{ConfigError, ConfigErrors, Reporter};
use super::route_limits;
use super::schema::{RawConfig, RawLimits, RawMqtt, RawRoute, RawTls, RawWebSocket};
use super::ticket_key_file;
use super::yaml_position::Span;
use super::Config;
use crate::proxy::backend::{
    Backend, Balance, HealthCheck, Identity, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FAIL_TIMEOUT, DEFAULT_HEALTH_FALL,
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_RISE, DEFAULT_HEALTH_TIMEOUT, DEFAULT_MAX_FAILS,
};
use crate::proxy::fetched_crls::FetchedCrls;
use crate::proxy::limits::{
    Limits, DEFAULT_CLOSE_JITTER, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HELLO_BYTES,
};
use crate::proxy::mqtt_admission::{
    ClientIdRule, MqttSettings, UsernameRule, DEFAULT_MQTT_CONNECT_TIMEOUT, DEFAULT_MQTT_MAX_CONNECT_BYTES,
};
use crate::proxy::pem_files::{self, LeafFacts};
use crate::proxy::route::{Mode, Route};
use crate::proxy::routes::{self, RouteTable};
use crate::proxy::tls::{LoadCache, RouteTls, TlsProblem, MAX_ALPN_PROTOCOL_BYTES};
use crate::proxy::tls_settings::{ClientAuth, TlsSettings};
use crate::proxy::websocket::WebSocketSettings;

/// What validation collects: problems that refuse the file, and certificate problems that
/// `check` refuses but `run` and reload only warn about.
#[derive(Default)]
struct Findings {
    errors: Vec<ConfigError>,
    certificate: Vec<ConfigError>,
}

pub(super) fn validate(
    raw: RawConfig,
    report: &Reporter,
    path: &Path,
    fetched_crls: FetchedCrls,
) -> Result<Config, ConfigErrors> {
    let at = &report.at;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut found = Findings::default();
    for (key, empty, what) in
        [("listen", raw.listen.is_empty(), "one address"), ("routes", raw.routes.is_empty(), "one route")]
    {
        if empty {
            let position = at.find_key(key, at.whole()).unwrap_or((1, 1));
            found.errors.push(report.error(position, format!("`{key}` needs at least {what}")));
        }
    }
    let limits = build_limits(&raw.limits, report, &mut found.errors);

    let spans = at.route_spans(raw.routes.iter().map(|route| route.name.as_str()));
    let mut files = Files::new(path);
    let mut names = Names::default();
    let now = unix_now();
    let mut cache = LoadCache::new(now, fetched_crls);
    let mut crl_sources = CrlSources::default();
    let mut acme_certificates = AcmeCertificates::default();
    if let Some(raw_tickets) = &raw.session_tickets {
        files.add(base_dir.join(&raw_tickets.key_file));
        cache.ticket_keys = ticket_key_file::load(raw_tickets, base_dir, report, &mut found.errors);
    }
    let mut routes = Vec::new();
    for (raw_route, &span) in raw.routes.iter().zip(&spans) {
        let first_pattern = names.patterns.len();
        names.add(raw_route, routes.len(), report, span, &mut found.errors);
        let backend = build_backend(raw_route, report, span, &mut found.errors);
        if let (Mode::Terminate, Some(raw_tls)) = (raw_route.mode, &raw_route.tls) {
            // A `cert_dir` is watched as a directory: files added to or removed from it count.
            let named = raw_tls.cert.iter().chain(&raw_tls.key).chain(&raw_tls.cert_dir);
            let named = named.chain(&raw_tls.client_ca).chain(&raw_tls.crl);
            named.for_each(|file| files.add(base_dir.join(file)));
            if raw_tls.client_auth != ClientAuth::None {
                crl_sources.add_route(raw_tls, report, span, &mut found.errors);
            }
        }
        let acme = match (raw_route.mode, &raw_route.tls) {
            (Mode::Terminate, Some(raw_tls)) => {
                acme_certificates.add_route(raw_route, raw_tls, base_dir, report, span, &mut found.errors)
            }
            _ => None,
        };
        let built = BuildTls { identity: backend.identity, acme: acme.as_ref(), base_dir, now };
        let route_tls = build_route_tls(raw_route, built, &mut cache, report, span, &mut found);
        if let (Some(acme), Some(route_tls)) = (&acme, &route_tls) {
            // Its own files when they exist (`served_files` prefers them), else a fallback's.
            let leaf = route_tls.certificates.served.certified.end_entity_cert();
            if let (true, Ok(leaf)) = (acme.cert_file().exists(), leaf) {
                acme_certificates.loaded(&acme.id, leaf);
            }
        }
        if let (Some(route_tls), Some(raw_tls)) = (&route_tls, &raw_route.tls) {
            let sni = names.patterns[first_pattern..].iter().map(|(pattern, _)| pattern.key());
            let sni = raw_route.sni.iter().zip(sni);
            // An `acme:` certificate is ordered for exactly the route's names: until a name added
            // is issued, the stored one serves the others, which is no problem to report.
            let sni = sni.filter(|_| raw_tls.acme.is_none());
            check_certificates(route_tls, raw_tls, sni, now, report, span, &mut found.certificate);
        }
        let alpn = raw_route.alpn.iter().map(|protocol| protocol.as_bytes().to_vec()).collect();
        let mqtt = raw_route.mqtt.as_ref().and_then(|raw| build_mqtt(raw_route, raw, report, span, &mut found.errors));
        let websocket = raw_route
            .websocket
            .as_ref()
            .and_then(|raw| build_websocket(raw_route, raw, report, span, &mut found.errors));
        let route_limits = route_limits::build(raw_route, &limits, report, span, &mut found.errors);
        routes.push(Route {
            name: raw_route.name.clone(),
            alpn,
            mode: raw_route.mode,
            tls: route_tls,
            mqtt,
            websocket,
            limits: route_limits,
            backend,
        });
    }

    let default = raw.default.as_deref().and_then(|name| names.default_route(name, report, &mut found.errors));
    if !found.errors.is_empty() {
        let mut errors = found.errors;
        errors.append(&mut found.certificate);
        errors.sort_by_key(|error| (error.line, error.column));
        return Err(ConfigErrors(errors));
    }
    found.certificate.sort_by_key(|error| (error.line, error.column));
    Ok(Config {
        source: path.to_path_buf(),
        listen: raw.listen,
        reuse_port: raw.reuse_port,
        admin: raw.admin,
        accept_proxy_from: raw.accept_proxy_from,
        limits,
        routes: Arc::new(RouteTable::new(routes, names.patterns, default)),
        files: files.list,
        crl_sources: crl_sources.0,
        acme_certificates: acme_certificates.0,
        certificate_problems: found.certificate,
    })
}

/// Route names and hostnames seen so far: a route name is used once; a hostname by routes
/// with disjoint `alpn` sets, at most one of them without.
#[derive(Default)]
struct Names<'r> {
    routes: HashMap<&'r str, usize>,
    hostnames: HashMap<String, HostnameUse<'r>>,
    patterns: Vec<(routes::Pattern, usize)>,
}

/// The routes that serve one hostname so far.
#[derive(Default)]
struct HostnameUse<'r> {
    /// The one without `alpn`.
    fallback: Option<&'r str>,
    /// Each listed ALPN protocol's route.
    protocols: HashMap<&'r str, &'r str>,
}

impl<'r> Names<'r> {
    /// Checks route `index`'s name and `sni` entries and records them.
    fn add(
        &mut self,
        raw_route: &'r RawRoute,
        index: usize,
        report: &Reporter,
        span: Span,
        errors: &mut Vec<ConfigError>,
    ) {
        if raw_route.name.is_empty() {
            errors.push(report.error((span.start, 1), "route `name` must not be empty".into()));
        }
        if self.routes.insert(&raw_route.name, index).is_some() {
            let position = report.at.find_value("name", &raw_route.name, span);
            errors.push(report.error(position, format!("duplicate route name {:?}", raw_route.name)));
        }
        check_alpn_names(raw_route, report, span, errors);
        for pattern in &raw_route.sni {
            let position = report.at.find(pattern, span);
            match routes::Pattern::parse(pattern) {
                Ok(parsed) => {
                    self.add_hostname(parsed.key(), pattern, raw_route, report, span, errors);
                    self.patterns.push((parsed, index));
                }
                Err(reason) => errors.push(report.error(position, format!("bad hostname {pattern:?}: {reason}"))),
            }
        }
    }

    /// Records that `raw_route` serves hostname `key` (written `pattern`): an overlap with an
    /// earlier route for it is reported at this route's hostname or protocol.
    fn add_hostname(
        &mut self,
        key: String,
        pattern: &str,
        raw_route: &'r RawRoute,
        report: &Reporter,
        span: Span,
        errors: &mut Vec<ConfigError>,
    ) {
        let used = self.hostnames.entry(key).or_default();
        if raw_route.alpn.is_empty() {
            if let Some(other) = used.fallback.replace(&raw_route.name) {
                let mut message = format!("hostname {pattern:?} is already used by route {other:?}");
                if !used.protocols.is_empty() {
                    message.push_str(" (one route per hostname may go without `alpn`)");
                }
                errors.push(report.error(report.at.find(pattern, span), message));
            }
            return;
        }
        for protocol in &raw_route.alpn {
            if let Some(other) = used.protocols.insert(protocol, &raw_route.name) {
                if other == raw_route.name {
                    continue;
                }
                let message = format!(
                    "ALPN protocol {protocol:?} for hostname {pattern:?} is already routed to route {other:?} \
                     (routes sharing a hostname need disjoint `alpn` sets)"
                );
                errors.push(report.error(route_alpn_at(report, protocol, span), message));
            }
        }
    }

    /// The index of the route `default:` names; `None` for `reject` or (recorded) a missing one.
    fn default_route(&self, name: &str, report: &Reporter, errors: &mut Vec<ConfigError>) -> Option<usize> {
        if name == "reject" {
            return None;
        }
        let index = self.routes.get(name).copied();
        if index.is_none() {
            let position = report.at.find_value("default", name, report.at.whole());
            errors.push(report.error(position, format!("`default` names route {name:?}, which does not exist")));
        }
        index
    }
}

/// Where `protocol` is written in the route's own `alpn:` list.
fn route_alpn_at(report: &Reporter, protocol: &str, span: Span) -> super::yaml_position::Position {
    match report.at.find_route_key("alpn", span) {
        Some(key_at) => report.at.find_after(protocol, key_at, span),
        None => report.at.find_value("alpn", protocol, span),
    }
}

/// Each of the route's `alpn` protocols is 1 to 255 bytes (RFC 7301) and listed once.
fn check_alpn_names(raw_route: &RawRoute, report: &Reporter, span: Span, errors: &mut Vec<ConfigError>) {
    for (i, protocol) in raw_route.alpn.iter().enumerate() {
        let position = route_alpn_at(report, protocol, span);
        if protocol.is_empty() || protocol.len() > MAX_ALPN_PROTOCOL_BYTES {
            let message = format!("ALPN protocol {protocol:?} must be 1 to {MAX_ALPN_PROTOCOL_BYTES} bytes");
            errors.push(report.error(position, message));
        } else if raw_route.alpn[..i].contains(protocol) {
            errors.push(report.error(position, format!("ALPN protocol {protocol:?} is listed twice")));
        }
    }
}

/// The files a config names, each once, in the order first named.
struct Files {
    list: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
}

impl Files {
    fn new(config: &Path) -> Files {
        Files { list: vec![config.to_path_buf()], seen: HashSet::from([config.to_path_buf()]) }
    }

    fn add(&mut self, file: PathBuf) {
        if self.seen.insert(file.clone()) {
            self.list.push(file);
        }
    }
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// The `tls:` keys of the served certificate: on an `acme:` route, the stored files' (expected
/// to be missing until the first issuance), not the file's.
const CERTIFICATE_FIELDS: [&str; 4] = ["tls", "cert", "key", "cert_dir"];

/// What a route's TLS is built with besides its `tls:` section.
struct BuildTls<'a> {
    identity: Identity,
    /// The certificate of an `acme:` block that checked out.
    acme: Option<&'a AcmeCertificate>,
    base_dir: &'a Path,
    /// Unix seconds, the load's clock.
    now: i64,
}

/// The route's TLS state, or `None` with its problems recorded (or for a route without TLS, and
/// an `acme:` route with no certificate stored yet).
fn build_route_tls(
    raw_route: &RawRoute,
    built: BuildTls,
    cache: &mut LoadCache,
    report: &Reporter,
    span: Span,
    found: &mut Findings,
) -> Option<RouteTls> {
    let place = |problem: TlsProblem| {
        let position = report.at.find_value(problem.field, &problem.value, span);
        report.error(position, problem.message)
    };
    match (raw_route.mode, &raw_route.tls) {
        (Mode::Terminate, Some(raw_tls)) if raw_tls.acme.is_some() => {
            // Built with the stored files, or with none yet: the rest of `tls:` (client CA, CRLs,
            // ALPN) is checked either way.
            let stored = built.acme?.served_files(built.now);
            let mut settings = tls_settings(raw_tls, &raw_route.alpn);
            (settings.cert, settings.key) = stored.clone().unzip();
            let problems = match RouteTls::build(&raw_route.name, &settings, built.identity, built.base_dir, cache) {
                Ok(built) => return Some(built.tls),
                Err(problems) => problems,
            };
            let (certificate, other): (Vec<_>, Vec<_>) =
                problems.into_iter().partition(|problem| CERTIFICATE_FIELDS.contains(&problem.field));
            found.errors.extend(other.into_iter().map(place));
            if stored.is_some() && !certificate.is_empty() {
                // The task sees the same problem in the stored pair and orders a new one.
                let storage = raw_tls.acme.as_ref().map_or(String::new(), |raw| raw.storage.display().to_string());
                let position = report.at.find_value("storage", &storage, span);
                let problems = certificate.into_iter().map(|problem| problem.message).collect::<Vec<_>>().join("; ");
                let message = format!("the stored ACME certificate does not load ({problems}); ordering a new one");
                found.certificate.push(report.error(position, message));
            }
            None
        }
        (Mode::Terminate, Some(raw_tls)) => {
            let settings = tls_settings(raw_tls, &raw_route.alpn);
            match RouteTls::build(&raw_route.name, &settings, built.identity, built.base_dir, cache) {
                Ok(built) => {
                    found.certificate.extend(built.warnings.into_iter().map(place));
                    Some(built.tls)
                }
                Err(problems) => {
                    found.errors.extend(problems.into_iter().map(place));
                    None
                }
            }
        }
        (Mode::Terminate, None) => {
            let position = report.at.find_key("mode", span).unwrap_or((span.start, 1));
            let message = format!("route {:?} has `mode: terminate` but no `tls:` section", raw_route.name);
            found.errors.push(report.error(position, message));
            None
        }
        (mode, Some(raw_tls)) if raw_tls.acme.is_some() => {
            let position = report.at.find_key("acme", span).unwrap_or((span.start, 1));
            let message = format!(
                "`acme` obtains a certificate a terminate route serves; route {:?} is `mode: {}` (its backend holds the certificate)",
                raw_route.name,
                mode.as_str()
            );
            found.errors.push(report.error(position, message));
            None
        }
        (mode, Some(_)) => {
            tracing::warn!(
                route = %raw_route.name,
                "`tls:` is ignored on a {} route: only terminate routes use it",
                mode.as_str()
            );
            None
        }
        (_, None) => None,
    }
}

/// Most names a certificate-mismatch message lists.
const NAMES_SHOWN: usize = 4;

/// A certificate a route serves, for messages: its file, and the `tls:` key and value naming it.
struct ServedCertificate<'t> {
    file: String,
    field: &'static str,
    value: String,
    leaf: &'t LeafFacts,
}

/// The certificates of a route: `cert` (or the one `acme` stored), then the files of `cert_dir`.
fn served_certificates<'t>(route_tls: &'t RouteTls, raw_tls: &RawTls) -> Vec<ServedCertificate<'t>> {
    let named = raw_tls.cert.iter().map(|cert| ServedCertificate {
        file: cert.display().to_string(),
        field: "cert",
        value: cert.display().to_string(),
        leaf: &route_tls.certificates.served.leaf,
    });
    let stored = raw_tls.acme.iter().map(|acme| ServedCertificate {
        file: format!("stored in {}", acme.storage.display()),
        field: "storage",
        value: acme.storage.display().to_string(),
        leaf: &route_tls.certificates.served.leaf,
    });
    let named = named.chain(stored);
    let dir = raw_tls.cert_dir.as_ref().map(|dir| dir.display().to_string()).unwrap_or_default();
    let in_dir = route_tls.certificates.dir_certificates.iter().map(|certificate| ServedCertificate {
        file: certificate.file.display().to_string(),
        field: "cert_dir",
        value: dir.clone(),
        leaf: &certificate.served.leaf,
    });
    named.chain(in_dir).collect()
}

/// Expired (or not yet valid) certificates, and `sni` names none of the route's certificates
/// covers (RFC 6125).
fn check_certificates<'s>(
    route_tls: &RouteTls,
    raw_tls: &RawTls,
    sni: impl Iterator<Item = (&'s String, String)>,
    now: i64,
    report: &Reporter,
    span: Span,
    problems: &mut Vec<ConfigError>,
) {
    let served = served_certificates(route_tls, raw_tls);
    for certificate in &served {
        let at = || report.at.find_value(certificate.field, &certificate.value, span);
        let (file, leaf) = (&certificate.file, certificate.leaf);
        if leaf.not_after < now {
            problems.push(report.error(at(), format!("certificate {file} expired on {}", leaf.not_after_text)));
        } else if leaf.not_before > now {
            problems
                .push(report.error(at(), format!("certificate {file} is not valid before {}", leaf.not_before_text)));
        }
    }
    for (written, canonical) in sni {
        if served.iter().any(|certificate| pem_files::covers(&certificate.leaf.dns_names, &canonical)) {
            continue;
        }
        let message = match (&raw_tls.cert_dir, served.as_slice()) {
            (None, [only]) => {
                format!("certificate {} does not cover {written:?} (it names {})", only.file, shown(only.leaf))
            }
            (Some(dir), _) => format!("no certificate of cert_dir {} covers {written:?}", dir.display()),
            (None, _) => format!("no certificate covers {written:?}"),
        };
        problems.push(report.error(report.at.find_value("sni", written, span), message));
    }
}

/// The first few DNS names of a certificate, for a message.
fn shown(leaf: &LeafFacts) -> String {
    let mut shown = leaf.dns_names.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if leaf.dns_names.len() > NAMES_SHOWN {
        shown.push_str(", …");
    }
    if shown.is_empty() {
        shown = "no DNS names".into();
    }
    shown
}

/// The `tls:` section as the proxy's TLS builder takes it.
fn tls_settings(raw: &RawTls, route_alpn: &[String]) -> TlsSettings {
    TlsSettings {
        cert: raw.cert.clone(),
        key: raw.key.clone(),
        cert_dir: raw.cert_dir.clone(),
        client_auth: raw.client_auth,
        client_ca: raw.client_ca.clone(),
        crl: raw.crl.clone(),
        crl_urls: raw.crl_urls.clone(),
        alpn: raw.alpn.clone(),
        route_alpn: route_alpn.to_vec(),
        min_version: raw.min_version,
        session_resumption: raw.session_resumption,
        revoke_live: raw.revoke_live,
    }
}

/// Smallest `max_hello_bytes` accepted: a record plus handshake header is 9 bytes and real hellos
/// are over 100, so a smaller cap would refuse every client.
const MIN_MAX_HELLO_BYTES: usize = 512;

fn build_limits(raw: &RawLimits, report: &Reporter, errors: &mut Vec<ConfigError>) -> Limits {
    let key_at = |key: &str| report.at.find_key(key, report.at.whole()).unwrap_or((1, 1));
    let limits = Limits {
        hello_timeout: raw.hello_timeout.unwrap_or(DEFAULT_HELLO_TIMEOUT),
        max_hello_bytes: raw.max_hello_bytes.unwrap_or(DEFAULT_MAX_HELLO_BYTES),
        max_connections: raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_handshakes: raw.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES),
        max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
        idle_timeout: raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        handshake_timeout: raw.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        drain_timeout: raw.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        close_jitter: raw.close_jitter.unwrap_or(DEFAULT_CLOSE_JITTER),
        handshake_rate: route_limits::rate(raw.handshakes_per_second, raw.handshake_burst, &key_at, report, errors),
    };
    if limits.max_hello_bytes < MIN_MAX_HELLO_BYTES {
        errors.push(report.error(
            key_at("max_hello_bytes"),
            format!("max_hello_bytes {} is below the {MIN_MAX_HELLO_BYTES}-byte minimum", limits.max_hello_bytes),
        ));
    }
    for (key, value) in [("max_connections", limits.max_connections), ("max_handshakes", limits.max_handshakes)] {
        if value == 0 {
            errors.push(report.error(key_at(key), format!("{key} must be at least 1")));
        }
    }
    for (key, value) in [
        ("hello_timeout", limits.hello_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("handshake_timeout", limits.handshake_timeout),
    ] {
        if value.is_zero() {
            errors.push(report.error(key_at(key), format!("{key} must be longer than 0")));
        }
    }
    limits
}

fn build_backend(raw_route: &RawRoute, report: &Reporter, span: Span, errors: &mut Vec<ConfigError>) -> Backend {
    let key_at = |key: &str| report.at.find_key(key, span).unwrap_or((span.start, 1));
    let raw = &raw_route.backend;
    let servers = check_servers(raw_route, report, span, errors);
    if raw.balance == Balance::ClientId && raw_route.mqtt.is_none() {
        errors.push(report.error(
            key_at("balance"),
            format!(
                "balance client_id needs an `mqtt:` block on route {:?} (it balances on the MQTT CONNECT client id); use round_robin, least_connections or client_ip",
                raw_route.name
            ),
        ));
    }
    let connect_timeout = raw.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() {
        errors.push(report.error(key_at("connect_timeout"), "connect_timeout must be longer than 0".into()));
    }
    let health_check = raw.health_check.as_ref().map(|raw| HealthCheck {
        kind: raw.kind,
        interval: raw.interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
        timeout: raw.timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        rise: raw.rise.unwrap_or(DEFAULT_HEALTH_RISE),
        fall: raw.fall.unwrap_or(DEFAULT_HEALTH_FALL),
    });
    if let Some(check) = &health_check {
        if check.interval.is_zero() || check.timeout.is_zero() || check.rise == 0 || check.fall == 0 {
            errors.push(report.error(
                key_at("health_check"),
                "health_check interval and timeout must be longer than 0, rise and fall at least 1".into(),
            ));
        }
    }
    Backend {
        primaries: raw.servers.len(),
        balance: raw.balance,
        proxy_protocol: raw.proxy_protocol,
        identity: raw.identity,
        connect_timeout,
        next_server: Default::default(),
        load: servers.iter().map(|_| Default::default()).collect(),
        on_backup: Default::default(),
        server_up: servers.iter().map(|_| AtomicBool::new(true)).collect(),
        health_check,
        on_backend_down: raw.on_backend_down,
        max_fails: raw.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
        fail_timeout: raw.fail_timeout.unwrap_or(DEFAULT_FAIL_TIMEOUT),
        passive: servers.iter().map(|_| Default::default()).collect(),
        servers,
    }
}

/// The `mqtt:` block of a terminate or tcp route; on a passthrough route (whose bytes are
/// encrypted) or with a zero setting, an error.
fn build_mqtt(
    raw_route: &RawRoute,
    raw: &RawMqtt,
    report: &Reporter,
    span: Span,
    errors: &mut Vec<ConfigError>,
) -> Option<MqttSettings> {
    let key_at = |key: &str| report.at.find_key(key, span).unwrap_or((span.start, 1));
    if raw_route.mode == Mode::Passthrough {
        let message = format!(
            "`mqtt:` on passthrough route {:?}: the proxy cannot read the CONNECT of a connection it does not decrypt; use mode terminate",
            raw_route.name
        );
        errors.push(report.error(key_at("mqtt"), message));
        return None;
    }
    let settings = MqttSettings {
        connect_timeout: raw.connect_timeout.unwrap_or(DEFAULT_MQTT_CONNECT_TIMEOUT),
        max_connect_bytes: raw.max_connect_bytes.unwrap_or(DEFAULT_MQTT_MAX_CONNECT_BYTES),
        client_id: raw.client_id,
        username: raw.username,
    };
    check_identity_rules(raw_route, raw, report, span, errors);
    if settings.connect_timeout.is_zero() || settings.max_connect_bytes == 0 {
        errors.push(
            report.error(key_at("mqtt"), "mqtt connect_timeout and max_connect_bytes must be more than 0".into()),
        );
        return None;
    }
    Some(settings)
}

/// The `websocket:` block of a terminate or tcp route; on a passthrough route, or with a path
/// that is not absolute or a zero message size, an error.
fn build_websocket(
    raw_route: &RawRoute,
    raw: &RawWebSocket,
    report: &Reporter,
    span: Span,
    errors: &mut Vec<ConfigError>,
) -> Option<WebSocketSettings> {
    let key_at = |key: &str| report.at.find_key(key, span).unwrap_or((span.start, 1));
    if raw_route.mode == Mode::Passthrough {
        let message = format!(
            "`websocket:` on passthrough route {:?}: the proxy cannot answer the upgrade of a connection it does not decrypt; use mode terminate",
            raw_route.name
        );
        errors.push(report.error(key_at("websocket"), message));
        return None;
    }
    let defaults = WebSocketSettings::default();
    let settings = WebSocketSettings {
        path: raw.path.clone().unwrap_or(defaults.path),
        subprotocols: raw.subprotocols.clone().unwrap_or(defaults.subprotocols),
        allowed_origins: raw.allowed_origins.clone(),
        max_message_bytes: raw.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        also_plain_mqtt: raw.also_plain_mqtt,
    };
    let before = errors.len();
    if !settings.path.starts_with('/') || settings.path.contains(['?', '#', ' ']) {
        let message = format!("websocket path {:?} must start with / and hold no ?, # or space", settings.path);
        errors.push(report.error(key_at("path"), message));
    }
    if let Some(bad) = settings.subprotocols.iter().find(|p| !is_token(p)) {
        errors
            .push(report.error(key_at("subprotocols"), format!("websocket subprotocol {bad:?} is not an HTTP token")));
    }
    if settings.max_message_bytes == 0 {
        errors
            .push(report.error(key_at("max_message_bytes"), "websocket max_message_bytes must be more than 0".into()));
    }
    (errors.len() == before).then_some(settings)
}

/// An HTTP token (RFC 9110 §5.6.2), what a subprotocol name must be.
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `mqtt.client_id: identity|identity_prefix` and `mqtt.username: identity` read the verified
/// client identity: only a terminate route with `client_auth: required` always has one.
fn check_identity_rules(
    raw_route: &RawRoute,
    raw: &RawMqtt,
    report: &Reporter,
    span: Span,
    errors: &mut Vec<ConfigError>,
) {
    let required = raw_route.mode == Mode::Terminate
        && raw_route.tls.as_ref().is_some_and(|tls| tls.client_auth == ClientAuth::Required);
    if required {
        return;
    }
    let key_at = |key: &str| report.at.find_key(key, span).unwrap_or((span.start, 1));
    let mut refuse = |key: &str, value: &str| {
        let message = format!(
            "mqtt {key}: {value} on route {:?} needs a verified client certificate: use mode terminate with tls client_auth: required",
            raw_route.name
        );
        errors.push(report.error(key_at(key), message));
    };
    match raw.client_id {
        ClientIdRule::Any => {}
        ClientIdRule::Identity => refuse("client_id", "identity"),
        ClientIdRule::IdentityPrefix => refuse("client_id", "identity_prefix"),
    }
    if raw.username == UsernameRule::Identity {
        refuse("username", "identity");
    }
}

/// Checks `servers` and `backup_servers` (each `host:port`, none in both) and returns them in
/// that order.
fn check_servers(raw_route: &RawRoute, report: &Reporter, span: Span, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let raw = &raw_route.backend;
    if raw.servers.is_empty() {
        let at = report.at.find_key("servers", span).unwrap_or((span.start, 1));
        errors.push(report.error(at, format!("route {:?} has no backend `servers`", raw_route.name)));
    }
    for (key, list) in [("servers", &raw.servers), ("backup_servers", &raw.backup_servers)] {
        for server in list {
            let at = || report.at.find_value(key, server, span);
            if let Err(reason) = check_server_address(server) {
                let what = if key == "servers" { "backend server" } else { "backup server" };
                errors.push(report.error(at(), format!("bad {what} {server:?}: {reason}")));
            } else if key == "backup_servers" && raw.servers.contains(server) {
                errors.push(report.error(at(), format!("backup server {server:?} is also in `servers`")));
            }
        }
    }
    raw.servers.iter().chain(&raw.backup_servers).cloned().collect()
}

/// A server is `ip:port`, `[ipv6]:port` or `hostname:port` (resolved at connect time).
fn check_server_address(server: &str) -> Result<(), &'static str> {
    if server.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = server.rsplit_once(':').ok_or("expected host:port")?;
    port.parse::<u16>().map_err(|_| "port is not a number from 0 to 65535")?;
    if host.is_empty() || host.contains(['[', ']', ':', ' ']) {
        return Err("host is not an IP address or a hostname");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_checked() {
        assert!(check_server_address("127.0.0.1:1883").is_ok());
        assert!(check_server_address("[::1]:1883").is_ok());
        assert!(check_server_address("broker.internal:1883").is_ok());
        assert!(check_server_address("broker.internal").is_err());
        assert!(check_server_address("broker:99999").is_err());
    }
}
