//! Turns the sections of a HAProxy config into a snigate routes file, with a warning or an error
//! (file:line) for everything that has no exact equivalent.
//!
//! One `frontend` (or `listen`) becomes one routes file: snigate routes all its listen addresses
//! with one table. Its `use_backend` rules on the server name become routes (one per backend,
//! split further by the certificate HAProxy would serve each name), `default_backend` the
//! `default` route, and each backend's servers the route's `backend`.
//!
//! This file reads the top level and chooses the frontend; each further step is a file:
//! `global` (process-wide settings), `settings` (inheritance from `defaults`), `frontend` (one
//! frontend → the file), `bind` (addresses and TLS), `acl` (tests and conditions), `rules`
//! (`use_backend`, `default_backend`, `tcp-request`), `routes` (rules → routes), `certs`
//! (certificates and their names), `tls`, `limits`, `backend` and `server` (a backend's servers),
//! `units` (times), `keywords` (which keywords are translated, warned about or refused), and
//! `translator` (the state that collects the findings).

mod acl;
mod backend;
mod bind;
mod certs;
mod frontend;
mod global;
mod keywords;
mod limits;
mod routes;
mod rules;
mod server;
mod settings;
mod tls;
mod translator;
mod units;

use std::path::Path;

use super::lexer::Line;
use super::sections::{Kind, Section};
use crate::import::diagnostic::{in_file_order, Diagnostic, Severity};
use crate::import::yaml::RoutesFile;
use translator::Translator;

/// Choices the command line makes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which `frontend` or `listen` to translate, by name, when there are several.
    pub frontend: Option<String>,
}

/// Translates the sections of `main_file` (its directory anchors relative paths).
pub fn translate(
    sections: &[Section],
    outside: &[Line],
    main_file: &Path,
    options: &Options,
) -> (Option<RoutesFile>, Vec<Diagnostic>) {
    let mut translator = Translator::new(main_file);
    for line in outside {
        translator.error(line.number, format!("`{}` is outside any section", line.keyword()));
    }
    for section in sections.iter().filter(|s| s.kind == Kind::Other) {
        translator.warn(
            section.line,
            format!("`{} {}` ignored: nothing in it has a snigate equivalent", section.keyword, section.name()),
        );
    }
    let global = translator.global(sections);
    let file =
        translator.chosen(sections, options).and_then(|frontend| translator.frontend(frontend, sections, &global));
    let failed = translator.diagnostics.iter().any(|d| d.severity == Severity::Error);
    (file.filter(|_| !failed), in_file_order(translator.diagnostics))
}

