//! `acl` lines and `if` conditions: what a rule tests, in snigate's terms. A server-name test
//! (`req_ssl_sni` / `req.ssl_sni` on the ClientHello, `ssl_fc_sni` after the handshake; exact,
//! `-m end`, `-m dom`, `-f FILE`) becomes `sni` patterns; a `src` test becomes CIDRs; the
//! ClientHello test `req_ssl_hello_type 1` is what snigate always waits for. Anything else is
//! kept as the fetch's name, for the rule that uses it to refuse.

use std::collections::{HashMap, HashSet};

use super::super::lexer::Line;
use super::super::routes;
use super::bind::{IPV4_HOST_PREFIX, IPV6_HOST_PREFIX};
use super::certs::read_bounded;
use super::translator::Translator;

/// Largest `-f` pattern file read.
const MAX_PATTERN_FILE_BYTES: u64 = 1024 * 1024;

/// Where HAProxy reads the server name from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SniFetch {
    /// `req_ssl_sni`: the ClientHello, before any decryption (pass-through).
    Hello,
    /// `ssl_fc_sni`: the name of the TLS connection HAProxy terminated.
    Decrypted,
}

/// What one test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Test {
    /// The server name matches one of these `sni` patterns.
    Sni(SniFetch, Vec<String>),
    /// The client address is in one of these networks.
    Src(Vec<String>),
    /// `req_ssl_hello_type 1`: the first bytes are a ClientHello.
    Hello,
    /// Another fetch (its name), or a test the importer could not read (already reported).
    Other(String),
}

/// One term of a condition: a named ACL (its lines are OR-ed) or an inline `{ … }` test.
#[derive(Debug, Clone)]
pub(super) struct Term {
    pub(super) negated: bool,
    pub(super) tests: Vec<Test>,
}

/// A condition: OR-ed branches of AND-ed terms.
pub(super) type Condition = Vec<Vec<Term>>;

/// The named ACLs of a frontend.
pub(super) type Acls = HashMap<String, Vec<Test>>;

impl Translator {
    /// Every `acl NAME FETCH …` line; several lines of one name are OR-ed, as in HAProxy.
    pub(super) fn acls(&mut self, lines: &[Line]) -> Acls {
        let mut acls = Acls::new();
        for line in lines.iter().filter(|l| l.keyword() == "acl") {
            let Some((name, test)) = line.args().split_first() else {
                self.error(line.number, "`acl` needs a name and a test");
                continue;
            };
            let test = self.test(line.number, test);
            acls.entry(name.clone()).or_default().push(test);
        }
        acls
    }

    /// `FETCH [-i] [-m METHOD] [-f FILE] [--] VALUE…`.
    fn test(&mut self, line: usize, words: &[String]) -> Test {
        let Some((fetch, rest)) = words.split_first() else {
            self.error(line, "an ACL test needs a fetch");
            return Test::Other(String::new());
        };
        let (base, converters) = fetch.split_once(',').unwrap_or((fetch, ""));
        let (base, implied_method) = match base.strip_suffix("_end") {
            Some(stem) => (stem, Some("end")),
            None => (base, None),
        };
        let sni = match base {
            "req_ssl_sni" | "req.ssl_sni" => Some(SniFetch::Hello),
            "ssl_fc_sni" => Some(SniFetch::Decrypted),
            _ => None,
        };
        let (mut method, values) = match self.flags_and_values(line, rest) {
            Some(found) => found,
            None => return Test::Other(fetch.clone()),
        };
        method = method.or(implied_method.map(str::to_string));
        match (sni, base) {
            (Some(kind), _) if converters.split(',').all(|c| c.is_empty() || c == "lower") => self
                .sni_patterns(line, method.as_deref(), &values)
                .map_or(Test::Other(fetch.clone()), |p| Test::Sni(kind, p)),
            (Some(_), _) => {
                self.error(line, format!("`{fetch}`: converters other than `lower` have no equivalent"));
                Test::Other(fetch.clone())
            }
            (None, "src") if method.is_none() => {
                self.networks(line, &values).map_or(Test::Other(fetch.clone()), Test::Src)
            }
            (None, "req_ssl_hello_type" | "req.ssl_hello_type") if values == ["1"] => Test::Hello,
            _ => Test::Other(fetch.clone()),
        }
    }

