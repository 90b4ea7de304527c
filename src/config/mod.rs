//! The routes file: the YAML schema as typed structs with their defaults, and validation that
//! names the file, line and column of every problem (see DESIGN.md, "Config contract").
//!
//! Loading happens in two steps: `yaml_serde` turns the text into [`RawConfig`] (syntax, unknown
//! keys, bad enum values and durations are reported with the position the parser gives), then
//! [`validate`] checks what the schema cannot express (duplicate hostnames, bad wildcards, files,
//! certificate/key pairs) and builds the runtime [`Config`] with every TLS config ready to serve.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod yaml_depth;
mod yaml_position;

pub use yaml_depth::MAX_DEPTH as MAX_NESTING_DEPTH;

use crate::proxy::pem_files::{self, LeafFacts};
use crate::proxy::routes::{self, RouteTable};
use crate::proxy::tls;
use yaml_position::{Locator, Position, Span};

/// Whole ClientHello deadline: a real client sends its hello in one flight, well under a second.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Hello buffer cap: post-quantum hybrid key shares (X25519MLKEM768 alone is 1,216 bytes) make
/// 2–4 KiB hellos normal; 16 KiB leaves room for large session tickets and many extensions.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 16 * 1024;
/// Open client connections; each costs two sockets (client + backend).
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Concurrent TLS handshakes on terminate routes: the CPU-heavy step a flood targets.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Open connections from one client address; 0 = no cap (fleets behind carrier NAT share one).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// No bytes either way for this long closes the connection (MQTT keep-alives are ≤ a few minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A terminate handshake (after the hello arrived) must finish within this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for live connections before closing them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Per backend server connect attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Window over which sessions are closed in bulk (after the drain, or when their backend goes
/// down), so a fleet of MQTT clients does not reconnect in one burst.
pub const DEFAULT_CLOSE_JITTER: Duration = Duration::from_secs(5);
/// Health check defaults: a check every 5 s, 2 s to answer, 2 passes to come up, 3 failures to go down.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// Without a health check, one failed connect marks a server down (nginx's `max_fails` default).
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// How long a passively marked-down server is skipped before it is tried again (nginx's default).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The schema as written in YAML.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Sockets to listen on; all are routed by the same table.
    pub listen: Vec<SocketAddr>,
    /// Optional admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Peers allowed to send an inbound PROXY header.
    #[serde(default)]
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    /// Bind the `listen` sockets with SO_REUSEPORT, so that several snigate processes share the
    /// ports and the kernel spreads new connections over them. Default false: a second instance on
    /// the same port is then an error, not a silent split.
    #[serde(default)]
    pub reuse_port: bool,
    /// `reject` (default) or the name of a route for unknown / missing SNI and non-TLS bytes.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Default 5s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub hello_timeout: Option<Duration>,
    /// Default 16384.
    #[serde(default)]
    pub max_hello_bytes: Option<usize>,
    /// Default 50000.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Default 1024.
    #[serde(default)]
    pub max_handshakes: Option<usize>,
    /// Default 0 (no cap).
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Default 15m.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Default 10s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub handshake_timeout: Option<Duration>,
    /// Default 30s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
    /// Default 5s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub close_jitter: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub sni: Vec<String>,
    pub mode: Mode,
    #[serde(default)]
    pub tls: Option<RawTls>,
    pub backend: RawBackend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Default `none`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Default "1.2".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Default true: stateful cache and tickets, each per route so sessions never cross tenants.
    #[serde(default = "yes")]
    pub session_resumption: bool,
    /// Default false: at reload, also close live sessions whose client certificate the new CRLs revoke.
    #[serde(default)]
    pub revoke_live: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub servers: Vec<String>,
    /// Default `none`.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Default `cn`.
    #[serde(default)]
    pub identity: Identity,
    /// Default 3s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Off when absent.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Default `keep`.
    #[serde(default)]
    pub on_backend_down: OnBackendDown,
    /// Default 1: connect failures in a row that mark a server down without a health check; 0 never.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// Default 10s: how long such a server is skipped before it is tried again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub fail_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Default `tcp`.
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub rise: Option<u32>,
    #[serde(default)]
    pub fall: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// MQTT CONNECT answered by a CONNACK (after the route's PROXY header, if any).
    Mqtt,
}

/// What happens to a server's live sessions when its health check marks it down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendDown {
    /// Leave them: they end when the backend closes them.
    #[default]
    Keep,
    /// Close them (spread over `limits.close_jitter`) so clients reconnect to a healthy server.
    CloseSessions,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Terminate,
    Passthrough,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Terminate => "terminate",
            Mode::Passthrough => "passthrough",
            Mode::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    None,
    V1,
    V2,
}

