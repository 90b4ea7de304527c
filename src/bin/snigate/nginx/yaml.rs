//! The routes file that `import-nginx` writes: a small model of the schema in `config` and its
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

#[derive(Debug, Default)]
pub struct Route {
    pub name: String,
    /// Where it came from, as a comment above the route.
    pub comment: String,
    pub sni: Vec<String>,
    /// `terminate`, `passthrough` or `tcp`.
    pub mode: &'static str,
    pub tls: Option<Tls>,
    pub servers: Vec<String>,
    /// nginx `backup` servers.
    pub backup_servers: Vec<String>,
    /// `v1` / `v2`, with a comment for the line.
    pub proxy_protocol: Option<(&'static str, &'static str)>,
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    pub cert: String,
    pub key: String,
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
            let _ = writeln!(out, "      cert: {}", quote(&tls.cert));
            let _ = writeln!(out, "      key: {}", quote(&tls.key));
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
            let _ = writeln!(out, "      backup_servers: {}  # nginx `backup`", list(&self.backup_servers));
        }
        if let Some((version, why)) = self.proxy_protocol {
            let _ = writeln!(out, "      proxy_protocol: {version}  # {why}");
        }
        if let Some(timeout) = &self.connect_timeout {
            let _ = writeln!(out, "      connect_timeout: {}", quote(timeout));
        }
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
        let parsed: super::super::RawConfig = yaml_serde::from_str(&file.render()).unwrap();
        assert_eq!(parsed.routes[0].name, "n: x");
        assert_eq!(parsed.listen.len(), 1);
    }
}
