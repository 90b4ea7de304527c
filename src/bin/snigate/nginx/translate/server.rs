//! One `server {}` of `stream {}` → the routes file: its listeners and limits, then a route per
//! group of hostnames that share a backend, certificate and key.

use std::collections::HashMap;

use super::super::ast::Directive;
use super::super::yaml::{self, RoutesFile};
use super::grouping::group_hostnames;
use super::maps::{Setting, SniMap};
use super::settings::Settings;
use super::stream::Stream;
use super::translator::Translator;

impl Translator {
    /// The routes file for `server`, which inherits from `stream`.
    pub(super) fn server(&mut self, server: &Directive, stream: &Stream) -> Option<RoutesFile> {
        let local: Vec<&Directive> = server.children().iter().collect();
        let settings = Settings { inherited: &stream.inherited, local: &local };
        self.report_untranslated(stream.inherited.iter().chain(&local).copied());

        let mut file = RoutesFile {
            header: vec![format!("Translated by `snigate import-nginx` from the `server {{}}` at {}.", server.at())],
            ..RoutesFile::default()
        };
        let (terminate, accept_proxy) = self.listen(&settings, server, &mut file);
        let preread = settings.last("ssl_preread").is_some_and(|d| d.args.first().is_some_and(|a| a == "on"));
        let mode = match (terminate, preread) {
            (true, _) => "terminate",
            (false, true) => "passthrough",
            (false, false) => "tcp",
        };
        if accept_proxy {
            self.accept_proxy_from(&settings, server, &mut file);
        } else if let Some(directive) = settings.last("set_real_ip_from") {
            self.warn(directive, "`set_real_ip_from` without `listen … proxy_protocol` has no effect; ignored");
        }
        self.limits(&settings, &stream.per_ip_zones, &mut file);

        let Some(proxy_pass) = settings.last("proxy_pass") else {
            self.error(server, "`server {}` has no `proxy_pass`");
            return None;
        };
        let backend = self.setting(proxy_pass, &stream.maps, mode)?;
        let (cert, key) = if terminate {
            let (cert, key) = self.certificate(&settings, server, &stream.maps, mode)?;
            (Some(cert), Some(key))
        } else {
            self.certificate_unused(&settings);
            (None, None)
        };
        let template = self.route_template(&settings, mode, terminate);

        let settings_by_name = [Some(&backend), cert.as_ref(), key.as_ref()];
        let grouping = group_hostnames(&settings_by_name.into_iter().flatten().collect::<Vec<_>>());
        for pattern in &grouping.left_out {
            self.warn(
                proxy_pass,
                format!("{pattern:?} has no backend, certificate or key in the maps and no default there; left out"),
            );
        }
        self.routes(&grouping, &template, proxy_pass, &stream.upstreams, &mut file)?;
        if file.routes.is_empty() {
            self.error(proxy_pass, "no route results: the maps list no hostname and have no default");
            return None;
        }
        if grouping.default.is_none() {
            file.header.push(
                "The maps have no `default`: names they do not list are refused (`default: reject`).".to_string(),
            );
        }
        Some(file)
    }

    /// The certificate and key of a terminating server, each fixed or a map variable.
    fn certificate<'m, 'a>(
        &mut self,
        settings: &Settings,
        server: &Directive,
        maps: &'m HashMap<String, SniMap<'a>>,
        mode: &str,
    ) -> Option<(Setting<'m, 'a>, Setting<'m, 'a>)> {
        let (Some(cert), Some(key)) = (settings.last("ssl_certificate"), settings.last("ssl_certificate_key")) else {
            self.error(server, "`listen … ssl` needs `ssl_certificate` and `ssl_certificate_key`");
            return None;
        };
        if settings.all("ssl_certificate").len() > 1 {
            self.warn(
                cert,
                "several `ssl_certificate`s (e.g. RSA and ECDSA): snigate serves one per route, the last one",
            );
        }
        Some((self.setting(cert, maps, mode)?, self.setting(key, maps, mode)?))
    }

    /// A certificate on a server that does not terminate TLS is not used: a warning for each.
    fn certificate_unused(&mut self, settings: &Settings) {
        for name in ["ssl_certificate", "ssl_certificate_key"] {
            if let Some(directive) = settings.last(name) {
                self.warn(directive, format!("`{name}` ignored: the server does not `listen … ssl`"));
            }
        }
    }

    /// What every route of the server shares: the mode, the TLS settings but the certificate, the
    /// PROXY header sent to backends, the connect timeout.
    fn route_template(&mut self, settings: &Settings, mode: &'static str, terminate: bool) -> yaml::Route {
        yaml::Route {
            mode,
            tls: if terminate { self.tls(settings) } else { None },
            proxy_protocol: settings.last("proxy_protocol").and_then(|d| match d.args.first().map(String::as_str) {
                Some("on") => Some((
                    "v1",
                    "nginx `proxy_protocol on` sends v1; v2 also carries the SNI, ALPN and client certificate CN",
                )),
                _ => None,
            }),
            connect_timeout: settings.last("proxy_connect_timeout").and_then(|d| self.duration(d)),
            ..yaml::Route::default()
        }
    }
}