/// What goes into the PROXY v2 CN sub-TLV, read from the verified client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    #[default]
    Cn,
    SanDns,
    SanUri,
    SanEmail,
}

/// Parses `250ms`, `5s`, `15m`, `1h`, `2d` (one integer and one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit (use ms, s, m, h or d)"))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| format!("duration {text:?} does not start with a number"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("duration {text:?} has unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

// ---------------------------------------------------------------------------------------------
// The validated config the server runs with.

#[derive(Debug, Clone)]
pub struct Limits {
    pub hello_timeout: Duration,
    pub max_hello_bytes: usize,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    pub close_jitter: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A route's backend pool.
#[derive(Debug)]
pub struct Backend {
    /// `host:port` as written; hostnames are resolved at connect time.
    pub servers: Vec<String>,
    pub proxy_protocol: ProxyProtocol,
    pub identity: Identity,
    pub connect_timeout: Duration,
    /// Where the next connection starts trying (round-robin over `servers`).
    pub next_server: std::sync::atomic::AtomicUsize,
    pub health_check: Option<HealthCheck>,
    /// Per server, in `servers` order: false while its health check says it is down.
    pub server_up: Vec<std::sync::atomic::AtomicBool>,
    pub on_backend_down: OnBackendDown,
    /// Passive health (routes without `health_check`): failures in a row that mark a server down.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Per server, in `servers` order: its passive health state.
    pub passive: Vec<crate::proxy::passive_health::PassiveHealth>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub mode: Mode,
    /// Present exactly when `mode` is terminate.
    pub tls: Option<tls::RouteTls>,
    pub backend: Backend,
}

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub reuse_port: bool,
    pub admin: Option<SocketAddr>,
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    pub limits: Limits,
    pub routes: Arc<RouteTable>,
    /// The config file and every certificate, key, CA and CRL file it names: what reload watches.
    pub files: Vec<PathBuf>,
    /// Expired certificates and certificates that do not cover their route's names: `check`
    /// fails on them; `run` and reload log them and serve (an expiring certificate must not
    /// take a running fleet down).
    pub certificate_problems: Vec<ConfigError>,
}

impl Config {
    /// Logs [`Config::certificate_problems`] as warnings.
    pub fn warn_certificate_problems(&self) {
        for problem in &self.certificate_problems {
            tracing::warn!(%problem, "certificate problem; serving it anyway");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// One problem in a config file, with the position it was found at (1-based; 0 = unknown).
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // No position (the file cannot be read, say): `file:0:0:` would point nowhere.
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Turns positions into errors for one file.
struct Reporter<'a> {
    file: &'a Path,
    at: Locator<'a>,
}

impl Reporter<'_> {
    fn error(&self, position: Position, message: String) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), line: position.0, column: position.1, message }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads, parses and validates a routes file, building every route's TLS config.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {error}"),
        }])
    })?;
    parse(&source, path)
}

/// Parses and validates config text; `path` names it in errors and anchors relative file paths.
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let report = Reporter { file: path, at: Locator::new(source) };
    let raw = parse_raw(source, &report).map_err(|error| ConfigErrors(vec![error]))?;
    validate(raw, &report, path)
}

/// The text as [`RawConfig`]: nesting bounded first, merge keys (`<<: *anchor`) applied.
fn parse_raw(source: &str, report: &Reporter) -> Result<RawConfig, ConfigError> {
    if let Err(deep) = yaml_depth::check(source) {
        return Err(report.error(
            (deep.line, deep.column),
            format!("nesting deeper than {} levels: a routes file needs far fewer", yaml_depth::MAX_DEPTH),
        ));
    }
    if !has_merge_key(source) {
        // The typed path keeps the parser's exact position for every error.
        return yaml_serde::from_str(source).map_err(|error| yaml_error(error, report));
    }
    let mut value: yaml_serde::Value = yaml_serde::from_str(source).map_err(|error| yaml_error(error, report))?;
    value.apply_merge().map_err(|error| yaml_error(error, report))?;
    yaml_serde::from_value(value).map_err(|error| {
        // Values carry no positions: point at the field the message names, if it is in the text.
        let message = error.to_string();
        let field = message.split('`').nth(1).unwrap_or_default();
        let position = report.at.find_key(field, report.at.whole()).unwrap_or((0, 0));
        report.error(position, message)
    })
}

