//! Turns the directive tree of an nginx config into a snigate routes file, with a warning or an
//! error (file:line) for everything that has no exact equivalent.
//!
//! One nginx `server {}` in `stream {}` becomes one routes file. Its `proxy_pass` and, on
//! terminating servers, its `ssl_certificate` / `ssl_certificate_key` are either fixed or a
//! variable set by a `map` on the SNI (`$ssl_preread_server_name` / `$ssl_server_name`). Every
//! hostname listed in those maps gets the tuple (backend, certificate, key) the maps give it, and
//! hostnames with the same tuple become one route; the tuple of the maps' `default` values
//! becomes the `default` route.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ast::Directive;
use super::yaml::{self, RoutesFile};
use crate::routes;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Translated, but not exactly: the message says what differs.
    Warning,
    /// Cannot be translated; no routes file is written.
    Error,
}

/// One finding, with where in which file it comes from (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}:{}: {severity}: {}", self.file.display(), self.line, self.message)
    }
}

/// Choices the command line makes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which `server {}` of `stream {}` to translate (1-based) when there are several.
    pub server: Option<usize>,
}

/// Top-level directives that only concern nginx's own process or other modules.
const IGNORED_TOP_LEVEL: &[&str] = &[
    "user",
    "worker_processes",
    "worker_rlimit_nofile",
    "worker_cpu_affinity",
    "worker_priority",
    "worker_shutdown_timeout",
    "pid",
    "error_log",
    "events",
    "http",
    "load_module",
    "env",
    "daemon",
    "master_process",
    "pcre_jit",
    "thread_pool",
    "lock_file",
    "timer_resolution",
    "working_directory",
    "ssl_engine",
];

/// Logging directives: snigate writes its own per-connection line (`--log-format json`).
const LOGGING: &[&str] = &["access_log", "error_log", "log_format", "open_log_file_cache"];

/// Directives translated below (anything else in `stream` or `server` gets a message).
const TRANSLATED: &[&str] = &[
    "listen",
    "ssl_preread",
    "proxy_pass",
    "proxy_protocol",
    "proxy_connect_timeout",
    "proxy_timeout",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_client_certificate",
    "ssl_trusted_certificate",
    "ssl_verify_client",
    "ssl_crl",
    "ssl_protocols",
    "ssl_alpn",
    "ssl_handshake_timeout",
    "ssl_session_tickets",
    "preread_timeout",
    "preread_buffer_size",
    "set_real_ip_from",
    "limit_conn",
];

/// Directives with no equivalent whose loss changes nothing important: why, for the warning.
fn ignored_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "ssl_session_cache" | "ssl_session_timeout" => {
            "snigate keeps its own session cache and tickets per route (`tls.session_resumption`); size and lifetime are not configurable"
        }
        "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_ecdh_curve" | "ssl_dhparam" | "ssl_conf_command" => {
            "rustls chooses the cipher suites and key exchange groups (modern ones only)"
        }
        "ssl_verify_depth" => "client certificate chains of any depth up to the CA are accepted",
        "server_name" => {
            "with one `server {}` on a port nginx serves every name with it; snigate routes by the names in the `map`s"
        }
        "ssl_stapling" | "ssl_stapling_verify" | "ssl_stapling_file" | "ssl_stapling_responder" | "ssl_ocsp"
        | "ssl_ocsp_cache" | "ssl_ocsp_responder" => "snigate does no OCSP (use `tls.crl` for revocation)",
        "resolver" | "resolver_timeout" => {
            "snigate resolves backend hostnames with the system resolver at every connect"
        }
        "limit_conn_zone" | "limit_conn_log_level" | "limit_conn_dry_run" => {
            "only `limit_conn` on a zone keyed by the client address has an equivalent (`limits.max_connections_per_ip`)"
        }
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            "snigate always tries the next server after a connect error or timeout, each server once"
        }
        "proxy_buffer_size" | "proxy_download_rate" | "proxy_upload_rate" | "proxy_socket_keepalive" | "tcp_nodelay"
        | "proxy_bind" | "proxy_responses" | "proxy_requests" | "proxy_half_close" | "variables_hash_max_size"
        | "variables_hash_bucket_size" | "map_hash_max_size" | "map_hash_bucket_size" | "ssl_buffer_size" => {
            "no equivalent setting"
        }
        _ => return None,
    })
}

/// Directives whose loss would change who may connect or what is sent: translation stops.
fn refused_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "allow" | "deny" => {
            "client address rules have no equivalent, and dropping them would open the service to everyone; filter with a firewall and remove these lines"
        }
        "ssl_password_file" => "encrypted private keys are not supported; decrypt the key",
        "return" => "`return` (answer with a fixed value) has no equivalent",
        "ssl_reject_handshake" => "no equivalent; with `default: reject` snigate refuses unknown names",
        name if name.starts_with("proxy_ssl") => "snigate does not open TLS connections to backends",
        _ => return None,
    })
}

/// Translates the tree of `main_file` (its directory anchors relative certificate paths, like nginx).
pub fn translate(tree: &[Directive], main_file: &Path, options: &Options) -> (Option<RoutesFile>, Vec<Diagnostic>) {
    let base_dir = match main_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
    let mut translator = Translator { diagnostics: Vec::new(), base_dir, main_file: main_file.to_path_buf() };
    let file = translator.file(tree, options);
    let failed = translator.diagnostics.iter().any(|d| d.severity == Severity::Error);
    (file.filter(|_| !failed), in_file_order(translator.diagnostics))
}

