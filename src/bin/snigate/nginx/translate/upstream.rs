//! `upstream name { server host:port …; }` and the addresses `proxy_pass` names: a backend's
//! server list. snigate connects to TCP `host:port` backends, with no weights; nginx `backup`
//! servers become `backup_servers`, and `least_conn`, `ip_hash` and `hash $remote_addr` the
//! matching `balance`.

use std::collections::HashMap;

use super::super::ast::Directive;
use super::translator::Translator;

/// An `upstream` block's usable servers.
pub(super) struct Upstream<'a> {
    directive: &'a Directive,
    pool: Pool,
}

/// A backend's servers: the primaries and the backups (nginx `backup`).
#[derive(Clone)]
pub(super) struct Pool {
    pub(super) servers: Vec<String>,
    pub(super) backups: Vec<String>,
    /// `balance:` when the upstream picks servers otherwise than round robin.
    pub(super) balance: Option<&'static str>,
}

impl Translator {
    /// `upstream name { server host:port …; }`.
    pub(super) fn upstream<'a>(&mut self, directive: &'a Directive) -> Option<(String, Upstream<'a>)> {
        let [name] = directive.args.as_slice() else {
            self.error(directive, "`upstream` takes one name");
            return None;
        };
        let mut servers = Vec::new();
        let mut backups = Vec::new();
        let mut balance = None;
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
                        backups.push(address);
                    } else {
                        servers.push(address);
                    }
                }
                "zone" | "keepalive" | "keepalive_timeout" | "keepalive_requests" => {}
                "least_conn" | "ip_hash" | "hash" => balance = self.balance(child).or(balance),
                "random" | "least_time" => self.warn(
                    child,
                    format!(
                        "`{}` ignored: snigate starts each connection at the next server (round-robin)",
                        child.name
                    ),
                ),
                other => self.warn(child, format!("`{other}` in `upstream` ignored")),
            }
        }
        if servers.is_empty() {
            let why = if backups.is_empty() { "" } else { " (only `backup` servers)" };
            self.error(directive, format!("upstream {name:?} has no usable server{why}"));
        }
        Some((name.clone(), Upstream { directive, pool: Pool { servers, backups, balance } }))
    }

    /// `least_conn`, `ip_hash`, `hash KEY [consistent]` as a `balance`, or a warning.
    fn balance(&mut self, directive: &Directive) -> Option<&'static str> {
        match (directive.name.as_str(), directive.args.iter().map(String::as_str).collect::<Vec<_>>().as_slice()) {
            ("least_conn", []) => Some("least_connections"),
            ("ip_hash", []) => {
                self.warn(directive, "`ip_hash` → `balance: client_ip`: nginx hashes an IPv4 client's first three octets (a /24 shares a server), snigate the whole address; a server going down moves only its clients in both");
                Some("client_ip")
            }
            ("hash", ["$remote_addr"] | ["$remote_addr", "consistent"]) => {
                if directive.args.len() == 1 {
                    self.warn(directive, "`hash $remote_addr` → `balance: client_ip`, which is consistent (rendezvous hashing): a server going down moves only its clients, where nginx without `consistent` remaps most of them");
                }
                Some("client_ip")
            }
            (name, _) => {
                self.warn(
                    directive,
                    format!("`{name} {}` ignored: snigate balances on the client address (`client_ip`), connection counts or round robin only", directive.args.join(" ")),
                );
                None
            }
        }
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

    /// An upstream's servers, or a `host:port` written directly; and a comment naming the origin.
    pub(super) fn servers(
        &mut self,
        value: &str,
        proxy_pass: &Directive,
        upstreams: &HashMap<String, Upstream>,
    ) -> Option<(Pool, String)> {
        if let Some(upstream) = upstreams.get(value) {
            return Some((upstream.pool.clone(), format!("upstream {value} ({})", upstream.directive.at())));
        }
        if !value.contains(':') {
            self.error(proxy_pass, format!("no `upstream {value}` in `stream {{}}`, and {value:?} is not host:port"));
            return None;
        }
        let address = self.backend_address(proxy_pass, value)?;
        Some((
            Pool { servers: vec![address], backups: Vec::new(), balance: None },
            format!("proxy_pass {value} ({})", proxy_pass.at()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

    /// The `balance` a one-server-block config with `method;` in its upstream translates to, and
    /// the warnings.
    fn balance_of(method: &str) -> (Option<String>, Vec<String>) {
        let (file, messages) = run(&format!(
            "stream {{ upstream u {{ {method} server 127.0.0.1:1883; server 127.0.0.1:1884; }}
                       server {{ listen 1883; proxy_pass u; }} }}"
        ));
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let balance = format!("{:?}", file.routes[0].backend.balance);
        ((balance != "RoundRobin").then_some(balance), messages)
    }

    #[test]
    fn upstream_methods_become_balance_with_the_differences_said() {
        assert_eq!(balance_of("").0, None, "round robin");
        assert_eq!(balance_of("least_conn;"), (Some("LeastConnections".into()), vec![]));
        let (balance, warnings) = balance_of("ip_hash;");
        assert_eq!(balance, Some("ClientIp".into()));
        assert!(warnings.iter().any(|w| w.contains("first three octets")), "{warnings:?}");
        assert_eq!(balance_of("hash $remote_addr consistent;"), (Some("ClientIp".into()), vec![]));
        let (balance, warnings) = balance_of("hash $remote_addr;");
        assert_eq!(balance, Some("ClientIp".into()));
        assert!(warnings.iter().any(|w| w.contains("without `consistent`")), "{warnings:?}");
        let (balance, warnings) = balance_of("hash $ssl_preread_server_name;");
        assert_eq!(balance, None, "other keys are not translated");
        assert!(warnings.iter().any(|w| w.contains("ignored")), "{warnings:?}");
        let (balance, warnings) = balance_of("random two least_conn;");
        assert_eq!(balance, None);
        assert!(warnings.iter().any(|w| w.contains("`random` ignored")), "{warnings:?}");
    }
}