/// Whether the text uses a YAML merge key (`<<:`) outside a comment or quoted value.
fn has_merge_key(source: &str) -> bool {
    source.lines().any(|line| {
        let code = line.split(" #").next().unwrap_or(line);
        code.trim_start().trim_start_matches(['-', ' ', '{']).starts_with("<<:") || code.contains(", <<:")
    })
}

fn yaml_error(error: yaml_serde::Error, report: &Reporter) -> ConfigError {
    let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = error.to_string();
    // The position goes in front, as for every other problem.
    let message = match message.rfind(" at line ") {
        Some(at) if line > 0 => message[..at].to_string(),
        _ => message,
    };
    report.error((line, column), message)
}

/// What validation collects: problems that refuse the file, and certificate problems that
/// `check` refuses but `run` and reload only warn about.
#[derive(Default)]
struct Findings {
    errors: Vec<ConfigError>,
    certificate: Vec<ConfigError>,
}

fn validate(raw: RawConfig, report: &Reporter, path: &Path) -> Result<Config, ConfigErrors> {
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
    let mut cache = tls::LoadCache::default();
    let now = unix_now();
    let mut routes = Vec::new();
    for (raw_route, &span) in raw.routes.iter().zip(&spans) {
        let first_pattern = names.patterns.len();
        names.add(raw_route, routes.len(), report, span, &mut found.errors);
        let backend = build_backend(raw_route, report, span, &mut found.errors);
        if let (Mode::Terminate, Some(raw_tls)) = (raw_route.mode, &raw_route.tls) {
            let named = [&raw_tls.cert, &raw_tls.key].into_iter().chain(&raw_tls.client_ca).chain(&raw_tls.crl);
            named.for_each(|file| files.add(base_dir.join(file)));
        }
        let route_tls = build_route_tls(raw_route, backend.identity, base_dir, &mut cache, report, span, &mut found);
        if let (Some(route_tls), Some(raw_tls)) = (&route_tls, &raw_route.tls) {
            let sni = names.patterns[first_pattern..].iter().map(|(pattern, _)| pattern.key());
            let sni = raw_route.sni.iter().zip(sni);
            check_certificate(&route_tls.served.leaf, raw_tls, sni, now, report, span, &mut found.certificate);
        }
        routes.push(Route { name: raw_route.name.clone(), mode: raw_route.mode, tls: route_tls, backend });
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
        certificate_problems: found.certificate,
    })
}