impl Translator {
    /// The only frontend, or the one `--frontend NAME` names; else an error listing them all.
    fn chosen<'a>(&mut self, sections: &'a [Section], options: &Options) -> Option<&'a Section> {
        let frontends: Vec<&Section> = sections.iter().filter(|s| s.is_frontend()).collect();
        let found = match (&options.frontend, frontends.as_slice()) {
            (_, []) => {
                self.error_in_file("no `frontend` or `listen` section: nothing to translate");
                return None;
            }
            (None, [only]) => Some(*only),
            (Some(name), all) => all.iter().copied().find(|s| s.name() == name),
            (None, _) => None,
        };
        if found.is_none() {
            let listed: Vec<String> = frontends.iter().map(|s| format!("{} ({})", s.name(), self.at(s.line))).collect();
            let why = match &options.frontend {
                Some(name) => format!("there is no frontend {name:?}"),
                None => format!("{} frontends: snigate routes all its listen addresses with one table, so one routes file stands for one frontend", frontends.len()),
            };
            self.error_in_file(format!(
                "{why}; choose one with --frontend NAME and run one snigate per frontend: {}",
                listed.join(", ")
            ));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{import_text, ImportError, Options, RawConfig};

    /// Translates config text; the routes file as parsed YAML, and the messages.
    pub(super) fn run(text: &str) -> (Option<RawConfig>, Vec<String>) {
        match import_text(text, Path::new("/nonexistent/t.cfg"), &Options::default()) {
            Ok(imported) => (
                Some(yaml_serde::from_str(&imported.yaml).expect("rendered YAML parses")),
                imported.warnings.iter().map(ToString::to_string).collect(),
            ),
            Err(ImportError::Untranslatable(diagnostics)) => {
                (None, diagnostics.iter().map(ToString::to_string).collect())
            }
            Err(other) => (None, vec![other.to_string()]),
        }
    }

    #[test]
    fn unknown_and_untranslatable_keywords_are_reported_with_their_line() {
        let (file, messages) = run("global\n  lua-load /etc/haproxy/x.lua\n  frobnicate 1\nfrontend fe\n  bind :443\n  stick-table type ip size 1m\n  http-request deny\n  default_backend be\nbackend be\n  server a 127.0.0.1:1\n");
        assert!(file.is_none());
        let at = |line: usize, what: &str| {
            messages.iter().any(|m| m.starts_with(&format!("/nonexistent/t.cfg:{line}: ")) && m.contains(what))
        };
        assert!(at(2, "error: `lua-load`"), "{messages:?}");
        assert!(at(3, "warning: `frobnicate` ignored"), "{messages:?}");
        assert!(at(6, "error: `stick-table`"), "{messages:?}");
        assert!(at(7, "error: `http-request`"), "{messages:?}");
    }

    #[test]
    fn http_mode_frontends_are_refused() {
        let (file, messages) = run("defaults\n  mode http\nfrontend web\n  bind :80\n  default_backend be\nbackend be\n  server a 127.0.0.1:8080\n");
        assert!(file.is_none());
        assert!(messages[0].contains(":2: error: `mode http` (frontend web)"), "{messages:?}");
    }

    #[test]
    fn several_frontends_need_a_choice() {
        let text = "frontend a\n  bind :1\n  default_backend be\nfrontend b\n  bind :2\n  default_backend be\nbackend be\n  server s 127.0.0.1:9\n";
        let (file, messages) = run(text);
        assert!(file.is_none());
        assert!(
            messages[0].contains("choose one with --frontend NAME") && messages[0].contains("a (t.cfg:1), b (t.cfg:4)"),
            "{messages:?}"
        );
        let chosen = import_text(text, Path::new("/nonexistent/haproxy.cfg"), &Options { frontend: Some("b".into()) });
        assert!(chosen.unwrap().yaml.contains("listen: [\"0.0.0.0:2\"]"));
    }

    #[test]
    fn sni_rules_become_passthrough_routes_in_rule_order() {
        let (file, messages) = run("frontend fe\n  bind 127.0.0.1:443\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  acl a req_ssl_sni -i a.test\n  use_backend one if a || { req.ssl_sni -m end .w.test }\n  use_backend two if { req_ssl_sni x.w.test }\n  default_backend one\nbackend one\n  server s 127.0.0.1:1\nbackend two\n  server s 127.0.0.1:2\n");
        assert!(file.is_none(), "x.w.test is taken by the earlier wildcard in HAProxy");
        assert!(
            messages.iter().any(|m| m.contains(":7: error: x.w.test is matched first by *.w.test")),
            "{messages:?}"
        );
        let (file, messages) = run("frontend fe\n  bind 127.0.0.1:443\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  use_backend two if { req_ssl_sni x.w.test }\n  use_backend one if { req_ssl_sni a.test } or { req.ssl_sni -m end .w.test }\n  default_backend one\nbackend one\n  server s 127.0.0.1:1\nbackend two\n  server s 127.0.0.1:2\n");
        let file = file.unwrap_or_else(|| panic!("{messages:?}"));
        assert!(messages.is_empty(), "{messages:?}");
        let routes: Vec<(&str, Vec<&str>)> =
            file.routes.iter().map(|r| (r.name.as_str(), r.sni.iter().map(String::as_str).collect())).collect();
        assert_eq!(routes, [("two", vec!["x.w.test"]), ("one", vec!["a.test", "*.w.test"])]);
        assert_eq!(file.default.as_deref(), Some("one"));
        assert_eq!(file.limits.hello_timeout, Some(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn idle_timeout_is_the_longest_of_client_server_and_tunnel() {
        let base = "defaults\n  timeout client 1m\n  timeout server 1m\nfrontend f\n  bind :1\n  default_backend b\nbackend b\n  server s 127.0.0.1:2\n";
        let (file, messages) = run(base);
        assert_eq!(file.unwrap().limits.idle_timeout, Some(std::time::Duration::from_secs(60)));
        assert!(messages.is_empty(), "{messages:?}");
        let (file, messages) = run(&base.replace("backend b\n", "backend b\n  timeout server 5m\n"));
        assert_eq!(file.unwrap().limits.idle_timeout, Some(std::time::Duration::from_secs(300)), "the backend's own");
        assert!(
            messages[0].contains("t.cfg:2: warning: the client, server and tunnel timeouts differ (1m here)"),
            "{messages:?}"
        );
        let (file, messages) = run(&base.replace("defaults\n", "defaults\n  timeout tunnel 1h\n"));
        assert_eq!(
            file.unwrap().limits.idle_timeout,
            Some(std::time::Duration::from_secs(3600)),
            "tunnel replaces both"
        );
        assert!(messages.is_empty(), "{messages:?}");
    }
}