/// Files in the order they were first reported, lines in order within each.
fn in_file_order(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut files: Vec<PathBuf> = Vec::new();
    for diagnostic in &diagnostics {
        if !files.contains(&diagnostic.file) {
            files.push(diagnostic.file.clone());
        }
    }
    diagnostics.sort_by_key(|d| (files.iter().position(|f| *f == d.file), d.line));
    diagnostics
}

struct Translator {
    diagnostics: Vec<Diagnostic>,
    base_dir: PathBuf,
    main_file: PathBuf,
}

/// A `map` on the server name, its keys turned into snigate hostname patterns.
struct SniMap<'a> {
    directive: &'a Directive,
    /// (hostname pattern as snigate writes it, value), in map order.
    entries: Vec<(String, String)>,
    /// The same, by pattern.
    index: HashMap<String, String>,
    default: Option<String>,
}

impl SniMap<'_> {
    /// The value nginx's map gives the names `pattern` stands for: the entry for the pattern
    /// itself, else the longest wildcard that covers it, else the default.
    fn lookup(&self, pattern: &str) -> Option<&str> {
        if let Some(value) = self.index.get(pattern) {
            return Some(value);
        }
        let mut suffix = match pattern.strip_prefix("*.") {
            Some(suffix) => suffix.split_once('.').map(|(_, parent)| parent),
            None => pattern.split_once('.').map(|(_, parent)| parent),
        };
        while let Some(candidate) = suffix {
            if let Some(value) = self.index.get(&format!("*.{candidate}")) {
                return Some(value);
            }
            suffix = candidate.split_once('.').map(|(_, parent)| parent);
        }
        self.default.as_deref()
    }
}

struct Upstream<'a> {
    directive: &'a Directive,
    servers: Vec<String>,
}

/// What one of the per-hostname settings (backend, certificate, key) is.
enum Setting<'m, 'a> {
    Fixed(String),
    Mapped(&'m SniMap<'a>),
}

impl Setting<'_, '_> {
    fn value(&self, pattern: Option<&str>) -> Option<String> {
        match (self, pattern) {
            (Setting::Fixed(value), _) => Some(value.clone()),
            (Setting::Mapped(map), Some(pattern)) => map.lookup(pattern).map(str::to_string),
            (Setting::Mapped(map), None) => map.default.clone(),
        }
    }
}

