//! `listen` lines (the addresses, TLS termination, PROXY headers in) and, for PROXY listeners, the
//! load balancers `set_real_ip_from` trusts.

use std::net::SocketAddr;

use super::super::ast::Directive;
use super::super::yaml::RoutesFile;
use super::settings::Settings;
use super::translator::Translator;

/// The prefix length that makes a bare `set_real_ip_from` address one host.
const IPV4_HOST_PREFIX: u8 = 32;
const IPV6_HOST_PREFIX: u8 = 128;

impl Translator {
    /// `listen` lines: the addresses, whether they terminate TLS, whether they read PROXY headers.
    pub(super) fn listen(&mut self, settings: &Settings, server: &Directive, file: &mut RoutesFile) -> (bool, bool) {
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

    /// `set_real_ip_from` of a server that reads PROXY headers (`listen … proxy_protocol`).
    pub(super) fn accept_proxy_from(&mut self, settings: &Settings, server: &Directive, file: &mut RoutesFile) {
        let from = settings.all("set_real_ip_from");
        if from.is_empty() {
            self.warn(server, "`listen … proxy_protocol` without `set_real_ip_from`: nginx takes PROXY headers from anyone; so does this translation (`accept_proxy_from: 0.0.0.0/0, ::/0`); narrow it to your load balancers");
            file.accept_proxy_from = vec!["0.0.0.0/0".into(), "::/0".into()];
        }
        for directive in from {
            for address in &directive.args {
                let cidr = match (address.contains('/'), address.contains(':')) {
                    (true, _) => address.clone(),
                    (false, true) => format!("{address}/{IPV6_HOST_PREFIX}"),
                    (false, false) => format!("{address}/{IPV4_HOST_PREFIX}"),
                };
                if cidr.parse::<ipnet::IpNet>().is_ok() {
                    file.accept_proxy_from.push(cidr);
                } else {
                    self.error(directive, format!("{address:?} is not an IP address or CIDR"));
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;

    #[test]
    fn proxy_protocol_listeners_trust_set_real_ip_from() {
        let (file, messages) = run("stream { server { listen 443 proxy_protocol; set_real_ip_from 10.0.0.0/8; set_real_ip_from 192.0.2.1; proxy_pass 10.0.0.1:443; } }");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        let trusted: Vec<String> = file.accept_proxy_from.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.1/32"]);
        assert!(messages.is_empty(), "{messages:?}");
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
}
