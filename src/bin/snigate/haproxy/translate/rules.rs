//! A frontend's rules: `use_backend B if …` on the server name (the routes and their `sni`),
//! `default_backend` (the `default` route), and `tcp-request` (the ClientHello wait, PROXY
//! headers in). A rule that decides on anything but the server name has no equivalent.

use super::super::lexer::Line;
use super::acl::{Acls, Condition, SniFetch, Test};
use super::translator::Translator;

/// One route's worth of rules: a backend and the patterns that lead to it.
pub(super) struct RouteRule {
    pub(super) backend: String,
    pub(super) patterns: Vec<String>,
    pub(super) line: usize,
}

/// What the rules of a frontend decide.
#[derive(Default)]
pub(super) struct Rules {
    /// In rule order; one backend may appear several times.
    pub(super) routes: Vec<RouteRule>,
    /// What the server-name tests read, and the first line that reads it so.
    pub(super) fetch: Option<(SniFetch, usize)>,
    pub(super) default: Option<(String, usize)>,
    /// `tcp-request connection expect-proxy layer4 if { src … }`: the peers that send PROXY headers.
    pub(super) expect_proxy: Option<(Vec<String>, usize)>,
    /// `tcp-request inspect-delay`.
    pub(super) hello_timeout: Option<String>,
    /// `tcp-request content accept if { req_ssl_hello_type 1 }` is there.
    pub(super) waits_for_hello: bool,
}

impl Translator {
    /// The rules of a frontend's lines (its own only: `defaults` have none of these).
    pub(super) fn rules(&mut self, lines: &[Line], acls: &Acls) -> Rules {
        let mut rules = Rules::default();
        for line in lines {
            match line.keyword() {
                "use_backend" => self.use_backend(line, acls, &mut rules),
                "default_backend" => match line.args() {
                    [backend] => rules.default = Some((backend.clone(), line.number)),
                    _ => self.error(line.number, "`default_backend` takes one backend name"),
                },
                "tcp-request" => self.tcp_request(line, acls, &mut rules),
                _ => {}
            }
        }
        rules
    }

    fn use_backend(&mut self, line: &Line, acls: &Acls, rules: &mut Rules) {
        let Some((backend, condition)) = line.args().split_first() else {
            self.error(line.number, "`use_backend` needs a backend name");
            return;
        };
        if backend.contains("%[") {
            self.error(line.number, "a backend name computed by a sample (maps, `%[…]`) has no equivalent: write one `use_backend` per backend");
            return;
        }
        let words = match condition.split_first() {
            None => {
                self.warn(line.number, format!("`use_backend {backend}` without a condition takes every connection: translated as the default route, later rules never match"));
                rules.default.get_or_insert((backend.clone(), line.number));
                return;
            }
            Some((keyword, words)) if keyword == "if" => words,
            Some((keyword, _)) => {
                self.error(
                    line.number,
                    format!("`use_backend … {keyword}`: only `if` conditions on the server name have an equivalent"),
                );
                return;
            }
        };
        let Some(condition) = self.condition(line.number, words, acls) else { return };
        let mut patterns = Vec::new();
        for branch in &condition {
            match self.server_name_branch(line.number, branch, rules) {
                Some(found) => patterns.extend(found),
                None => {
                    self.error(line.number, "this condition has no equivalent: snigate routes on the server name only (`req_ssl_sni`, `ssl_fc_sni`, optionally with `req_ssl_hello_type 1`)");
                    return;
                }
            }
        }
        rules.routes.push(RouteRule { backend: backend.clone(), patterns, line: line.number });
    }

