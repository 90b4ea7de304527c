//! The routes file: the YAML schema as typed structs with their defaults, and validation that
//! names the file, line and column of every problem. The key names are a contract (the README's
//! Config reference); ARCHITECTURE.md maps the files of this folder.
//!
//! Loading happens in two steps: `yaml_serde` turns the text into [`RawConfig`] (syntax, unknown
//! keys, bad enum values and durations are reported with the position the parser gives), then
//! validation checks what the schema cannot express (duplicate hostnames, bad wildcards, files,
//! certificate/key pairs) and builds the runtime [`Config`] with every TLS config ready to serve.
//! The runtime types are the proxy's own (`proxy::route`, `proxy::backend`, `proxy::limits`,
//! `proxy::tls_settings`): this layer depends on them, never the other way round.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod acme;
mod crl_url;
mod duration;
mod error;
mod route_limits;
mod schema;
mod ticket_key_file;
mod validate;
mod yaml_depth;
mod yaml_position;

pub use acme::{AcmeCertificate, AcmeKeyType, Eab, DEFAULT_RENEW_BEFORE};
pub use crl_url::{parse_crl_url, CrlSource, CrlUrlError, DEFAULT_CRL_REFRESH, MIN_CRL_REFRESH};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use schema::{RawBackend, RawConfig, RawHealthCheck, RawLimits, RawRoute, RawSessionTickets, RawTls};
pub use ticket_key_file::DEFAULT_TICKET_LIFETIME;
pub use yaml_depth::MAX_DEPTH as MAX_NESTING_DEPTH;

// The runtime model and the defaults, under the names the schema's users know them by.
pub use crate::proxy::backend::{
    Backend, Balance, HealthCheck, HealthCheckKind, Identity, OnBackendDown, ProxyProtocol, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAIL_TIMEOUT, DEFAULT_HEALTH_FALL, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_RISE, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_MAX_FAILS,
};
pub use crate::proxy::fetched_crls::FetchedCrls;
pub use crate::proxy::limits::{
    Limits, DEFAULT_CLOSE_JITTER, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HELLO_BYTES,
};
pub use crate::proxy::route::{Mode, Route};
pub use crate::proxy::tls_settings::{ClientAuth, TlsVersion};

use crate::proxy::routes::RouteTable;
use error::{yaml_error, Reporter};
use yaml_position::Locator;

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub reuse_port: bool,
    pub admin: Option<SocketAddr>,
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    pub limits: Limits,
    pub routes: Arc<RouteTable>,
    /// The config file and every certificate, key, CA and CRL file and certificate directory it
    /// names: what reload watches.
    pub files: Vec<PathBuf>,
    /// The distinct `crl_urls` of routes with client certificates: what `ops/crl_fetch.rs` fetches.
    pub crl_sources: Vec<CrlSource>,
    /// The distinct certificates of `acme:` routes: what `ops/acme.rs` obtains and renews.
    pub acme_certificates: Vec<AcmeCertificate>,
    /// Expired certificates, certificates that do not cover their route's names and files of a
    /// `cert_dir` left out: `check` fails on them; `run` and reload log them and serve (an expiring certificate must not
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
// Loading.

/// Reads, parses and validates a routes file, building every route's TLS config. No `crl_urls`
/// CRL is known yet: routes naming one refuse client certificates (see [`load_with_crls`]).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_crls(path, FetchedCrls::default())
}

/// As [`load`], with the `crl_urls` CRLs fetched so far.
pub fn load_with_crls(path: &Path, fetched_crls: FetchedCrls) -> Result<Config, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {error}"),
        }])
    })?;
    parse_with_crls(&source, path, fetched_crls)
}

/// Parses and validates config text; `path` names it in errors and anchors relative file paths.
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_with_crls(source, path, FetchedCrls::default())
}

/// As [`parse`], with the `crl_urls` CRLs fetched so far.
pub fn parse_with_crls(source: &str, path: &Path, fetched_crls: FetchedCrls) -> Result<Config, ConfigErrors> {
    let report = Reporter { file: path, at: Locator::new(source) };
    let raw = parse_raw(source, &report).map_err(|error| ConfigErrors(vec![error]))?;
    validate::validate(raw, &report, path, fetched_crls)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
