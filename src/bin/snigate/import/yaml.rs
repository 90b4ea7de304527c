//! The routes file that the importers write: a small model of the schema in `config` and its
//! rendering as commented YAML. Every string is double-quoted, so no value can change the
//! document's structure.

use std::fmt::Write;

/// A whole routes file.
#[derive(Debug, Default)]
pub struct RoutesFile {
    /// Comment lines at the top, without `#`.
    pub header: Vec<String>,
    pub listen: Vec<String>,
    pub accept_proxy_from: Vec<String>,
    /// A route name; `None` writes `default: reject`.
    pub default: Option<String>,
    /// `limits` keys and values, already in the schema's units (all digits: written as a number).
    pub limits: Vec<(&'static str, String)>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Default, Clone)]
pub struct Route {
    pub name: String,
    /// Where it came from, as a comment above the route.
    pub comment: String,
    pub sni: Vec<String>,
    /// `terminate`, `passthrough` or `tcp`.
    pub mode: &'static str,
    pub tls: Option<Tls>,
    pub servers: Vec<String>,
    pub backup_servers: Vec<String>,
    /// The comment on the `backup_servers` line: what they were called in the source config.
    pub backup_note: &'static str,
    /// `round_robin`, `least_connections`, `client_ip`; absent means the default (round robin).
    pub balance: Option<&'static str>,
    /// `v1` / `v2`, with a comment for the line.
    pub proxy_protocol: Option<(&'static str, &'static str)>,
    pub connect_timeout: Option<String>,
    pub health_check: Option<HealthCheck>,
    /// `close_sessions`; absent means the default `keep`.
    pub on_backend_down: Option<&'static str>,
}

/// An active TCP health check; each absent value is the schema's default.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    pub cert: String,
    pub key: String,
    /// A directory of PEMs chosen by SNI; when set it is written instead of `cert` and `key`.
    pub cert_dir: Option<String>,
    /// `optional` / `required`; absent means `none`.
    pub client_auth: Option<&'static str>,
    pub client_ca: Option<String>,
    pub crl: Vec<String>,
    pub alpn: Vec<String>,
    /// `"1.3"`; absent means the default `"1.2"`.
    pub min_version: Option<&'static str>,
    /// `false` only; absent means the default `true`.
    pub session_resumption: Option<bool>,
}

/// A YAML double-quoted scalar (JSON escaping is valid YAML).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if !printable(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// What YAML allows unescaped (its "printable" set, less tab and line breaks, and the BOM).
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..) && c != '\u{feff}'
}

/// A comment holds one line of printable characters, whatever the config said.
fn comment(text: &str) -> String {
    text.chars().map(|c| if printable(c) { c.to_string() } else { c.escape_unicode().to_string() }).collect()
}

impl RoutesFile {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "# {}", comment(line));
        }
        let _ = writeln!(out, "listen: {}", list(&self.listen));
        if !self.accept_proxy_from.is_empty() {
            let _ = writeln!(out, "accept_proxy_from: {}", list(&self.accept_proxy_from));
        }
        match &self.default {
            Some(name) => writeln!(out, "default: {}", quote(name)),
            None => writeln!(out, "default: reject"),
        }
        .ok();
        if !self.limits.is_empty() {
            out.push_str("limits:\n");
            for (key, value) in &self.limits {
                let value = if value.bytes().all(|b| b.is_ascii_digit()) { value.clone() } else { quote(value) };
                let _ = writeln!(out, "  {key}: {value}");
            }
        }
        out.push_str("routes:\n");
        for route in &self.routes {
            route.render(&mut out);
        }
        out
    }
}

impl Route {
    fn render(&self, out: &mut String) {
        if !self.comment.is_empty() {
            let _ = writeln!(out, "  # {}", comment(&self.comment));
        }
        let _ = writeln!(out, "  - name: {}", quote(&self.name));
        if !self.sni.is_empty() {
            let _ = writeln!(out, "    sni: {}", list(&self.sni));
        }
        let _ = writeln!(out, "    mode: {}", self.mode);
        if let Some(tls) = &self.tls {
            out.push_str("    tls:\n");
            match &tls.cert_dir {
                Some(dir) => {
                    let _ = writeln!(out, "      cert_dir: {}", quote(dir));
                }
                None => {
                    let _ = writeln!(out, "      cert: {}", quote(&tls.cert));
                    let _ = writeln!(out, "      key: {}", quote(&tls.key));
                }
            }
            if let Some(client_auth) = tls.client_auth {
                let _ = writeln!(out, "      client_auth: {client_auth}");
            }
            if let Some(client_ca) = &tls.client_ca {
                let _ = writeln!(out, "      client_ca: {}", quote(client_ca));
            }
            if !tls.crl.is_empty() {
                let _ = writeln!(out, "      crl: {}", list(&tls.crl));
            }
            if !tls.alpn.is_empty() {
                let _ = writeln!(out, "      alpn: {}", list(&tls.alpn));
            }
            if let Some(min_version) = tls.min_version {
                let _ = writeln!(out, "      min_version: {}", quote(min_version));
            }
            if let Some(resumption) = tls.session_resumption {
                let _ = writeln!(out, "      session_resumption: {resumption}");
            }
        }
        out.push_str("    backend:\n");
        let _ = writeln!(out, "      servers: {}", list(&self.servers));
        if !self.backup_servers.is_empty() {
            let _ = write!(out, "      backup_servers: {}", list(&self.backup_servers));
            let _ = writeln!(out, "{}", note(self.backup_note));
        }
        if let Some(balance) = self.balance {
            let _ = writeln!(out, "      balance: {balance}");
        }
        if let Some((version, why)) = self.proxy_protocol {
            let _ = writeln!(out, "      proxy_protocol: {version}{}", note(why));
        }
        if let Some(timeout) = &self.connect_timeout {
            let _ = writeln!(out, "      connect_timeout: {}", quote(timeout));
        }
        if let Some(check) = &self.health_check {
            check.render(out);
        }
        if let Some(action) = self.on_backend_down {
            let _ = writeln!(out, "      on_backend_down: {action}");
        }
    }
}

impl HealthCheck {
    fn render(&self, out: &mut String) {
        out.push_str("      health_check:\n        type: tcp\n");
        for (key, value) in [("interval", &self.interval), ("timeout", &self.timeout)] {
            if let Some(value) = value {
                let _ = writeln!(out, "        {key}: {}", quote(value));
            }
        }
        for (key, value) in [("rise", self.rise), ("fall", self.fall)] {
            if let Some(value) = value {
                let _ = writeln!(out, "        {key}: {value}");
            }
        }
    }
}

/// A trailing comment for a line, or nothing.
fn note(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("  # {}", comment(text))
    }
}

/// A route name from a backend name or an address: letters, digits, `-`, `_`, `.`.
pub fn route_name(value: &str) -> String {
    let name: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "route".into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_stay_inside_their_quotes() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(quote("\u{85}\u{feff}\u{ffff}é"), r#""\u0085\ufeff\uffffé""#);
        let file = RoutesFile {
            header: vec!["from x\nlisten: [evil]".into()],
            listen: vec!["0.0.0.0:443".into()],
            routes: vec![Route {
                name: "n: x".into(),
                comment: "c\nroutes: []\u{14}\u{7f}\u{9b}".into(),
                mode: "tcp",
                servers: vec!["a:1".into()],
                ..Route::default()
            }],
            ..RoutesFile::default()
        };
        let parsed: snigate::config::RawConfig = yaml_serde::from_str(&file.render()).unwrap();
        assert_eq!(parsed.routes[0].name, "n: x");
        assert_eq!(parsed.listen.len(), 1);
    }
}
