//! Which HAProxy keywords are translated, which are dropped with a warning (and why), which are
//! skipped silently (process, logging), and which stop the translation because dropping them would
//! change who may connect or what is sent.
//!
//! A new keyword belongs in exactly one list here, and, if translated, in the step that reads it.

use super::super::lexer::Line;
use super::super::sections::Kind;
use super::settings::option_name;
use super::translator::Translator;

/// `global` keywords the other steps translate.
const GLOBAL_TRANSLATED: &[&str] = &["crt-base", "ca-base", "ssl-default-bind-options", "maxconn", "hard-stop-after"];

/// `global` keywords about HAProxy's own process, its logs and its stats: nothing to say.
const GLOBAL_QUIET: &[&str] = &[
    "daemon",
    "master-worker",
    "nbproc",
    "nbthread",
    "thread-groups",
    "cpu-map",
    "chroot",
    "user",
    "group",
    "uid",
    "gid",
    "pidfile",
    "log",
    "log-tag",
    "log-send-hostname",
    "stats",
    "ulimit-n",
    "node",
    "description",
    "localpeer",
    "spread-checks",
    "expose-experimental-directives",
    "insecure-fork-wanted",
    "set-dumpable",
    "quiet",
    "zero-warning",
    "strict-limits",
    "busy-polling",
    "ssl-server-verify",
    "ssl-default-server-options",
    "ssl-default-server-ciphers",
    "ssl-default-server-ciphersuites",
    "server-state-file",
    "server-state-base",
    "default-path",
    "numa-cpu-mapping",
    "noepoll",
    "nopoll",
    "nosplice",
    "nogetaddrinfo",
    "maxsslconn",
    "maxconnrate",
    "maxsessrate",
    "maxsslrate",
    "ssl-load-extra-files",
];

/// Proxy keywords the other steps translate (`option`, `timeout` and `tcp-request` are looked
/// at word by word there).
const PROXY_TRANSLATED: &[&str] = &[
    "bind",
    "mode",
    "acl",
    "use_backend",
    "default_backend",
    "tcp-request",
    "timeout",
    "maxconn",
    "server",
    "default-server",
    "balance",
    "tcp-check",
    "option",
];

/// Proxy keywords about logging and naming: snigate writes its own per-connection log line.
const PROXY_QUIET: &[&str] = &["log", "log-format", "error-log-format", "log-tag", "description", "id", "enabled"];

/// Options about logging, or that snigate's relay already does: nothing to say.
const OPTIONS_QUIET: &[&str] =
    &["tcplog", "dontlognull", "logasap", "log-separate-errors", "splice-auto", "splice-request", "splice-response"];

/// Options the other steps translate.
const OPTIONS_TRANSLATED: &[&str] = &["tcp-check"];

/// Why a keyword has no equivalent but may be dropped (a warning); `None`: not in this list.
fn ignored_reason(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "ssl-default-bind-ciphers"
        | "ssl-default-bind-ciphersuites"
        | "ssl-default-bind-curves"
        | "ssl-default-bind-sigalgs"
        | "ssl-dh-param-file" => "rustls chooses the cipher suites and key exchange groups (modern ones only)",
        "retries" | "option redispatch" => {
            "snigate tries every server once, in order from the one `balance` picks, on a connect error or timeout"
        }
        "fullconn" | "hash-type" | "hash-balance-factor" => "no equivalent: servers have no weights in snigate",
        "rate-limit" => "no equivalent: snigate caps open connections (`limits.max_connections`), not their rate",
        "source" => "snigate connects from the system's choice of address",
        "option tcpka" | "option clitcpka" | "option srvtcpka" => "no equivalent setting",
        "setenv" | "presetenv" | "resetenv" | "unsetenv" => "environment variables are not used by the routes file",
        _ if keyword.starts_with("tune.") => "no equivalent tuning setting",
        _ => return None,
    })
}

/// Why a keyword stops the translation: dropping it would change who may connect or what is sent.
fn refused_reason(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "stick-table" | "stick" | "stick on" | "stick match" | "stick store-request" | "stick store-response" => {
            "stick tables have no equivalent (snigate keeps no per-client state; `balance: client_ip` pins clients by address)"
        }
        "lua-load" | "lua-load-per-thread" | "lua-prepend-path" => "Lua scripts have no equivalent",
        "tcp-response" => "`tcp-response` rules have no equivalent",
        "use-server" | "force-persist" | "ignore-persist" | "persist" | "cookie" | "dynamic-cookie-key" => {
            "server persistence rules have no equivalent"
        }
        "server-template" | "dispatch" => "only `server NAME ADDR:PORT` lines are translated",
        "filter" | "capture" | "monitor-uri" | "monitor" | "redirect" | "errorfile" | "errorloc" | "unique-id-format"
        | "unique-id-header" | "compression" => "HTTP processing has no equivalent (snigate proxies TLS and TCP streams)",
        _ if keyword.starts_with("http-") => "HTTP rules have no equivalent (snigate proxies TLS and TCP streams)",
        _ => return None,
    })
}

impl Translator {
    /// A warning or an error for every line of a section of `kind` that is not translated.
    pub(super) fn report_untranslated(&mut self, kind: Kind, lines: &[Line]) {
        for line in lines {
            if !self.first_report(line.number) {
                continue;
            }
            let keyword = match option_name(line) {
                Some(name) => format!("option {name}"),
                None => line.keyword().to_string(),
            };
            if is_translated(kind, line, &keyword) {
                continue;
            }
            if let Some(reason) = refused_reason(&keyword) {
                self.error(line.number, format!("`{keyword}`: {reason}"));
            } else if let Some(reason) = ignored_reason(&keyword) {
                self.warn(line.number, format!("`{keyword}` ignored: {reason}"));
            } else {
                self.warn(line.number, format!("`{keyword}` ignored: no snigate equivalent"));
            }
        }
    }
}

fn is_translated(kind: Kind, line: &Line, keyword: &str) -> bool {
    match kind {
        Kind::Global => GLOBAL_TRANSLATED.contains(&keyword) || GLOBAL_QUIET.contains(&keyword),
        _ => match option_name(line) {
            Some(name) => OPTIONS_QUIET.contains(&name) || OPTIONS_TRANSLATED.contains(&name),
            None => PROXY_TRANSLATED.contains(&keyword) || PROXY_QUIET.contains(&keyword),
        },
    }
}