impl Translator {
    fn push(&mut self, severity: Severity, directive: &Directive, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: directive.file.to_path_buf(),
            line: directive.line,
            message,
        });
    }

    fn warn(&mut self, directive: &Directive, message: impl Into<String>) {
        self.push(Severity::Warning, directive, message.into());
    }

    fn error(&mut self, directive: &Directive, message: impl Into<String>) {
        self.push(Severity::Error, directive, message.into());
    }

    fn error_in_file(&mut self, message: String) {
        self.diagnostics.push(Diagnostic { severity: Severity::Error, file: self.main_file.clone(), line: 0, message });
    }

    fn file(&mut self, tree: &[Directive], options: &Options) -> Option<RoutesFile> {
        let mut stream = Vec::new();
        for directive in tree {
            match directive.name.as_str() {
                "stream" => stream.extend(directive.children()),
                "mail" => self.warn(directive, "`mail {}` ignored: snigate proxies TLS and TCP streams only"),
                name if IGNORED_TOP_LEVEL.contains(&name) => {}
                name => self.warn(directive, format!("unknown top-level directive `{name}` ignored")),
            }
        }
        if stream.is_empty() {
            self.error_in_file("no `stream {}` block: nothing to translate".into());
            return None;
        }

        let mut maps = HashMap::new();
        let mut upstreams = HashMap::new();
        let mut servers = Vec::new();
        let mut inherited = Vec::new();
        let mut per_ip_zones = HashSet::new();
        for directive in stream {
            match directive.name.as_str() {
                "map" => {
                    if let Some((variable, map)) = self.map(directive) {
                        maps.insert(variable, map);
                    }
                }
                "upstream" => {
                    if let Some((name, upstream)) = self.upstream(directive) {
                        upstreams.insert(name, upstream);
                    }
                }
                "server" => servers.push(directive),
                "limit_conn_zone" => match (directive.args.first().map(String::as_str), directive.args.get(1)) {
                    (Some("$binary_remote_addr" | "$remote_addr"), Some(zone)) => {
                        let name = zone.trim_start_matches("zone=").split(':').next().unwrap_or_default();
                        per_ip_zones.insert(name.to_string());
                    }
                    _ => self.warn(directive, ignored_reason("limit_conn_zone").unwrap_or_default()),
                },
                _ if directive.block.is_some() => {
                    self.warn(directive, format!("block `{}` in `stream` ignored", directive.name))
                }
                _ => inherited.push(directive),
            }
        }

        let server = match (servers.as_slice(), options.server) {
            ([], _) => {
                self.error_in_file("`stream {}` has no `server {}`: nothing to translate".into());
                return None;
            }
            ([only], None | Some(1)) => *only,
            (all, Some(index)) if (1..=all.len()).contains(&index) => all[index - 1],
            (all, chosen) => {
                let listed: Vec<String> = all
                    .iter()
                    .enumerate()
                    .map(|(i, server)| {
                        let listen = server.children().iter().find(|d| d.name == "listen");
                        let listen = listen.map(|d| d.args.join(" ")).unwrap_or_else(|| "no listen".into());
                        format!("{} = {} ({})", i + 1, server.at(), listen)
                    })
                    .collect();
                let why = match chosen {
                    Some(index) => format!("there is no server {index}"),
                    None => "snigate routes all its listen addresses with one table, so one routes file stands for one nginx `server {}`".into(),
                };
                self.error_in_file(format!(
                    "{} `server {{}}` blocks in `stream {{}}`: {why}; choose one with --server N and run one snigate per block: {}",
                    all.len(),
                    listed.join(", ")
                ));
                return None;
            }
        };
        let context = Context { maps: &maps, upstreams: &upstreams, per_ip_zones: &per_ip_zones };
        self.server(server, &inherited, &context)
    }

    /// `map $source $variable { … }` on the server name.
    fn map<'a>(&mut self, directive: &'a Directive) -> Option<(String, SniMap<'a>)> {
        let [source, variable] = directive.args.as_slice() else {
            self.error(directive, "`map` takes a source and a variable");
            return None;
        };
        let Some(variable) = variable_name(variable) else {
            self.error(directive, format!("{variable:?} is not a variable name"));
            return None;
        };
        if !matches!(source.as_str(), "$ssl_preread_server_name" | "$ssl_server_name") {
            // Only an error if the variable is used; remembered without entries.
            return Some((variable, SniMap { directive, entries: Vec::new(), index: HashMap::new(), default: None }));
        }
        let hostnames = directive.children().iter().any(|d| d.name == "hostnames" && d.args.is_empty());
        let explicit: HashSet<String> = directive
            .children()
            .iter()
            .map(|d| d.name.to_ascii_lowercase())
            .filter(|key| !key.starts_with('.'))
            .collect();
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut index = HashMap::new();
        let mut default = None;
        for entry in directive.children() {
            let key = entry.name.as_str();
            match (key, entry.args.as_slice()) {
                ("hostnames" | "volatile", []) => {}
                ("default", [value]) => default = Some(value.clone()),
                (_, [value]) => {
                    for pattern in self.map_key(entry, key, hostnames, &explicit) {
                        if index.insert(pattern.clone(), value.clone()).is_some() {
                            self.error(entry, format!("hostname {pattern:?} is listed twice in this map"));
                        } else {
                            entries.push((pattern, value.clone()));
                        }
                    }
                }
                _ => self.error(entry, format!("map entry `{key}` needs exactly one value")),
            }
        }
        Some((variable, SniMap { directive, entries, index, default }))
    }

    /// A map key as snigate hostname patterns (none when it cannot match or is refused).
    fn map_key(&mut self, entry: &Directive, key: &str, hostnames: bool, explicit: &HashSet<String>) -> Vec<String> {
        if key.starts_with('~') {
            self.error(entry, format!("regex key {key:?} has no equivalent: list the names or use a wildcard"));
            return Vec::new();
        }
        if key.is_empty() {
            self.warn(entry, "key \"\" (no SNI): snigate sends connections without a valid SNI to `default`");
            return Vec::new();
        }
        let wildcard_shaped = key.starts_with('.') || key.starts_with("*.") || key.ends_with(".*");
        if wildcard_shaped && !hostnames {
            self.warn(
                entry,
                format!("{key:?} is a literal string without `hostnames;` in the map and never matches a server name; dropped"),
            );
            return Vec::new();
        }
        if key.ends_with(".*") {
            self.error(entry, format!("{key:?}: wildcards at the end of a name have no equivalent; list the names"));
            return Vec::new();
        }
        let key = key.to_ascii_lowercase();
        let patterns = match key.strip_prefix('.') {
            Some(suffix) if explicit.contains(&format!("*.{suffix}")) => vec![suffix.to_string()],
            Some(suffix) if explicit.contains(suffix) => vec![format!("*.{suffix}")],
            Some(suffix) => vec![suffix.to_string(), format!("*.{suffix}")],
            None => vec![key],
        };
        patterns
            .into_iter()
            .filter(|pattern| match routes::Pattern::parse(pattern) {
                Ok(_) => true,
                Err(reason) => {
                    self.error(entry, format!("hostname {pattern:?}: {reason}"));
                    false
                }
            })
            .collect()
    }

    /// `upstream name { server host:port …; }`.
    fn upstream<'a>(&mut self, directive: &'a Directive) -> Option<(String, Upstream<'a>)> {
        let [name] = directive.args.as_slice() else {
            self.error(directive, "`upstream` takes one name");
            return None;
        };
        let mut servers = Vec::new();
        let mut backups = Vec::new();
        for child in directive.children() {
            match child.name.as_str() {
                "server" => {
                    let Some((address, parameters)) = child.args.split_first() else {
                        self.error(child, "`server` needs an address");
                        continue;
                    };
                    let Some(address) = self.backend_address(child, address) else { continue };
                    let mut backup = false;
                    let mut down = false;
                    for parameter in parameters {
                        match parameter.as_str() {
                            "backup" => backup = true,
                            "down" => down = true,
                            other => self.warn(
                                child,
                                format!("server parameter `{other}` ignored: snigate starts each connection at the next server and fails over to the others"),
                            ),
                        }
                    }
                    if down {
                        self.warn(child, format!("server {address} is marked `down`: left out"));
                    } else if backup {
                        self.warn(
                            child,
                            format!("snigate has no backup servers: {address} is listed last but takes its share of new connections"),
                        );
                        backups.push(address);
                    } else {
                        servers.push(address);
                    }
                }
                "zone" | "keepalive" | "keepalive_timeout" | "keepalive_requests" => {}
                "hash" | "least_conn" | "random" | "least_time" | "ip_hash" => self.warn(
                    child,
                    format!(
                        "`{}` ignored: snigate starts each connection at the next server (round-robin)",
                        child.name
                    ),
                ),
                other => self.warn(child, format!("`{other}` in `upstream` ignored")),
            }
        }
        servers.extend(backups);
        if servers.is_empty() {
            self.error(directive, format!("upstream {name:?} has no usable server"));
        }
        Some((name.clone(), Upstream { directive, servers }))
    }

    /// `host:port` as the schema takes it; nginx also allows `unix:` sockets, which snigate does not.
    fn backend_address(&mut self, directive: &Directive, address: &str) -> Option<String> {
        if address.starts_with("unix:") {
            self.error(directive, format!("{address}: snigate connects to TCP backends only"));
            return None;
        }
        if address.contains('$') {
            self.error(directive, format!("{address}: variables in addresses cannot be resolved"));
            return None;
        }
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok());
        if !port_ok {
            self.error(directive, format!("{address:?} is not host:port"));
            return None;
        }
        Some(address.to_string())
    }

    fn server(&mut self, server: &Directive, inherited: &[&Directive], context: &Context) -> Option<RoutesFile> {
        let local: Vec<&Directive> = server.children().iter().collect();
        let settings = Settings { inherited, local: &local };
        self.report_untranslated(inherited.iter().chain(&local).copied());

        let mut file = RoutesFile {
            header: vec![format!("Translated by `snigate import-nginx` from the `server {{}}` at {}.", server.at())],
            ..RoutesFile::default()
        };
        let (terminate, accept_proxy) = self.listen(&settings, server, &mut file);
        let preread = settings.last("ssl_preread").is_some_and(|d| d.args.first().is_some_and(|a| a == "on"));
        let mode = match (terminate, preread) {
            (true, _) => "terminate",
            (false, true) => "passthrough",
            (false, false) => "tcp",
        };
        if accept_proxy {
            self.accept_proxy_from(&settings, server, &mut file);
        } else if let Some(directive) = settings.last("set_real_ip_from") {
            self.warn(directive, "`set_real_ip_from` without `listen … proxy_protocol` has no effect; ignored");
        }
        self.limits(&settings, context, &mut file);

        let Some(proxy_pass) = settings.last("proxy_pass") else {
            self.error(server, "`server {}` has no `proxy_pass`");
            return None;
        };
        let backend = self.setting(proxy_pass, context, mode)?;
        let (cert, key) = if terminate {
            let (Some(cert), Some(key)) = (settings.last("ssl_certificate"), settings.last("ssl_certificate_key"))
            else {
                self.error(server, "`listen … ssl` needs `ssl_certificate` and `ssl_certificate_key`");
                return None;
            };
            if settings.all("ssl_certificate").len() > 1 {
                self.warn(
                    cert,
                    "several `ssl_certificate`s (e.g. RSA and ECDSA): snigate serves one per route, the last one",
                );
            }
            (Some(self.setting(cert, context, mode)?), Some(self.setting(key, context, mode)?))
        } else {
            for name in ["ssl_certificate", "ssl_certificate_key"] {
                if let Some(directive) = settings.last(name) {
                    self.warn(directive, format!("`{name}` ignored: the server does not `listen … ssl`"));
                }
            }
            (None, None)
        };
        let template = yaml::Route {
            mode,
            tls: if terminate { self.tls(&settings) } else { None },
            proxy_protocol: settings.last("proxy_protocol").and_then(|d| match d.args.first().map(String::as_str) {
                Some("on") => Some((
                    "v1",
                    "nginx `proxy_protocol on` sends v1; v2 also carries the SNI, ALPN and client certificate CN",
                )),
                _ => None,
            }),
            connect_timeout: settings.last("proxy_connect_timeout").and_then(|d| self.duration(d)),
            ..yaml::Route::default()
        };

        let settings_by_name = [Some(&backend), cert.as_ref(), key.as_ref()];
        let grouping = group_hostnames(&settings_by_name.into_iter().flatten().collect::<Vec<_>>());
        for pattern in &grouping.left_out {
            self.warn(
                proxy_pass,
                format!("{pattern:?} has no backend, certificate or key in the maps and no default there; left out"),
            );
        }
        self.routes(&grouping, &template, proxy_pass, context, &mut file)?;
        if file.routes.is_empty() {
            self.error(proxy_pass, "no route results: the maps list no hostname and have no default");
            return None;
        }
        if grouping.default.is_none() {
            file.header.push(
                "The maps have no `default`: names they do not list are refused (`default: reject`).".to_string(),
            );
        }
        Some(file)
    }

    /// A warning or an error for every directive that is not translated.
    fn report_untranslated<'d>(&mut self, directives: impl Iterator<Item = &'d Directive>) {
        for directive in directives {
            let name = directive.name.as_str();
            if TRANSLATED.contains(&name) || LOGGING.contains(&name) {
                continue;
            }
            if let Some(reason) = refused_reason(name) {
                self.error(directive, format!("`{name}`: {reason}"));
            } else if let Some(reason) = ignored_reason(name) {
                self.warn(directive, format!("`{name}` ignored: {reason}"));
            } else {
                self.warn(directive, format!("`{name}` ignored: no snigate equivalent"));
            }
        }
    }

    /// `set_real_ip_from` of a server that reads PROXY headers (`listen … proxy_protocol`).
    fn accept_proxy_from(&mut self, settings: &Settings, server: &Directive, file: &mut RoutesFile) {
        let from = settings.all("set_real_ip_from");
        if from.is_empty() {
            self.warn(server, "`listen … proxy_protocol` without `set_real_ip_from`: nginx takes PROXY headers from anyone; so does this translation (`accept_proxy_from: 0.0.0.0/0, ::/0`); narrow it to your load balancers");
            file.accept_proxy_from = vec!["0.0.0.0/0".into(), "::/0".into()];
        }
        for directive in from {
            for address in &directive.args {
                let cidr = match (address.contains('/'), address.contains(':')) {
                    (true, _) => address.clone(),
                    (false, true) => format!("{address}/128"),
                    (false, false) => format!("{address}/32"),
                };
                if cidr.parse::<ipnet::IpNet>().is_ok() {
                    file.accept_proxy_from.push(cidr);
                } else {
                    self.error(directive, format!("{address:?} is not an IP address or CIDR"));
                }
            }
        }
    }

    /// One route per group of hostnames, named after its upstream (and its first hostname when
    /// several groups share an upstream); the group of the default values is the `default` route.
    fn routes(
        &mut self,
        grouping: &Grouping,
        template: &yaml::Route,
        proxy_pass: &Directive,
        context: &Context,
        file: &mut RoutesFile,
    ) -> Option<()> {
        let mut per_backend: HashMap<&str, usize> = HashMap::new();
        for (values, _) in &grouping.groups {
            *per_backend.entry(values[0].as_str()).or_default() += 1;
        }
        let mut names_used = HashSet::new();
        for (values, sni) in &grouping.groups {
            let backend = &values[0];
            let mut name = route_name(backend);
            if per_backend.get(backend.as_str()).copied().unwrap_or(0) > 1 {
                let first = sni.first().map_or("default", |first| first.trim_start_matches("*."));
                name = format!("{name}-{}", route_name(first));
            }
            let mut unique = name.clone();
            let mut counter = 2;
            while !names_used.insert(unique.clone()) {
                unique = format!("{name}-{counter}");
                counter += 1;
            }
            let (servers, origin) = self.servers(backend, proxy_pass, context)?;
            let tls = template.tls.as_ref().map(|common| yaml::Tls {
                cert: self.path(&values[1]),
                key: self.path(&values[2]),
                ..common.clone()
            });
            if Some(values) == grouping.default.as_ref() {
                file.default = Some(unique.clone());
            }
            file.routes.push(yaml::Route {
                name: unique,
                comment: origin,
                sni: sni.clone(),
                tls,
                servers,
                connect_timeout: template.connect_timeout.clone(),
                ..*template
            });
        }
        Some(())
    }

    /// `listen` lines: the addresses, whether they terminate TLS, whether they read PROXY headers.
    fn listen(&mut self, settings: &Settings, server: &Directive, file: &mut RoutesFile) -> (bool, bool) {
        let listens = settings.local_all("listen");
        if listens.is_empty() {
            self.error(server, "`server {}` has no `listen`");
        }
        let mut ssl = Vec::new();
        let mut proxy_protocol = false;
        for directive in listens {
            let Some((address, parameters)) = directive.args.split_first() else {
                self.error(directive, "`listen` needs an address");
                continue;
            };
            match listen_address(address) {
                Ok(address) => {
                    if !file.listen.contains(&address) {
                        file.listen.push(address);
                    }
                }
                Err(reason) => self.error(directive, format!("listen {address:?}: {reason}")),
            }
            let mut this_ssl = false;
            for parameter in parameters {
                match parameter.as_str() {
                    "ssl" => this_ssl = true,
                    "proxy_protocol" => proxy_protocol = true,
                    "udp" => self.error(directive, "`udp` listeners have no equivalent: snigate proxies TCP"),
                    other => self.warn(directive, format!("listen parameter `{other}` ignored")),
                }
            }
            ssl.push((directive, this_ssl));
        }
        let terminate = ssl.iter().any(|(_, on)| *on);
        if terminate {
            for (directive, on) in &ssl {
                if !on {
                    self.error(
                        directive,
                        "this `listen` has no `ssl` while another one has: snigate terminates on all listeners of a route or none",
                    );
                }
            }
        }
        (terminate, proxy_protocol)
    }

    fn limits(&mut self, settings: &Settings, context: &Context, file: &mut RoutesFile) {
        for (nginx, key) in [
            ("proxy_timeout", "idle_timeout"),
            ("ssl_handshake_timeout", "handshake_timeout"),
            ("preread_timeout", "hello_timeout"),
        ] {
            if let Some(value) = settings.last(nginx).and_then(|d| self.duration(d)) {
                file.limits.push((key, value));
            }
        }
        if let Some(directive) = settings.last("preread_buffer_size") {
            match directive.args.first().and_then(|size| parse_size(size)) {
                Some(bytes) => file.limits.push(("max_hello_bytes", bytes.to_string())),
                None => self.error(directive, "`preread_buffer_size` needs a size like 16k"),
            }
        }
        if let Some(directive) = settings.last("limit_conn") {
            match directive.args.as_slice() {
                [zone, count] if context.per_ip_zones.contains(zone) && count.parse::<usize>().is_ok() => {
                    file.limits.push(("max_connections_per_ip", count.clone()));
                }
                _ => self.warn(
                    directive,
                    "`limit_conn` ignored: only a zone keyed by `$binary_remote_addr` or `$remote_addr` has an equivalent (`limits.max_connections_per_ip`)",
                ),
            }
        }
    }

    /// The TLS settings every route of a terminating server shares (the certificate comes later).
    fn tls(&mut self, settings: &Settings) -> Option<yaml::Tls> {
        let mut tls = yaml::Tls::default();
        let verify = settings.last("ssl_verify_client");
        let client_ca = settings.last("ssl_client_certificate");
        let trusted = settings.last("ssl_trusted_certificate");
        match verify.and_then(|d| d.args.first()).map(String::as_str) {
            None | Some("off") => {}
            Some("on") => tls.client_auth = Some("required"),
            Some("optional") => tls.client_auth = Some("optional"),
            Some(other) => {
                let directive = verify?;
                self.error(
                    directive,
                    format!("`ssl_verify_client {other}` has no equivalent: snigate verifies every client certificate it accepts"),
                );
            }
        }
        if tls.client_auth.is_some() {
            let ca = match (client_ca, trusted) {
                (Some(ca), Some(trusted)) => {
                    self.warn(
                        trusted,
                        "`ssl_trusted_certificate` ignored: snigate trusts the CAs in `tls.client_ca` only; append its certificates to the `ssl_client_certificate` file if client certificates chain to them",
                    );
                    Some(ca)
                }
                (ca, trusted) => ca.or(trusted),
            };
            match ca.and_then(|d| d.args.first()) {
                Some(path) => tls.client_ca = Some(self.path(path)),
                None => self.error(verify?, "`ssl_verify_client` needs `ssl_client_certificate` (the client CA)"),
            }
        }
        for crl in settings.all("ssl_crl") {
            if let Some(path) = crl.args.first() {
                tls.crl.push(self.path(path));
            }
        }
        if let Some(directive) = settings.last("ssl_alpn") {
            tls.alpn = directive.args.clone();
        }
        if let Some(directive) = settings.last("ssl_protocols") {
            let has = |version: &str| directive.args.iter().any(|arg| arg == version);
            let old: Vec<&String> =
                directive.args.iter().filter(|a| !matches!(a.as_str(), "TLSv1.2" | "TLSv1.3")).collect();
            if !old.is_empty() {
                self.warn(directive, format!("{old:?} dropped: snigate speaks TLS 1.2 and 1.3 only"));
            }
            match (has("TLSv1.2"), has("TLSv1.3")) {
                (true, true) => {}
                (true, false) => self.warn(
                    directive,
                    "TLS 1.3 is not listed, but snigate accepts it too (it has a minimum version only)",
                ),
                (false, true) => tls.min_version = Some("1.3"),
                (false, false) => self.error(directive, "neither TLSv1.2 nor TLSv1.3 is enabled"),
            }
        }
        let tickets_off =
            settings.last("ssl_session_tickets").is_some_and(|d| d.args.first().is_some_and(|a| a == "off"));
        if tickets_off {
            tls.session_resumption = Some(false);
        }
        Some(tls)
    }

    /// A directive whose value is fixed or a map variable.
    fn setting<'m, 'a>(
        &mut self,
        directive: &Directive,
        context: &Context<'m, 'a>,
        mode: &str,
    ) -> Option<Setting<'m, 'a>> {
        let [value] = directive.args.as_slice() else {
            self.error(directive, format!("`{}` takes one value", directive.name));
            return None;
        };
        if !value.contains('$') {
            return Some(Setting::Fixed(value.clone()));
        }
        let Some(variable) = variable_name(value) else {
            self.error(
                directive,
                format!("{value:?}: only a whole variable set by a `map` on the server name can be translated"),
            );
            return None;
        };
        let Some(map) = context.maps.get(&variable) else {
            self.error(directive, format!("${variable} is not set by any `map` in `stream {{}}`: cannot resolve it"));
            return None;
        };
        let source = map.directive.args.first().map(String::as_str).unwrap_or_default();
        match source {
            "$ssl_preread_server_name" | "$ssl_server_name" => {}
            other => {
                self.error(
                    map.directive,
                    format!("${variable} is mapped from {other}: snigate routes by server name (SNI) only"),
                );
                return None;
            }
        }
        if source == "$ssl_preread_server_name" && mode == "tcp" {
            self.error(
                directive,
                format!("${variable} is mapped from $ssl_preread_server_name, but `ssl_preread on;` is missing: nginx never reads the server name here; add it"),
            );
            return None;
        }
        if source == "$ssl_server_name" && mode != "terminate" {
            self.warn(map.directive, "$ssl_server_name is empty unless nginx terminates TLS; translated as the SNI");
        }
        if let Some((_, value)) = map.entries.iter().find(|(_, value)| value.contains('$')) {
            self.error(map.directive, format!("map value {value:?} holds a variable: cannot resolve it"));
            return None;
        }
        Some(Setting::Mapped(map))
    }

    /// An upstream's servers, or a `host:port` written directly; and a comment naming the origin.
    fn servers(&mut self, value: &str, proxy_pass: &Directive, context: &Context) -> Option<(Vec<String>, String)> {
        if let Some(upstream) = context.upstreams.get(value) {
            return Some((upstream.servers.clone(), format!("upstream {value} ({})", upstream.directive.at())));
        }
        if !value.contains(':') {
            self.error(proxy_pass, format!("no `upstream {value}` in `stream {{}}`, and {value:?} is not host:port"));
            return None;
        }
        let address = self.backend_address(proxy_pass, value)?;
        Some((vec![address], format!("proxy_pass {value} ({})", proxy_pass.at())))
    }

    fn duration(&mut self, directive: &Directive) -> Option<String> {
        match directive.args.first().and_then(|text| nginx_duration_ms(text)) {
            Some(millis) => Some(format_duration(millis)),
            None => {
                self.error(directive, format!("`{}` needs a time like 3s, 500ms or 1m", directive.name));
                None
            }
        }
    }

    /// Relative certificate paths are relative to the main config's directory in nginx; the routes
    /// file may live elsewhere, so they are written absolute.
    fn path(&self, path: &str) -> String {
        let path = Path::new(path);
        if path.is_absolute() {
            path.display().to_string()
        } else {
            self.base_dir.join(path).display().to_string()
        }
    }
}

