//! `upstream name { server host:port …; }` and the addresses `proxy_pass` names: a backend's
//! server list. snigate connects to TCP `host:port` backends round-robin, with no weights; nginx
//! `backup` servers become `backup_servers`.

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
        if servers.is_empty() {
            let why = if backups.is_empty() { "" } else { " (only `backup` servers)" };
            self.error(directive, format!("upstream {name:?} has no usable server{why}"));
        }
        Some((name.clone(), Upstream { directive, pool: Pool { servers, backups } }))
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
            Pool { servers: vec![address], backups: Vec::new() },
            format!("proxy_pass {value} ({})", proxy_pass.at()),
        ))
    }
}
