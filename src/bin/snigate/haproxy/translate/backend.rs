//! A `backend` (or the backend half of a `listen`) → a route's backend: its `server` lines with
//! `default-server` applied (`backup`, `send-proxy*`, `check` with `inter`/`rise`/`fall`,
//! `on-marked-down shutdown-sessions`), `balance`, `timeout connect` and the health check.

use super::super::lexer::Line;
use super::super::sections::Section;
use super::server::ServerParams;
use super::settings::Settings;
use super::translator::Translator;
use super::units::haproxy_millis;
use crate::import::duration::format_duration;
use crate::import::yaml::HealthCheck;

/// HAProxy's check interval when `inter` is not set (snigate's default is longer: written out).
const HAPROXY_DEFAULT_INTER_MS: u64 = 2_000;

/// What a route gets from its backend.
#[derive(Debug, Default)]
pub(super) struct Pool {
    pub(super) servers: Vec<String>,
    pub(super) backups: Vec<String>,
    pub(super) balance: Option<&'static str>,
    pub(super) proxy_protocol: Option<(&'static str, &'static str)>,
    pub(super) connect_timeout: Option<String>,
    pub(super) health_check: Option<HealthCheck>,
    pub(super) on_backend_down: Option<&'static str>,
}

impl Translator {
    /// The route backend of `section`, which inherits `defaults`.
    pub(super) fn pool(&mut self, section: &Section, defaults: &[Line]) -> Option<Pool> {
        let settings = Settings { defaults, local: &section.body };
        let mut base = ServerParams::default();
        for line in settings.all("default-server") {
            self.server_parameters(line, line.args(), &mut base);
        }
        let mut pool = Pool { balance: self.balance(&settings), ..Pool::default() };
        let mut servers: Vec<ServerParams> = Vec::new();
        for line in section.body.iter().filter(|l| l.keyword() == "server") {
            let [_, address, parameters @ ..] = line.args() else {
                self.error(line.number, "`server` needs a name and an address");
                continue;
            };
            let mut params = base.clone();
            self.server_parameters(line, parameters, &mut params);
            let Some(address) = self.server_address(line, address) else { continue };
            if params.disabled {
                self.warn(line.number, format!("server {address} is `disabled`: left out"));
                continue;
            }
            if params.backup {
                pool.backups.push(address)
            } else {
                pool.servers.push(address)
            }
            servers.push(params);
        }
        if pool.servers.is_empty() {
            let why = if pool.backups.is_empty() { "" } else { " (only `backup` servers)" };
            self.error(section.line, format!("backend {:?} has no usable server{why}", section.name()));
            return None;
        }
        pool.connect_timeout = settings.timeout("connect").and_then(|line| self.duration(line, 2));
        self.server_wide(section, &settings, &servers, &mut pool);
        Some(pool)
    }

    /// What snigate sets per route but HAProxy per server: the PROXY header, the health check,
    /// closing sessions of a down server.
    fn server_wide(&mut self, section: &Section, settings: &Settings, servers: &[ServerParams], pool: &mut Pool) {
        let line = section.line;
        let proxies: Vec<_> = servers.iter().map(|s| s.proxy).collect();
        if proxies.iter().any(|p| *p != proxies[0]) {
            self.error(
                line,
                "the servers send different PROXY headers (`send-proxy*`): snigate sends one kind per route",
            );
        }
        pool.proxy_protocol = proxies.first().copied().flatten();
        let checked: Vec<&ServerParams> = servers.iter().filter(|s| s.check).collect();
        if let Some(first) = checked.first() {
            if checked.len() < servers.len() {
                self.warn(line, "only some servers have `check`: snigate checks every server of the route");
            }
            let differs =
                checked.iter().any(|s| (s.inter_ms, s.rise, s.fall) != (first.inter_ms, first.rise, first.fall));
            if differs {
                self.warn(line, "the servers' `inter`/`rise`/`fall` differ: snigate has one health check per route, the first server's");
            }
            pool.health_check = Some(self.health_check(first, settings));
        }
        let closing = servers.iter().filter(|s| s.shutdown_sessions).count();
        if closing > 0 {
            if closing < servers.len() {
                self.warn(line, "only some servers have `on-marked-down shutdown-sessions`: snigate closes the sessions of any server of the route marked down");
            }
            pool.on_backend_down = Some("close_sessions");
        }
    }

    /// A TCP connect check every `inter`; HAProxy times a connect check out after `inter`, or
    /// after the shorter of `timeout connect` and `inter` when `timeout check` is set.
    fn health_check(&mut self, first: &ServerParams, settings: &Settings) -> HealthCheck {
        let inter = first.inter_ms.unwrap_or(HAPROXY_DEFAULT_INTER_MS);
        let connect = settings.timeout("connect").and_then(|l| l.args().get(1)).and_then(|t| haproxy_millis(t));
        let timeout = match (settings.timeout("check"), connect) {
            (Some(_), Some(connect)) => connect.min(inter),
            _ => inter,
        };
        for line in settings.all("tcp-check") {
            if line.args().first().is_some_and(|a| a != "connect") {
                self.warn(
                    line.number,
                    "`tcp-check` rules other than `connect` ignored: snigate's TCP check connects only",
                );
            }
        }
        HealthCheck {
            interval: Some(format_duration(inter)),
            timeout: Some(format_duration(timeout)),
            rise: first.rise,
            fall: first.fall,
        }
    }

    fn balance(&mut self, settings: &Settings) -> Option<&'static str> {
        let line = settings.last("balance")?;
        match line.args().first().map(String::as_str) {
            Some("roundrobin") => None,
            Some("leastconn") => Some("least_connections"),
            Some("source") => Some("client_ip"),
            Some("static-rr") => {
                self.warn(line.number, "`balance static-rr` is round robin without weights in snigate");
                None
            }
            other => {
                let what = other.unwrap_or_default();
                self.warn(line.number, format!("`balance {what}` has no equivalent: round robin (roundrobin, leastconn and source are translated)"));
                None
            }
        }
    }
}
