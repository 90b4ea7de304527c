//! Turns the directive tree of an nginx config into a snigate routes file, with a warning or an
//! error (file:line) for everything that has no exact equivalent.
//!
//! One nginx `server {}` in `stream {}` becomes one routes file. Its `proxy_pass` and, on
//! terminating servers, its `ssl_certificate` / `ssl_certificate_key` are either fixed or a
//! variable set by a `map` on the SNI (`$ssl_preread_server_name` / `$ssl_server_name`). Every
//! hostname listed in those maps gets the tuple (backend, certificate, key) the maps give it, and
//! hostnames with the same tuple become one route; the tuple of the maps' `default` values
//! becomes the `default` route.
//!
//! This file reads the top level and chooses the server; each further step is a file:
//! `stream` (what `stream {}` holds), `maps` and `upstream` (what a server may name),
//! `server` (one server → the file) with `settings` (inheritance), `listen`, `limits`,
//! `tls` and `grouping` (hostnames → routes), `units` (times and sizes), `directives`
//! (which directives are translated, warned about or refused), and `diagnostic` /
//! `translator` (the findings and the state that collects them).

mod directives;
mod grouping;
mod limits;
mod listen;
mod maps;
mod server;
mod settings;
mod stream;
mod tls;
mod translator;
mod units;
mod upstream;

use std::path::Path;

use crate::import::diagnostic;
pub use diagnostic::{Diagnostic, Severity};

use super::ast::Directive;
use super::yaml::RoutesFile;
use diagnostic::in_file_order;
use directives::IGNORED_TOP_LEVEL;
use translator::Translator;

/// `--server N` counts the `server {}` blocks of `stream {}` from 1, as the error listing them does.
const FIRST_SERVER: usize = 1;

/// Choices the command line makes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which `server {}` of `stream {}` to translate (1-based) when there are several.
    pub server: Option<usize>,
}

/// Translates the tree of `main_file` (its directory anchors relative certificate paths, like nginx).
pub fn translate(tree: &[Directive], main_file: &Path, options: &Options) -> (Option<RoutesFile>, Vec<Diagnostic>) {
    let mut translator = Translator::new(main_file);
    let file = translator.file(tree, options);
    let failed = translator.diagnostics.iter().any(|d| d.severity == Severity::Error);
    (file.filter(|_| !failed), in_file_order(translator.diagnostics))
}

impl Translator {
    /// The whole tree: the `stream {}` blocks, then the one server of them chosen.
    fn file(&mut self, tree: &[Directive], options: &Options) -> Option<RoutesFile> {
        let mut stream = Vec::new();
        for directive in tree {
            match directive.name.as_str() {
                "stream" => stream.extend(directive.children()),
                "mail" => self.warn(directive, "`mail {}` ignored: snigate proxies TLS and TCP streams only"),
                name if IGNORED_TOP_LEVEL.contains(&name) => {}
                name => self.warn(directive, format!("unknown top-level directive `{name}` ignored")),
            }
        }
        if stream.is_empty() {
            self.error_in_file("no `stream {}` block: nothing to translate".into());
            return None;
        }
        let stream = self.stream(stream);
        let server = self.chosen_server(&stream.servers, options)?;
        self.server(server, &stream)
    }

    /// The only `server {}`, or the one `--server N` names; else an error listing them all.
    fn chosen_server<'a>(&mut self, servers: &[&'a Directive], options: &Options) -> Option<&'a Directive> {
        let server = match (servers, options.server) {
            ([], _) => {
                self.error_in_file("`stream {}` has no `server {}`: nothing to translate".into());
                return None;
            }
            ([only], None | Some(FIRST_SERVER)) => *only,
            (all, Some(index)) if (FIRST_SERVER..=all.len()).contains(&index) => all[index - FIRST_SERVER],
            (all, chosen) => {
                let listed: Vec<String> = all
                    .iter()
                    .enumerate()
                    .map(|(i, server)| {
                        let listen = server.children().iter().find(|d| d.name == "listen");
                        let listen = listen.map(|d| d.args.join(" ")).unwrap_or_else(|| "no listen".into());
                        format!("{} = {} ({})", i + FIRST_SERVER, server.at(), listen)
                    })
                    .collect();
                let why = match chosen {
                    Some(index) => format!("there is no server {index}"),
                    None => "snigate routes all its listen addresses with one table, so one routes file stands for one nginx `server {}`".into(),
                };
                self.error_in_file(format!(
                    "{} `server {{}}` blocks in `stream {{}}`: {why}; choose one with --server N and run one snigate per block: {}",
                    all.len(),
                    listed.join(", ")
                ));
                return None;
            }
        };
        Some(server)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::super::{ast, lexer, RawConfig};
    use super::grouping::route_name;
    use super::maps::variable_name;
    use super::units::parse_size;
    use super::*;

    /// Translates config text (no includes); the routes file as YAML, and the messages.
    pub(super) fn run(text: &str) -> (Option<RawConfig>, Vec<String>) {
        let tree = ast::parse(&lexer::tokenize(text).unwrap(), Arc::new(PathBuf::from("t.conf"))).unwrap();
        let (file, diagnostics) = translate(&tree, Path::new("/etc/nginx/t.conf"), &Options::default());
        let parsed = file.map(|file| yaml_serde::from_str(&file.render()).expect("rendered YAML parses"));
        (parsed, diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn unknown_variables_and_upstreams_are_refused_with_their_line() {
        let (file, messages) = run("stream {\n server {\n  listen 443;\n  proxy_pass $nowhere;\n }\n}\n");
        assert!(file.is_none());
        assert_eq!(messages, ["t.conf:4: error: $nowhere is not set by any `map` in `stream {}`: cannot resolve it"]);
        let (file, messages) = run("stream { server { listen 443; proxy_pass pool; } }");
        assert!(file.is_none());
        assert!(messages[0].contains("no `upstream pool`"), "{messages:?}");
    }

    #[test]
    fn sizes_and_variables_parse() {
        assert_eq!(parse_size("16k"), Some(16384));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("k"), None);
        assert_eq!(variable_name("$backend").as_deref(), Some("backend"));
        assert_eq!(variable_name("${backend}").as_deref(), Some("backend"));
        assert_eq!(variable_name("$a.b"), None);
        assert_eq!(route_name("10.0.0.1:443"), "10.0.0.1-443");
    }
}
