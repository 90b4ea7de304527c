//! HAProxy timeouts and connection caps → the routes file's `limits`.
//!
//! snigate has one `idle_timeout` for a session: it ends after that long without a byte in either
//! direction. HAProxy's `timeout client` and `timeout server` watch each side; in TCP mode
//! HAProxy recommends they be equal, and `timeout tunnel`, when set, replaces both once the
//! connection is established. So `idle_timeout` is `timeout tunnel`, else the longer of `timeout
//! client` and `timeout server` (a warning says so when they differ: the shorter one would close
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
    pub(super) fn limits(&mut self, settings: &Settings, global: &Global, rules: &Rules, file: &mut RoutesFile) {
        if let Some(idle) = self.idle_timeout(settings) {
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

    fn idle_timeout(&mut self, settings: &Settings) -> Option<String> {
        if let Some(tunnel) = settings.timeout("tunnel") {
            return self.duration(tunnel, 2);
        }
        let client = settings.timeout("client");
        let server = settings.timeout("server");
        let millis = |t: &mut Translator, line: Option<&Line>| line.and_then(|line| t.millis(line, 2));
        let (client_ms, server_ms) = (millis(self, client), millis(self, server));
        match (client_ms, server_ms) {
            (Some(c), Some(s)) if c != s => {
                let line = client.map_or(0, |l| l.number);
                self.warn(line, format!("`timeout client` {} and `timeout server` {} differ: snigate has one idle timeout for both directions, the longer one", format_duration(c), format_duration(s)));
                Some(format_duration(c.max(s)))
            }
            (Some(c), _) => Some(format_duration(c)),
            (None, Some(s)) => Some(format_duration(s)),
            (None, None) => None,
        }
    }
}