/// Hostnames grouped by the values the per-hostname settings give them.
struct Grouping {
    /// (values in settings order: backend, then certificate and key when terminating; hostnames),
    /// in the order the maps list them; the default group last, with no hostnames of its own.
    groups: Vec<(Vec<String>, Vec<String>)>,
    /// The values for names no map lists; `None` when a map has no default (reject).
    default: Option<Vec<String>>,
    /// Hostnames for which some setting has no value.
    left_out: Vec<String>,
}

fn group_hostnames(settings: &[&Setting]) -> Grouping {
    let mut patterns: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for setting in settings {
        if let Setting::Mapped(map) = setting {
            for (pattern, _) in &map.entries {
                if seen.insert(pattern.as_str()) {
                    patterns.push(pattern);
                }
            }
        }
    }
    let values = |pattern: Option<&str>| -> Option<Vec<String>> {
        settings.iter().map(|setting| setting.value(pattern).filter(|v| !v.is_empty())).collect()
    };
    let mut grouping = Grouping { groups: Vec::new(), default: values(None), left_out: Vec::new() };
    let mut group_of: HashMap<Vec<String>, usize> = HashMap::new();
    for pattern in patterns {
        let Some(values) = values(Some(pattern)) else {
            grouping.left_out.push(pattern.to_string());
            continue;
        };
        match group_of.get(&values) {
            Some(&group) => grouping.groups[group].1.push(pattern.to_string()),
            None => {
                group_of.insert(values.clone(), grouping.groups.len());
                grouping.groups.push((values, vec![pattern.to_string()]));
            }
        }
    }
    if let Some(default) = &grouping.default {
        if !group_of.contains_key(default) {
            grouping.groups.push((default.clone(), Vec::new()));
        }
    }
    grouping
}

