//! `server` and `default-server` parameters: which are translated (`check`, `inter`, `rise`,
//! `fall`, `backup`, `disabled`, `send-proxy*`, `on-marked-down shutdown-sessions`), which are
//! warned about, and which refuse the translation (`ssl`: TLS to the server); and the address.

use super::super::lexer::Line;
use super::translator::Translator;
use super::units::haproxy_millis;

/// Server parameters that take a value; those not translated are reported and skipped.
const VALUE_PARAMETERS: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "maxconn",
    "maxqueue",
    "minconn",
    "port",
    "addr",
    "on-marked-down",
    "on-marked-up",
    "on-error",
    "error-limit",
    "slowstart",
    "cookie",
    "id",
    "resolvers",
    "resolve-prefer",
    "resolve-net",
    "resolve-opts",
    "init-addr",
    "ca-file",
    "crt",
    "crl-file",
    "sni",
    "alpn",
    "check-sni",
    "check-alpn",
    "check-proto",
    "proto",
    "source",
    "usesrc",
    "observe",
    "pool-max-conn",
    "pool-low-conn",
    "pool-purge-delay",
    "max-reuse",
    "tcp-ut",
    "track",
    "agent-port",
    "agent-inter",
    "agent-send",
    "agent-addr",
    "ws",
    "verifyhost",
    "verify",
    "ciphers",
    "ciphersuites",
    "namespace",
    "proxy-v2-options",
    "redir",
    "set-proxy-v2-tlv-fmt",
    "log-proto",
    "npn",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "ssl-min-ver",
    "ssl-max-ver",
    "shard",
    "hash-key",
    "guid",
];

/// Server parameters that only matter to a TLS connection to the server, which `ssl` refuses.
const SERVER_TLS_PARAMETERS: &[&str] = &[
    "ca-file",
    "crt",
    "crl-file",
    "sni",
    "alpn",
    "verifyhost",
    "verify",
    "ciphers",
    "ciphersuites",
    "npn",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "ssl-min-ver",
    "ssl-max-ver",
    "check-sni",
    "check-alpn",
    "no-ssl",
    "no-verifyhost",
    "no-tls-tickets",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
];

/// Which PROXY header a server gets, with the comment the routes file gives it.
const PROXY_V1: (&str, &str) = ("v1", "HAProxy `send-proxy`");
const PROXY_V2: (&str, &str) =
    ("v2", "HAProxy `send-proxy-v2`; snigate's v2 also carries the SNI, the ALPN and, when terminating, the SSL TLV");
const PROXY_V2_SSL: (&str, &str) = (
    "v2",
    "HAProxy `send-proxy-v2-ssl`; snigate's also carries the verified client certificate's CN, the SNI and the ALPN",
);
const PROXY_V2_SSL_CN: (&str, &str) = ("v2", "HAProxy `send-proxy-v2-ssl-cn`");

/// One server's parameters, after `default-server`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ServerParams {
    pub(super) check: bool,
    pub(super) backup: bool,
    pub(super) disabled: bool,
    pub(super) inter_ms: Option<u64>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) proxy: Option<(&'static str, &'static str)>,
    pub(super) shutdown_sessions: bool,
}

impl Translator {
    /// Applies `words` (a `server`'s or `default-server`'s parameters) to `params`.
    pub(super) fn server_parameters(&mut self, line: &Line, words: &[String], params: &mut ServerParams) {
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let word = word.as_str();
            if VALUE_PARAMETERS.contains(&word) {
                match words.next() {
                    Some(value) => self.server_value(line, word, value, params),
                    None => self.error(line.number, format!("`{word}` needs a value")),
                }
                continue;
            }
            match word {
                "check" => params.check = true,
                "no-check" => params.check = false,
                "backup" => params.backup = true,
                "no-backup" => params.backup = false,
                "disabled" => params.disabled = true,
                "enabled" => params.disabled = false,
                "send-proxy" => params.proxy = Some(PROXY_V1),
                "send-proxy-v2" => params.proxy = Some(PROXY_V2),
                "send-proxy-v2-ssl" => params.proxy = Some(PROXY_V2_SSL),
                "send-proxy-v2-ssl-cn" => params.proxy = Some(PROXY_V2_SSL_CN),
                "no-send-proxy" | "no-send-proxy-v2" | "no-send-proxy-v2-ssl" | "no-send-proxy-v2-ssl-cn" => {
                    params.proxy = None
                }
                "ssl" | "check-ssl" => {
                    self.error(line.number, format!("`{word}`: snigate does not open TLS connections to backends"))
                }
                "check-send-proxy" | "non-stick" => {}
                _ if SERVER_TLS_PARAMETERS.contains(&word) => {}
                other => self.warn(line.number, format!("server parameter `{other}` ignored: no snigate equivalent")),
            }
        }
    }

    fn server_value(&mut self, line: &Line, word: &str, value: &str, params: &mut ServerParams) {
        let count = || value.parse::<u32>().ok().filter(|n| *n > 0);
        match word {
            "inter" => match haproxy_millis(value).filter(|ms| *ms > 0) {
                Some(ms) => params.inter_ms = Some(ms),
                None => self.error(line.number, format!("`inter {value}` needs a time like 2s")),
            },
            "rise" | "fall" => match count() {
                Some(n) if word == "rise" => params.rise = Some(n),
                Some(n) => params.fall = Some(n),
                None => self.error(line.number, format!("`{word} {value}` needs a number above 0")),
            },
            "on-marked-down" if value == "shutdown-sessions" => params.shutdown_sessions = true,
            "weight" | "maxconn" | "maxqueue" | "minconn" | "slowstart" => self.warn(
                line.number,
                format!("server parameter `{word}` ignored: snigate servers have no weights or per-server limits"),
            ),
            "port" | "addr" => self.warn(
                line.number,
                format!("server parameter `{word}` ignored: snigate health checks connect to the server's own address"),
            ),
            "resolvers" | "resolve-prefer" | "resolve-net" | "resolve-opts" | "init-addr" => {}
            "proxy-v2-options" => {}
            _ if SERVER_TLS_PARAMETERS.contains(&word) => {}
            _ => self.warn(line.number, format!("server parameter `{word} {value}` ignored: no snigate equivalent")),
        }
    }

    /// `host:port` as the schema takes it; `ipv4@`/`ipv6@` prefixes dropped, sockets refused.
    pub(super) fn server_address(&mut self, line: &Line, address: &str) -> Option<String> {
        if address.starts_with('/')
            || address.contains("@") && !address.starts_with("ipv4@") && !address.starts_with("ipv6@")
        {
            self.error(line.number, format!("{address}: snigate connects to TCP `host:port` backends only"));
            return None;
        }
        let address = address.trim_start_matches("ipv4@").trim_start_matches("ipv6@");
        let parsed = address.rsplit_once(':').and_then(|(host, port)| {
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains('%') {
                return None;
            }
            Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
        });
        if parsed.is_none() {
            self.error(line.number, format!("{address:?} is not host:port (a server without a port, or with `+`/`-` offsets, has no equivalent)"));
        }
        parsed
    }
}