    /// One AND-ed branch: one server-name term, besides ClientHello tests.
    fn server_name_branch(
        &mut self,
        line: usize,
        terms: &[super::acl::Term],
        rules: &mut Rules,
    ) -> Option<Vec<String>> {
        let mut names = terms.iter().filter(|term| term.negated || !term.tests.iter().all(|t| *t == Test::Hello));
        let (Some(term), None) = (names.next(), names.next()) else { return None };
        if term.negated {
            return None;
        }
        let mut patterns = Vec::new();
        for test in &term.tests {
            let Test::Sni(fetch, found) = test else { return None };
            rules.fetch.get_or_insert((*fetch, line));
            if rules.fetch.is_some_and(|(first, _)| first != *fetch) {
                self.error(line, "this frontend tests both `req_ssl_sni` and `ssl_fc_sni`: snigate either passes TLS through or terminates it");
            }
            patterns.extend(found.iter().cloned());
        }
        Some(patterns)
    }

    fn tcp_request(&mut self, line: &Line, acls: &Acls, rules: &mut Rules) {
        let words: Vec<&str> = line.args().iter().map(String::as_str).collect();
        match words.as_slice() {
            ["inspect-delay", _] => rules.hello_timeout = self.duration(line, 2),
            ["content", "accept"] => {}
            ["content", "accept", "if", condition @ ..] => {
                rules.waits_for_hello = self.is_hello(line, condition, acls, false);
                if !rules.waits_for_hello {
                    self.error(line.number, "only `tcp-request content accept if { req_ssl_hello_type 1 }` has an equivalent (snigate always waits for the ClientHello)");
                }
            }
            ["content", "reject", "if", condition @ ..] if self.is_hello(line, condition, acls, true) => {}
            ["content", "reject", "unless", condition @ ..] if self.is_hello(line, condition, acls, false) => {}
            ["connection", "expect-proxy", "layer4", rest @ ..] => self.expect_proxy(line, rest, acls, rules),
            _ => self.error(
                line.number,
                format!(
                    "`tcp-request {}` has no equivalent; dropping it would change who may connect",
                    words.join(" ")
                ),
            ),
        }
    }

    /// Whether `condition` is exactly the ClientHello test (negated when `negated`).
    fn is_hello(&mut self, line: &Line, condition: &[&str], acls: &Acls, negated: bool) -> bool {
        let words: Vec<String> = condition.iter().map(|w| w.to_string()).collect();
        let Some(condition) = self.condition(line.number, &words, acls) else { return false };
        is_only(&condition, &Test::Hello, negated)
    }

    fn expect_proxy(&mut self, line: &Line, rest: &[&str], acls: &Acls, rules: &mut Rules) {
        let cidrs = match rest {
            [] => {
                self.warn(line.number, "`expect-proxy` without a condition: PROXY headers are taken from anyone; so does this translation (`accept_proxy_from: 0.0.0.0/0, ::/0`); narrow it to your load balancers");
                vec!["0.0.0.0/0".to_string(), "::/0".to_string()]
            }
            ["if", condition @ ..] => {
                let words: Vec<String> = condition.iter().map(|w| w.to_string()).collect();
                let Some(condition) = self.condition(line.number, &words, acls) else { return };
                let mut cidrs = Vec::new();
                for term in condition.iter().flatten() {
                    for test in &term.tests {
                        match test {
                            Test::Src(found) if !term.negated && condition.iter().all(|b| b.len() == 1) => {
                                cidrs.extend(found.iter().cloned())
                            }
                            _ => {
                                self.error(line.number, "only `expect-proxy layer4 if { src … }` (or ACLs on `src`) has an equivalent (`accept_proxy_from`)");
                                return;
                            }
                        }
                    }
                }
                cidrs
            }
            _ => {
                self.error(line.number, "`expect-proxy layer4 unless …` has no equivalent");
                return;
            }
        };
        rules.expect_proxy = Some((cidrs, line.number));
    }
}

/// Whether every branch is one term testing only `test`, negated or not as asked.
fn is_only(condition: &Condition, test: &Test, negated: bool) -> bool {
    condition.iter().all(
        |branch| matches!(branch.as_slice(), [term] if term.negated == negated && term.tests.iter().all(|t| t == test)),
    )
}
