//! `bind` lines: the listen addresses, TLS termination and its settings (`ssl crt …`, `crt-list`,
//! `verify`, `ca-file`, `crl-file`, `alpn`, versions, tickets), and PROXY headers in
//! (`accept-proxy`). `global` `ssl-default-bind-options` come first on every ssl bind.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::super::lexer::Line;
use super::global::Global;
use super::translator::Translator;

/// What the `bind` lines of a frontend say.
#[derive(Default)]
pub(super) struct Binds {
    pub(super) listen: Vec<String>,
    /// The TLS settings of the ssl binds (all binds have `ssl`, or none).
    pub(super) tls: Option<BindTls>,
    /// The line of the first `accept-proxy`.
    pub(super) accept_proxy: Option<usize>,
}

/// An ssl bind's TLS settings, paths resolved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct BindTls {
    /// `crt` files or directories, in order (the first is HAProxy's default certificate).
    pub(super) crts: Vec<String>,
    pub(super) crt_lists: Vec<String>,
    /// `optional` / `required`; `None`: `verify none`, the default.
    pub(super) verify: Option<&'static str>,
    pub(super) ca_file: Option<String>,
    pub(super) crl_files: Vec<String>,
    pub(super) alpn: Vec<String>,
    /// `"1.3"` when TLS 1.2 is off.
    pub(super) min_version: Option<&'static str>,
    pub(super) no_tickets: bool,
}

/// Bind parameters that take a value and are not translated: the value is skipped.
const VALUE_PARAMETERS_IGNORED: &[&str] = &[
    "ciphers",
    "ciphersuites",
    "curves",
    "ecdhe",
    "sigalgs",
    "client-sigalgs",
    "npn",
    "ca-ignore-err",
    "crt-ignore-err",
    "ca-sign-file",
    "ca-sign-pass",
    "ca-verify-file",
    "tls-ticket-keys",
    "backlog",
    "maxconn",
    "mss",
    "name",
    "id",
    "nice",
    "process",
    "thread",
    "interface",
    "namespace",
    "tcp-ut",
    "level",
    "severity-output",
    "user",
    "group",
    "uid",
    "gid",
    "mode",
    "proto",
    "ocsp-update",
    "ssl-max-ver",
];

