//! The TLS settings of a terminating server: client certificates, CRLs, ALPN, protocol versions
//! and session tickets. Ciphers and curves are rustls's choice (see `directives`).

use super::super::yaml;
use super::settings::Settings;
use super::translator::Translator;

impl Translator {
    /// The TLS settings every route of a terminating server shares (the certificate comes later).
    pub(super) fn tls(&mut self, settings: &Settings) -> Option<yaml::Tls> {
        let mut tls = yaml::Tls::default();
        let verify = settings.last("ssl_verify_client");
        let client_ca = settings.last("ssl_client_certificate");
        let trusted = settings.last("ssl_trusted_certificate");
        match verify.and_then(|d| d.args.first()).map(String::as_str) {
            None | Some("off") => {}
            Some("on") => tls.client_auth = Some("required"),
            Some("optional") => tls.client_auth = Some("optional"),
            Some(other) => {
                let directive = verify?;
                self.error(
                    directive,
                    format!("`ssl_verify_client {other}` has no equivalent: snigate verifies every client certificate it accepts"),
                );
            }
        }
        if tls.client_auth.is_some() {
            let ca = match (client_ca, trusted) {
                (Some(ca), Some(trusted)) => {
                    self.warn(
                        trusted,
                        "`ssl_trusted_certificate` ignored: snigate trusts the CAs in `tls.client_ca` only; append its certificates to the `ssl_client_certificate` file if client certificates chain to them",
                    );
                    Some(ca)
                }
                (ca, trusted) => ca.or(trusted),
            };
            match ca.and_then(|d| d.args.first()) {
                Some(path) => tls.client_ca = Some(self.path(path)),
                None => self.error(verify?, "`ssl_verify_client` needs `ssl_client_certificate` (the client CA)"),
            }
        }
        for crl in settings.all("ssl_crl") {
            if let Some(path) = crl.args.first() {
                tls.crl.push(self.path(path));
            }
        }
        if let Some(directive) = settings.last("ssl_alpn") {
            tls.alpn = directive.args.clone();
        }
        if let Some(directive) = settings.last("ssl_protocols") {
            let has = |version: &str| directive.args.iter().any(|arg| arg == version);
            let old: Vec<&String> =
                directive.args.iter().filter(|a| !matches!(a.as_str(), "TLSv1.2" | "TLSv1.3")).collect();
            if !old.is_empty() {
                self.warn(directive, format!("{old:?} dropped: snigate speaks TLS 1.2 and 1.3 only"));
            }
            match (has("TLSv1.2"), has("TLSv1.3")) {
                (true, true) => {}
                (true, false) => self.warn(
                    directive,
                    "TLS 1.3 is not listed, but snigate accepts it too (it has a minimum version only)",
                ),
                (false, true) => tls.min_version = Some("1.3"),
                (false, false) => self.error(directive, "neither TLSv1.2 nor TLSv1.3 is enabled"),
            }
        }
        let tickets_off =
            settings.last("ssl_session_tickets").is_some_and(|d| d.args.first().is_some_and(|a| a == "off"));
        if tickets_off {
            tls.session_resumption = Some(false);
        }
        Some(tls)
    }
}