/// Route names and hostnames seen so far: each may be used by one route only.
#[derive(Default)]
struct Names<'r> {
    routes: HashMap<&'r str, usize>,
    hostnames: HashMap<String, &'r str>,
    patterns: Vec<(routes::Pattern, usize)>,
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
        for pattern in &raw_route.sni {
            let position = report.at.find(pattern, span);
            match routes::Pattern::parse(pattern) {
                Ok(parsed) => {
                    if let Some(other) = self.hostnames.insert(parsed.key(), &raw_route.name) {
                        let message = format!("hostname {pattern:?} is already used by route {other:?}");
                        errors.push(report.error(position, message));
                    }
                    self.patterns.push((parsed, index));
                }
                Err(reason) => errors.push(report.error(position, format!("bad hostname {pattern:?}: {reason}"))),
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

/// The route's TLS state, or `None` with its problems recorded (or for a route without TLS).
fn build_route_tls(
    raw_route: &RawRoute,
    identity: Identity,
    base_dir: &Path,
    cache: &mut tls::LoadCache,
    report: &Reporter,
    span: Span,
    found: &mut Findings,
) -> Option<tls::RouteTls> {
    match (raw_route.mode, &raw_route.tls) {
        (Mode::Terminate, Some(raw_tls)) => match tls::RouteTls::build(raw_tls, identity, base_dir, cache) {
            Ok(route_tls) => Some(route_tls),
            Err(problems) => {
                for problem in problems {
                    let position = report.at.find_value(problem.field, &problem.value, span);
                    found.errors.push(report.error(position, problem.message));
                }
                None
            }
        },
        (Mode::Terminate, None) => {
            let position = report.at.find_key("mode", span).unwrap_or((span.start, 1));
            let message = format!("route {:?} has `mode: terminate` but no `tls:` section", raw_route.name);
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

/// An expired (or not yet valid) certificate, and `sni` names it does not cover (RFC 6125).
fn check_certificate<'s>(
    leaf: &LeafFacts,
    raw_tls: &RawTls,
    sni: impl Iterator<Item = (&'s String, String)>,
    now: i64,
    report: &Reporter,
    span: Span,
    problems: &mut Vec<ConfigError>,
) {
    let cert = raw_tls.cert.display().to_string();
    let cert_at = || report.at.find_value("cert", &cert, span);
    if leaf.not_after < now {
        problems.push(report.error(cert_at(), format!("certificate {cert} expired on {}", leaf.not_after_text)));
    } else if leaf.not_before > now {
        problems
            .push(report.error(cert_at(), format!("certificate {cert} is not valid before {}", leaf.not_before_text)));
    }
    for (written, canonical) in sni {
        if !pem_files::covers(&leaf.dns_names, &canonical) {
            let mut shown = leaf.dns_names.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if leaf.dns_names.len() > NAMES_SHOWN {
                shown.push_str(", …");
            }
            if shown.is_empty() {
                shown = "no DNS names".into();
            }
            let message = format!("certificate {cert} does not cover {written:?} (it names {shown})");
            problems.push(report.error(report.at.find_value("sni", written, span), message));
        }
    }
}

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
    };
    // The smallest hello record header plus handshake header is 9 bytes; real hellos are > 100.
    if limits.max_hello_bytes < 512 {
        errors.push(report.error(
            key_at("max_hello_bytes"),
            format!("max_hello_bytes {} is below the 512-byte minimum", limits.max_hello_bytes),
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
    if raw.servers.is_empty() {
        errors.push(report.error(key_at("servers"), format!("route {:?} has no backend `servers`", raw_route.name)));
    }
    for server in &raw.servers {
        if let Err(reason) = check_server_address(server) {
            errors.push(report.error(
                report.at.find_value("servers", server, span),
                format!("bad backend server {server:?}: {reason}"),
            ));
        }
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
        servers: raw.servers.clone(),
        proxy_protocol: raw.proxy_protocol,
        identity: raw.identity,
        connect_timeout,
        next_server: Default::default(),
        server_up: raw.servers.iter().map(|_| std::sync::atomic::AtomicBool::new(true)).collect(),
        health_check,
        on_backend_down: raw.on_backend_down,
        max_fails: raw.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
        fail_timeout: raw.fail_timeout.unwrap_or(DEFAULT_FAIL_TIMEOUT),
        passive: raw.servers.iter().map(|_| Default::default()).collect(),
    }
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
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn server_addresses_are_checked() {
        assert!(check_server_address("127.0.0.1:1883").is_ok());
        assert!(check_server_address("[::1]:1883").is_ok());
        assert!(check_server_address("broker.internal:1883").is_ok());
        assert!(check_server_address("broker.internal").is_err());
        assert!(check_server_address("broker:99999").is_err());
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let text = "listen: [\"127.0.0.1:0\"]\nroutes:\n  - name: a\n    mode: tcp\n    colour: red\n    backend: {servers: [\"127.0.0.1:1\"]}\n";
        let errors = parse(text, Path::new("r.yaml")).unwrap_err();
        let first = &errors.0[0];
        assert_eq!(first.line, 5, "{errors}");
        assert!(first.message.contains("colour"), "{errors}");
    }

    #[test]
    fn empty_values_are_reported_not_searched_for_forever() {
        // Found by fuzzing: an empty needle made the position search loop forever.
        for text in [
            "listen: [\"127.0.0.1:1\"]\ndefault: \"\"\nroutes: [{name: a, mode: tcp, backend: {servers: [\"127.0.0.1:1\"]}}]\n",
            "listen: [\"127.0.0.1:1\"]\nroutes: [{name: a, sni: [\"\"], mode: tcp, backend: {servers: [\"\"]}}]\n",
        ] {
            assert!(parse(text, Path::new("r.yaml")).is_err());
        }
    }

    #[test]
    fn semantic_problems_are_all_listed_with_positions() {
        let text = "listen: [\"127.0.0.1:0\"]\ndefault: nowhere\nroutes:\n  - name: a\n    sni: [x.test]\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n  - name: b\n    sni: [X.test, \"*.bad*.test\"]\n    mode: tcp\n    backend: {servers: [\"nope\"]}\n";
        let errors = parse(text, Path::new("r.yaml")).unwrap_err();
        let lines: Vec<usize> = errors.0.iter().map(|e| e.line).collect();
        assert_eq!(errors.0.len(), 4, "{errors}");
        assert!(lines.contains(&9), "duplicate hostname on line 9: {errors}");
        assert!(lines.contains(&11), "bad server on line 11: {errors}");
        assert!(lines.contains(&2), "missing default route on line 2: {errors}");
    }
}
