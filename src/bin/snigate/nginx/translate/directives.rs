//! Which nginx directives are translated, which are dropped with a warning (and why), and which
//! stop the translation because dropping them would change who may connect or what is sent.
//!
//! A new directive belongs in exactly one list here, and, if translated, in the step that reads it.

use super::super::ast::Directive;
use super::translator::Translator;

/// Top-level directives that only concern nginx's own process or other modules.
pub(super) const IGNORED_TOP_LEVEL: &[&str] = &[
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

/// Directives the other steps translate (anything else in `stream` or `server` gets a message).
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
pub(super) fn ignored_reason(name: &str) -> Option<&'static str> {
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

impl Translator {
    /// A warning or an error for every directive that is not translated.
    pub(super) fn report_untranslated<'d>(&mut self, directives: impl Iterator<Item = &'d Directive>) {
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
}
