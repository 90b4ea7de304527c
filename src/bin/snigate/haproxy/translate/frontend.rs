//! One `frontend` (or `listen`) → the routes file: its binds (listen addresses, TLS), its rules
//! (routes by server name, the default), PROXY headers in, limits, then the routes.

use super::super::sections::{Kind, Section};
use super::acl::SniFetch;
use super::bind::Binds;
use super::global::Global;
use super::routes::Common;
use super::rules::Rules;
use super::settings::{defaults_of, Settings};
use super::translator::Translator;
use crate::import::yaml::RoutesFile;

impl Translator {
    /// The routes file for `frontend`.
    pub(super) fn frontend(&mut self, frontend: &Section, sections: &[Section], global: &Global) -> Option<RoutesFile> {
        let defaults = defaults_of(sections, frontend);
        let settings = Settings { defaults, local: &frontend.body };
        self.report_untranslated(Kind::Defaults, defaults);
        self.report_untranslated(frontend.kind, &frontend.body);
        self.check_mode(&settings, frontend);
        let mut file = RoutesFile {
            header: vec![format!(
                "Translated by `snigate import-haproxy` from `{} {}` at {}.",
                frontend.keyword,
                frontend.name(),
                self.at(frontend.line)
            )],
            ..RoutesFile::default()
        };
        let binds = self.binds(&frontend.body, frontend.line, global);
        file.listen = binds.listen.clone();
        let acls = self.acls(&frontend.body);
        let mut rules = self.rules(&frontend.body, &acls);
        let has_servers = frontend.body.iter().any(|l| l.keyword() == "server");
        if frontend.kind == Kind::Listen && rules.default.is_none() && has_servers {
            rules.default = Some((frontend.name().to_string(), frontend.line));
        }
        let mode = self.mode(&binds, &rules);
        self.accept_proxy(&binds, &rules, &mut file);
        let bind_line = Translator::first_bind(&frontend.body, frontend.line);
        let common = Common { mode, tls: binds.tls.as_ref().map(|tls| (tls, bind_line)) };
        let backends = self.routes(sections, &rules, &common, &mut file)?;
        let backends: Vec<Settings> =
            backends.iter().map(|b| Settings { defaults: defaults_of(sections, b), local: &b.body }).collect();
        self.limits(&settings, &backends, global, &rules, &mut file);
        if rules.default.is_none() {
            file.header
                .push("There is no `default_backend`: names no rule lists are refused (`default: reject`).".into());
        }
        Some(file)
    }

    /// `mode tcp` (or none: HAProxy's default); `mode http` cannot be translated.
    pub(super) fn check_mode(&mut self, settings: &Settings, section: &Section) {
        if let Some(line) = settings.last("mode") {
            match line.args().first().map(String::as_str) {
                Some("tcp") => {}
                Some(other) => self.error(
                    line.number,
                    format!("`mode {other}` ({} {}): only TCP-mode proxies can be translated (snigate proxies TLS and TCP streams, it does not parse HTTP)", section.keyword, section.name()),
                ),
                None => self.error(line.number, "`mode` needs tcp or http"),
            }
        }
    }

    /// terminate on ssl binds (`ssl_fc_sni`), passthrough on `req_ssl_sni`, else tcp.
    fn mode(&mut self, binds: &Binds, rules: &Rules) -> &'static str {
        match (&binds.tls, rules.fetch) {
            (Some(_), Some((SniFetch::Hello, line))) => {
                self.error(
                    line,
                    "`req_ssl_sni` on an `ssl` bind reads decrypted bytes and never matches: use `ssl_fc_sni`",
                );
                "terminate"
            }
            (Some(_), _) => "terminate",
            (None, Some((SniFetch::Decrypted, line))) => {
                self.error(
                    line,
                    "`ssl_fc_sni` on a bind without `ssl` never matches: use `req_ssl_sni` to pass TLS through",
                );
                "tcp"
            }
            (None, Some((SniFetch::Hello, line))) => {
                if !rules.waits_for_hello {
                    self.warn(line, "`req_ssl_sni` without `tcp-request inspect-delay` and `tcp-request content accept if { req_ssl_hello_type 1 }`: HAProxy may decide before the ClientHello arrives; snigate always waits for it");
                }
                "passthrough"
            }
            (None, None) => "tcp",
        }
    }

    /// `accept-proxy` binds (PROXY headers from anyone) or `expect-proxy` from some peers.
    fn accept_proxy(&mut self, binds: &Binds, rules: &Rules, file: &mut RoutesFile) {
        if let Some(line) = binds.accept_proxy {
            self.warn(line, "`accept-proxy`: HAProxy takes PROXY headers from anyone on this bind; so does this translation (`accept_proxy_from: 0.0.0.0/0, ::/0`); narrow it to your load balancers");
            file.accept_proxy_from = vec!["0.0.0.0/0".into(), "::/0".into()];
        } else if let Some((cidrs, _)) = &rules.expect_proxy {
            file.accept_proxy_from = cidrs.clone();
        }
    }
}