/// Maps and upstreams of `stream {}`, and the `limit_conn_zone`s keyed by client address.
struct Context<'m, 'a> {
    maps: &'m HashMap<String, SniMap<'a>>,
    upstreams: &'m HashMap<String, Upstream<'a>>,
    per_ip_zones: &'m HashSet<String>,
}

/// A server's directives and those it inherits from `stream {}` (a name set in the server wins).
struct Settings<'s, 'a> {
    inherited: &'s [&'a Directive],
    local: &'s [&'a Directive],
}

impl<'a> Settings<'_, 'a> {
    fn all(&self, name: &str) -> Vec<&'a Directive> {
        let local = self.local_all(name);
        if !local.is_empty() {
            return local;
        }
        self.inherited.iter().copied().filter(|d| d.name == name).collect()
    }

    fn local_all(&self, name: &str) -> Vec<&'a Directive> {
        self.local.iter().copied().filter(|d| d.name == name).collect()
    }

    fn last(&self, name: &str) -> Option<&'a Directive> {
        self.all(name).pop()
    }
}

/// `$name` or `${name}` as a whole value → `name`.
fn variable_name(value: &str) -> Option<String> {
    let name = value.strip_prefix('$')?;
    let name = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or(name);
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| name.to_string())
}

/// A route name from an upstream name or an address: letters, digits, `-`, `_`, `.`.
fn route_name(value: &str) -> String {
    let name: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "route".into()
    } else {
        name.into()
    }
}