    /// The match method (`-m`) and the values, those of `-f` files included.
    fn flags_and_values(&mut self, line: usize, words: &[String]) -> Option<(Option<String>, Vec<String>)> {
        let mut method = None;
        let mut values = Vec::new();
        let mut words = words.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "-i" | "-n" | "-M" => {}
                "--" => {
                    values.extend(words.by_ref().cloned());
                }
                "-m" | "-f" | "-u" => {
                    let Some(value) = words.next() else {
                        self.error(line, format!("`{word}` needs a value"));
                        return None;
                    };
                    match word.as_str() {
                        "-m" => method = Some(value.clone()),
                        "-f" => values.extend(self.pattern_file(line, value)?),
                        _ => {}
                    }
                }
                flag if flag.starts_with('-') && flag.len() > 1 && values.is_empty() => {
                    self.error(line, format!("ACL flag `{flag}` has no equivalent"));
                    return None;
                }
                value => values.push(value.to_string()),
            }
        }
        Some((method, values))
    }

    /// The patterns of a `-f` file: one a line, `#` comments and blank lines skipped.
    fn pattern_file(&mut self, line: usize, path: &str) -> Option<Vec<String>> {
        let resolved = self.config_path(path);
        let text = match read_bounded(&resolved, MAX_PATTERN_FILE_BYTES).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                self.error(line, format!("-f {resolved}: not UTF-8 text"));
                return None;
            }
            Err(error) => {
                self.error(line, format!("-f {resolved}: cannot read: {error}"));
                return None;
            }
        };
        Some(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
    }

    /// Server-name values under a match method → `sni` patterns.
    fn sni_patterns(&mut self, line: usize, method: Option<&str>, values: &[String]) -> Option<Vec<String>> {
        let mut patterns = Vec::new();
        let mut seen = HashSet::new();
        for value in values {
            let value = value.to_ascii_lowercase();
            let translated = match method {
                None | Some("str") => vec![value.clone()],
                Some("end") => match value.strip_prefix('.') {
                    Some(_) => vec![format!("*{value}")],
                    None => {
                        self.warn(line, format!("`-m end {value}` also matches names like x{value} (no dot before it); translated as {value} and *.{value}"));
                        vec![value.clone(), format!("*.{value}")]
                    }
                },
                Some("dom") => {
                    let domain = value.trim_matches('.');
                    self.warn(line, format!("`-m dom {value}` also matches {domain} inside a longer name ({domain}.other.example); translated as {domain} and *.{domain}"));
                    vec![domain.to_string(), format!("*.{domain}")]
                }
                Some(other) => {
                    self.error(line, format!("`-m {other}` has no equivalent: list the names, or use `-m end .example.com` for a wildcard"));
                    return None;
                }
            };
            for pattern in translated {
                if let Err(why) = routes::Pattern::parse(&pattern) {
                    self.error(line, format!("{pattern:?}: {why}"));
                    return None;
                }
                if seen.insert(pattern.clone()) {
                    patterns.push(pattern);
                }
            }
        }
        Some(patterns)
    }

    /// `src` values → CIDRs (a bare address is one host).
    fn networks(&mut self, line: usize, values: &[String]) -> Option<Vec<String>> {
        let mut cidrs = Vec::new();
        for value in values {
            let cidr = match (value.contains('/'), value.contains(':')) {
                (true, _) => value.clone(),
                (false, true) => format!("{value}/{IPV6_HOST_PREFIX}"),
                (false, false) => format!("{value}/{IPV4_HOST_PREFIX}"),
            };
            if cidr.parse::<ipnet::IpNet>().is_err() {
                self.error(line, format!("{value:?} is not an IP address or CIDR"));
                return None;
            }
            cidrs.push(cidr);
        }
        Some(cidrs)
    }

    /// The words after `if` / `unless`: branches split on `or` / `||`, terms named or `{ … }`.
    pub(super) fn condition(&mut self, line: usize, words: &[String], acls: &Acls) -> Option<Condition> {
        let mut branches: Condition = vec![Vec::new()];
        let mut words = words.iter();
        while let Some(word) = words.next() {
            if word == "or" || word == "||" {
                branches.push(Vec::new());
                continue;
            }
            let (negated, rest) = match word.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, word.as_str()),
            };
            let tests = match rest {
                "" | "{" => {
                    if rest.is_empty() && words.next().map(String::as_str) != Some("{") {
                        self.error(line, "`!` must be followed by an ACL name or `{ … }`");
                        return None;
                    }
                    let inline: Vec<String> = words.by_ref().take_while(|w| *w != "}").cloned().collect();
                    vec![self.test(line, &inline)]
                }
                name => match acls.get(name) {
                    Some(tests) => tests.clone(),
                    None => {
                        self.error(line, format!("no `acl {name}` in this section"));
                        return None;
                    }
                },
            };
            if let Some(branch) = branches.last_mut() {
                branch.push(Term { negated, tests });
            }
        }
        Some(branches)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::lexer::tokenize;
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text).unwrap().remove(0).words
    }

    #[test]
    fn server_name_tests_become_sni_patterns() {
        let mut t = Translator::new(Path::new("/nonexistent/haproxy.cfg"));
        let acls = t.acls(&tokenize("acl a req_ssl_sni -i A.test b.test\nacl a req.ssl_sni -m end .w.test\nacl d ssl_fc_sni -m dom d.test\nacl lb src 10.0.0.0/8 192.0.2.1\n").unwrap());
        assert_eq!(
            acls["a"],
            [
                Test::Sni(SniFetch::Hello, vec!["a.test".into(), "b.test".into()]),
                Test::Sni(SniFetch::Hello, vec!["*.w.test".into()])
            ]
        );
        assert_eq!(acls["d"], [Test::Sni(SniFetch::Decrypted, vec!["d.test".into(), "*.d.test".into()])]);
        assert_eq!(acls["lb"], [Test::Src(vec!["10.0.0.0/8".into(), "192.0.2.1/32".into()])]);
        let condition = t.condition(1, &words("a || !{ req_ssl_hello_type 1 } lb"), &acls).unwrap();
        assert_eq!(condition.len(), 2);
        assert_eq!(condition[1].len(), 2);
        assert!(condition[1][0].negated);
        assert_eq!(condition[1][0].tests, [Test::Hello]);
        assert!(t.condition(1, &words("nope"), &acls).is_none());
        let regex = t.acls(&tokenize("acl r req_ssl_sni -m reg ^a").unwrap());
        assert_eq!(regex["r"], [Test::Other("req_ssl_sni".into())]);
        assert!(t.diagnostics.iter().any(|d| d.message.contains("no `acl nope`")));
        assert!(t.diagnostics.iter().any(|d| d.message.contains("`-m reg` has no equivalent")));
    }
}
