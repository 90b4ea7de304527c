//! HAProxy timeouts and connection caps → the routes file's `limits`.
//!
//! snigate has one `idle_timeout` for a session: it ends after that long without a byte in either
//! direction. HAProxy's `timeout client` (the frontend's) and `timeout server` (each backend's)
//! watch each side; in TCP mode HAProxy recommends they be equal, and a backend's `timeout
//! tunnel`, when set, replaces both once the connection is established. So `idle_timeout` is the
//! longest of the backends' `timeout tunnel`, or, for backends without one, of `timeout client`
//! and their `timeout server`; a warning says so when they differ (the shorter one would close
//! sessions HAProxy keeps open while the other side talks).

use super::super::lexer::Line;
use super::global::Global;
use super::rules::Rules;
use super::settings::Settings;
use super::translator::Translator;
use crate::import::duration::format_duration;
use crate::import::yaml::RoutesFile;

/// `timeout` names the translation reads (`connect` and `check` in the backend step).
const TIMEOUTS_TRANSLATED: &[&str] = &["client", "server", "tunnel", "connect", "check", "client-hs"];

impl Translator {
    /// The `limits` of the frontend's settings, the rules and `global`.
    pub(super) fn limits(
        &mut self,
        settings: &Settings,
        backends: &[Settings],
        global: &Global,
        rules: &Rules,
        file: &mut RoutesFile,
    ) {
        if let Some(idle) = self.idle_timeout(settings, backends) {
            file.limits.push(("idle_timeout", idle));
        }
        if let Some(hello) = &rules.hello_timeout {
            file.limits.push(("hello_timeout", hello.clone()));
        }
        if let Some(handshake) = settings.timeout("client-hs").and_then(|line| self.duration(line, 2)) {
            file.limits.push(("handshake_timeout", handshake));
        }
        let local = settings.last("maxconn").and_then(|line| self.count(line));
        if let Some(max) = [local, global.maxconn].into_iter().flatten().min() {
            file.limits.push(("max_connections", max.to_string()));
        }
        if let Some(drain) = &global.hard_stop_after {
            file.limits.push(("drain_timeout", drain.clone()));
        }
        for line in settings.defaults.iter().chain(settings.local).filter(|l| l.keyword() == "timeout") {
            let name = line.args().first().map_or("", String::as_str);
            if !TIMEOUTS_TRANSLATED.contains(&name) && self.first_report(line.number) {
                self.warn(line.number, format!("`timeout {name}` ignored: no snigate equivalent"));
            }
        }
    }

    /// The longest idle time HAProxy allows a session of any of the routes.
    fn idle_timeout(&mut self, frontend: &Settings, backends: &[Settings]) -> Option<String> {
        let client = frontend.timeout("client");
        let client_ms = client.and_then(|line| self.millis(line, 2));
        let mut found: Vec<(u64, usize)> = Vec::new();
        for backend in backends {
            match backend.timeout("tunnel") {
                Some(tunnel) => found.extend(self.millis(tunnel, 2).map(|ms| (ms, tunnel.number))),
                None => {
                    let server = backend.timeout("server");
                    found.extend(server.and_then(|line| self.millis(line, 2)).map(|ms| (ms, line_of(server))));
                    found.extend(client_ms.map(|ms| (ms, line_of(client))));
                }
            }
        }
        let &(longest, _) = found.iter().max()?;
        if let Some(&(shorter, line)) = found.iter().find(|(ms, _)| *ms != longest) {
            self.warn(
                line,
                format!(
                    "the client, server and tunnel timeouts differ ({} here): snigate has one idle timeout for both directions and all routes, the longest, {}",
                    format_duration(shorter),
                    format_duration(longest)
                ),
            );
        }
        Some(format_duration(longest))
    }
}

fn line_of(line: Option<&Line>) -> usize {
    line.map_or(0, |line| line.number)
}