/// TLS versions HAProxy names, oldest first; snigate speaks the last two.
const TLS_VERSIONS: [&str; 5] = ["SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const TLS12: usize = 3;
const TLS13: usize = 4;

/// The prefix length that makes a bare `src` address one host.
pub(super) const IPV4_HOST_PREFIX: u8 = 32;
pub(super) const IPV6_HOST_PREFIX: u8 = 128;

impl Translator {
    /// Every `bind` line of a frontend.
    pub(super) fn binds(&mut self, lines: &[Line], section_line: usize, global: &Global) -> Binds {
        let mut binds = Binds::default();
        let mut ssl_lines: Vec<(usize, Option<BindTls>)> = Vec::new();
        let mut seen = HashSet::new();
        for line in lines.iter().filter(|l| l.keyword() == "bind") {
            let Some((address, parameters)) = line.args().split_first() else {
                self.error(line.number, "`bind` needs an address");
                continue;
            };
            match bind_addresses(address) {
                Ok(addresses) => {
                    for address in addresses {
                        if seen.insert(address.clone()) {
                            binds.listen.push(address);
                        }
                    }
                }
                Err(reason) => self.error(line.number, format!("bind {address:?}: {reason}")),
            }
            let tls = self.bind_parameters(line, parameters, global, &mut binds);
            ssl_lines.push((line.number, tls));
        }
        if ssl_lines.is_empty() {
            self.error(section_line, "the frontend has no `bind`");
        }
        binds.tls = self.one_tls(&ssl_lines);
        binds
    }

    /// All binds terminate with the same settings, or none terminates.
    fn one_tls(&mut self, binds: &[(usize, Option<BindTls>)]) -> Option<BindTls> {
        let first = binds.iter().find_map(|(_, tls)| tls.clone())?;
        for (line, tls) in binds {
            match tls {
                None => self.error(
                    *line,
                    "this `bind` has no `ssl` while another one has: snigate terminates on all listeners of a route or none",
                ),
                Some(tls) if *tls != first => {
                    self.error(*line, "this `bind` has other TLS settings than the first ssl bind: snigate has one set per route")
                }
                Some(_) => {}
            }
        }
        Some(first)
    }

    /// A bind's parameters; its TLS settings when it has `ssl`.
    fn bind_parameters(
        &mut self,
        line: &Line,
        parameters: &[String],
        global: &Global,
        binds: &mut Binds,
    ) -> Option<BindTls> {
        let mut tls = BindTls::default();
        let mut ssl = false;
        let mut min_version = TLS12;
        if parameters.iter().any(|p| p == "ssl") {
            let mut defaults = global.bind_options.iter();
            while let Some(option) = defaults.next() {
                let value = defaults.clone().next();
                if self.version_option(global.bind_options_line, option, value, &mut tls, &mut min_version) {
                    defaults.next();
                }
            }
        }
        let mut words = parameters.iter();
        while let Some(word) = words.next() {
            let value = words.clone().next();
            let consumed = match word.as_str() {
                "ssl" => {
                    ssl = true;
                    false
                }
                "accept-proxy" => {
                    binds.accept_proxy.get_or_insert(line.number);
                    false
                }
                _ => self.tls_parameter(line, word, value, &mut tls, &mut min_version),
            };
            if consumed {
                words.next();
            }
        }
        tls.min_version = (min_version >= TLS13).then_some("1.3");
        if !ssl {
            if !tls.crts.is_empty() || !tls.crt_lists.is_empty() {
                self.warn(line.number, "`crt` without `ssl` ignored: this bind does not terminate TLS");
            }
            return None;
        }
        if tls.crts.is_empty() && tls.crt_lists.is_empty() {
            self.error(line.number, "`bind … ssl` needs `crt` or `crt-list`");
        }
        Some(tls)
    }

    /// One TLS parameter of a bind; whether it took `value`.
    fn tls_parameter(
        &mut self,
        line: &Line,
        word: &str,
        value: Option<&String>,
        tls: &mut BindTls,
        min_version: &mut usize,
    ) -> bool {
        let needs_value = matches!(word, "crt" | "crt-list" | "ca-file" | "crl-file" | "alpn" | "verify");
        let Some(value) = value.filter(|_| needs_value) else {
            if needs_value {
                self.error(line.number, format!("`{word}` needs a value"));
                return false;
            }
            return self.version_option(line.number, word, value, tls, min_version);
        };
        match word {
            "crt" => tls.crts.push(self.crt_path(value)),
            "crt-list" => tls.crt_lists.push(self.config_path(value)),
            "ca-file" => tls.ca_file = Some(self.ca_path(value)),
            "crl-file" => tls.crl_files.push(self.ca_path(value)),
            "alpn" => tls.alpn = value.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect(),
            _ => match value.as_str() {
                "none" => tls.verify = None,
                "optional" => tls.verify = Some("optional"),
                "required" => tls.verify = Some("required"),
                other => self.error(line.number, format!("`verify {other}`: expected none, optional or required")),
            },
        }
        true
    }

    /// Version, ticket and other flags (from the bind or `ssl-default-bind-options`); whether it
    /// took `value`.
    fn version_option(
        &mut self,
        line: usize,
        word: &str,
        value: Option<&String>,
        tls: &mut BindTls,
        min_version: &mut usize,
    ) -> bool {
        match word {
            "ssl-min-ver" => {
                match value.and_then(|v| TLS_VERSIONS.iter().position(|known| known == v)) {
                    Some(version) if version < TLS12 => {
                        self.warn(line, "`ssl-min-ver` below TLSv1.2: snigate speaks TLS 1.2 and 1.3 only");
                    }
                    Some(version) => *min_version = version,
                    None => self.error(line, "`ssl-min-ver` needs SSLv3, TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3"),
                }
                return value.is_some();
            }
            "no-tlsv12" | "force-tlsv13" => *min_version = TLS13,
            "no-sslv3" | "no-tlsv10" | "no-tlsv11" | "force-tlsv12" | "ssl" | "tls-tickets" => {}
            "no-tls-tickets" => tls.no_tickets = true,
            "no-tlsv13" => self.warn(line, "`no-tlsv13` ignored: snigate always accepts TLS 1.3"),
            _ if VALUE_PARAMETERS_IGNORED.contains(&word) => {
                self.warn(line, format!("bind parameter `{word}` ignored: no snigate equivalent"));
                return value.is_some();
            }
            _ => self.warn(line, format!("bind parameter `{word}` ignored: no snigate equivalent")),
        }
        false
    }
}

/// A bind address → `ip:port`s: `:443`, `*:443`, `0.0.0.0:443`, `[::]:443`, `:::443`,
/// `ipv4@…`, several separated by commas.
pub(super) fn bind_addresses(text: &str) -> Result<Vec<String>, &'static str> {
    text.split(',').map(bind_address).collect()
}

fn bind_address(text: &str) -> Result<String, &'static str> {
    if text.starts_with('/')
        || ["unix@", "abns@", "fd@", "sockpair@", "uxst@", "uxdg@"].iter().any(|p| text.starts_with(p))
    {
        return Err("unix sockets and inherited descriptors have no equivalent");
    }
    if ["udp@", "udp4@", "udp6@", "quic4@", "quic6@"].iter().any(|p| text.starts_with(p)) {
        return Err("UDP and QUIC listeners have no equivalent: snigate proxies TCP");
    }
    let text = ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"].iter().find_map(|p| text.strip_prefix(p)).unwrap_or(text);
    let (host, port) = text.rsplit_once(':').ok_or("needs ADDRESS:PORT")?;
    let port: u16 = port.parse().map_err(|_| "the port must be one number (ranges have no equivalent)")?;
    let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "*" => IpAddr::from([0, 0, 0, 0]),
        host => host.parse().map_err(|_| "not an IP address (snigate listens on IP addresses)")?,
    };
    Ok(SocketAddr::new(ip, port).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_are_normalised() {
        assert_eq!(bind_addresses(":443"), Ok(vec!["0.0.0.0:443".to_string()]));
        assert_eq!(bind_addresses("*:8883"), Ok(vec!["0.0.0.0:8883".to_string()]));
        assert_eq!(bind_addresses(":::443"), Ok(vec!["[::]:443".to_string()]));
        assert_eq!(bind_addresses("[::1]:443"), Ok(vec!["[::1]:443".to_string()]));
        assert_eq!(
            bind_addresses("ipv4@127.0.0.1:1,127.0.0.1:2"),
            Ok(vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()])
        );
        assert!(bind_addresses("/run/haproxy.sock").is_err());
        assert!(bind_addresses(":8000-8010").is_err());
        assert!(bind_addresses("localhost:443").is_err());
        assert!(bind_addresses("443").is_err());
    }
}
