//! The TLS settings of a terminating bind → the routes' `tls` (the certificate is chosen per
//! route later, in `routes`): client certificates (`verify`, `ca-file`), `crl-file`, `alpn`, the
//! minimum version and `no-tls-tickets`. Ciphers and curves are rustls's choice.

use super::super::lexer::Line;
use super::bind::BindTls;
use super::translator::Translator;
use crate::import::yaml;

impl Translator {
    /// What every route of a terminating frontend shares.
    pub(super) fn tls_template(&mut self, tls: &BindTls, bind_line: usize) -> yaml::Tls {
        let mut out = yaml::Tls {
            client_auth: tls.verify,
            crl: tls.crl_files.clone(),
            alpn: tls.alpn.clone(),
            min_version: tls.min_version,
            session_resumption: tls.no_tickets.then_some(false),
            ..yaml::Tls::default()
        };
        match (&tls.ca_file, tls.verify) {
            (Some(ca), Some(_)) => out.client_ca = Some(ca.clone()),
            (None, Some(verify)) => self.error(bind_line, format!("`verify {verify}` needs `ca-file` (the client CA)")),
            (Some(_), None) => self.warn(
                bind_line,
                "`ca-file` without `verify optional|required` ignored: client certificates are not asked for",
            ),
            (None, None) => {}
        }
        if !tls.crl_files.is_empty() && tls.verify.is_none() {
            self.warn(bind_line, "`crl-file` without `verify optional|required` has no effect");
        }
        out
    }

    /// The first `bind` line of a frontend, for messages about its TLS settings.
    pub(super) fn first_bind(lines: &[Line], section_line: usize) -> usize {
        lines.iter().find(|l| l.keyword() == "bind").map_or(section_line, |l| l.number)
    }
}