/// nginx `listen` address → `ip:port`: `443`, `*:443`, `1.2.3.4:443`, `[::]:443`.
fn listen_address(address: &str) -> Result<String, &'static str> {
    if address.starts_with("unix:") {
        return Err("unix sockets have no equivalent");
    }
    let address = address.strip_prefix("*:").unwrap_or(address);
    if let Ok(port) = address.parse::<u16>() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    address
        .parse::<SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| "not a port or IP:port (snigate listens on IP addresses)")
}

/// nginx times: `500ms`, `3s`, `1m30s`, `60` (seconds); units ms s m h d w M y.
fn nginx_duration_ms(text: &str) -> Option<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1000);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, length) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match rest.chars().next()? {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 7 * 86_400_000,
                'M' => 30 * 86_400_000,
                'y' => 365 * 86_400_000,
                _ => return None,
            };
            (unit, 1)
        };
        total = total.checked_add(value.checked_mul(unit_ms)?)?;
        rest = &rest[length..];
    }
    Some(total)
}

/// Milliseconds in the largest unit of the schema that states them exactly.
fn format_duration(millis: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// nginx sizes: `16384`, `16k`, `1m`.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, multiplier) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1024),
        'm' | 'M' => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{ast, lexer};
    use super::*;

    /// Translates config text (no includes); the routes file as YAML, and the messages.
    fn run(text: &str) -> (Option<crate::config::RawConfig>, Vec<String>) {
        let tree = ast::parse(&lexer::tokenize(text).unwrap(), Arc::new(PathBuf::from("t.conf"))).unwrap();
        let (file, diagnostics) = translate(&tree, Path::new("/etc/nginx/t.conf"), &Options::default());
        let parsed = file.map(|file| yaml_serde::from_str(&file.render()).expect("rendered YAML parses"));
        (parsed, diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn hostnames_sharing_an_upstream_but_not_a_certificate_get_one_route_each() {
        let (file, messages) = run("stream {
              map $ssl_server_name $c { a.test a.pem; b.test b.pem; c.test a.pem; default a.pem; }
              map $ssl_server_name $k { a.test a.key; b.test b.key; c.test a.key; default a.key; }
              upstream broker { server 127.0.0.1:1883; }
              server { listen 8883 ssl; ssl_certificate $c; ssl_certificate_key $k; proxy_pass broker; }
            }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let routes: Vec<(&str, &[String])> = file.routes.iter().map(|r| (r.name.as_str(), r.sni.as_slice())).collect();
        assert_eq!(
            routes,
            [
                ("broker-a.test", &["a.test".to_string(), "c.test".to_string()][..]),
                ("broker-b.test", &["b.test".to_string()][..])
            ]
        );
        assert_eq!(file.default.as_deref(), Some("broker-a.test"), "the defaults equal a.test's values");
        assert_eq!(file.routes[1].tls.as_ref().unwrap().cert, Path::new("/etc/nginx/b.pem"));
    }

    #[test]
    fn wildcard_entries_give_their_values_to_names_under_them() {
        let (file, messages) = run("stream {
              map $ssl_preread_server_name $b { hostnames; .example.com wide; x.example.com narrow; }
              server { listen 443; ssl_preread on; proxy_pass $b; }
              upstream wide { server 10.0.0.1:443; }
              upstream narrow { server 10.0.0.2:443; }
            }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let wide = file.routes.iter().find(|r| r.name == "wide").unwrap();
        assert_eq!(wide.sni, ["example.com", "*.example.com"]);
        assert_eq!(file.routes.iter().find(|r| r.name == "narrow").unwrap().sni, ["x.example.com"]);
        assert_eq!(file.default.as_deref(), Some("reject"), "no map default");
    }

    #[test]
    fn preread_map_without_ssl_preread_is_refused() {
        let (file, messages) = run("stream {
              map $ssl_preread_server_name $b { a.test 10.0.0.1:443; }
              server { listen 443; proxy_pass $b; }
            }");
        assert!(file.is_none());
        assert!(messages.iter().any(|m| m.contains("`ssl_preread on;` is missing")), "{messages:?}");
    }

    #[test]
    fn unknown_variables_and_upstreams_are_refused_with_their_line() {
        let (file, messages) = run("stream {\n server {\n  listen 443;\n  proxy_pass $nowhere;\n }\n}\n");
        assert!(file.is_none());
        assert_eq!(messages, ["t.conf:4: error: $nowhere is not set by any `map` in `stream {}`: cannot resolve it"]);
        let (file, messages) = run("stream { server { listen 443; proxy_pass pool; } }");
        assert!(file.is_none());
        assert!(messages[0].contains("no `upstream pool`"), "{messages:?}");
    }

    #[test]
    fn proxy_protocol_listeners_trust_set_real_ip_from() {
        let (file, messages) = run("stream { server { listen 443 proxy_protocol; set_real_ip_from 10.0.0.0/8; set_real_ip_from 192.0.2.1; proxy_pass 10.0.0.1:443; } }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let trusted: Vec<String> = file.accept_proxy_from.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.1/32"]);
        assert!(messages.is_empty(), "{messages:?}");
    }

    #[test]
    fn nginx_times_become_schema_durations() {
        assert_eq!(nginx_duration_ms("3s").map(format_duration).as_deref(), Some("3s"));
        assert_eq!(nginx_duration_ms("60").map(format_duration).as_deref(), Some("1m"));
        assert_eq!(nginx_duration_ms("1m30s").map(format_duration).as_deref(), Some("90s"));
        assert_eq!(nginx_duration_ms("250ms").map(format_duration).as_deref(), Some("250ms"));
        assert_eq!(nginx_duration_ms("10m").map(format_duration).as_deref(), Some("10m"));
        assert_eq!(nginx_duration_ms("3x"), None);
        assert_eq!(nginx_duration_ms("99999999999999999999d"), None);
    }

    #[test]
    fn listen_addresses_are_normalised() {
        assert_eq!(listen_address("443").as_deref(), Ok("0.0.0.0:443"));
        assert_eq!(listen_address("*:8883").as_deref(), Ok("0.0.0.0:8883"));
        assert_eq!(listen_address("[::]:443").as_deref(), Ok("[::]:443"));
        assert_eq!(listen_address("127.0.0.1:443").as_deref(), Ok("127.0.0.1:443"));
        assert!(listen_address("localhost:443").is_err());
        assert!(listen_address("unix:/run/x.sock").is_err());
    }

    #[test]
    fn sizes_and_variables_parse() {
        assert_eq!(parse_size("16k"), Some(16384));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("k"), None);
        assert_eq!(variable_name("$backend").as_deref(), Some("backend"));
        assert_eq!(variable_name("${backend}").as_deref(), Some("backend"));
        assert_eq!(variable_name("$a.b"), None);
        assert_eq!(route_name("10.0.0.1:443"), "10.0.0.1-443");
    }
}
