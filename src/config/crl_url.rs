//! `tls.crl_urls` and `tls.crl_refresh`: each URL checked (`http://host[:port]/path`) and the
//! distinct URLs of the whole file with how often each is fetched at least, for
//! `ops/crl_fetch.rs`. Nothing here fetches: `check` reports syntax only.

use std::time::Duration;

use hyper::Uri;

use super::error::{ConfigError, Reporter};
use super::schema::RawTls;
use super::yaml_position::Span;

/// Default `crl_refresh`: a revocation reaches every proxy within a quarter of an hour, while a
/// CA's distribution point sees four requests an hour from each proxy.
pub const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(15 * 60);
/// Smallest `crl_refresh`: a fetch takes a connection and a parse; faster is a busy loop on the CA.
pub const MIN_CRL_REFRESH: Duration = Duration::from_secs(1);

/// A CRL URL to fetch and keep fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSource {
    /// As the config writes it: the key of `FetchedCrls` and the `url` metric label.
    pub url: String,
    pub uri: Uri,
    /// The shortest `crl_refresh` of the routes naming it.
    pub refresh: Duration,
}

/// Why a `crl_urls` entry cannot be fetched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrlUrlError {
    #[error("CRL URL {0:?} is not a URL: {1}")]
    Syntax(String, String),
    #[error("CRL URL {0:?}: https is not supported (a CRL is signed by its CA, and RFC 5280 distribution points are http://)")]
    Https(String),
    #[error("CRL URL {0:?} must start with http://")]
    Scheme(String),
    #[error("CRL URL {0:?} has no host")]
    NoHost(String),
}

/// Checks one `crl_urls` entry.
pub fn parse_crl_url(url: &str) -> Result<Uri, CrlUrlError> {
    let uri: Uri = url
        .parse()
        .map_err(|error: hyper::http::uri::InvalidUri| CrlUrlError::Syntax(url.to_string(), error.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(CrlUrlError::Https(url.to_string())),
        _ => return Err(CrlUrlError::Scheme(url.to_string())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(CrlUrlError::NoHost(url.to_string()));
    }
    Ok(uri)
}

/// The distinct CRL URLs of a file, each with the shortest refresh asked for it.
#[derive(Debug, Default)]
pub(super) struct CrlSources(pub(super) Vec<CrlSource>);

impl CrlSources {
    /// Checks a route's `crl_urls` and `crl_refresh` (problems go to `errors`, at the entry) and
    /// adds its URLs.
    pub(super) fn add_route(&mut self, raw: &RawTls, report: &Reporter, span: Span, errors: &mut Vec<ConfigError>) {
        let refresh = raw.crl_refresh.unwrap_or(DEFAULT_CRL_REFRESH);
        if refresh < MIN_CRL_REFRESH {
            let position = report.at.find_key("crl_refresh", span).unwrap_or((span.start, 1));
            errors.push(report.error(position, format!("`crl_refresh` must be at least {MIN_CRL_REFRESH:?}")));
        }
        for url in &raw.crl_urls {
            match parse_crl_url(url) {
                Ok(uri) => self.add(url, uri, refresh.max(MIN_CRL_REFRESH)),
                Err(error) => {
                    let position = report.at.find_value("crl_urls", url, span);
                    errors.push(report.error(position, error.to_string()));
                }
            }
        }
    }

    fn add(&mut self, url: &str, uri: Uri, refresh: Duration) {
        match self.0.iter_mut().find(|source| source.url == url) {
            Some(known) => known.refresh = known.refresh.min(refresh),
            None => self.0.push(CrlSource { url: url.to_string(), uri, refresh }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_urls_must_be_http_with_a_host() {
        let uri = parse_crl_url("http://127.0.0.1:8080/ca.crl").unwrap();
        assert_eq!((uri.host(), uri.port_u16(), uri.path()), (Some("127.0.0.1"), Some(8080), "/ca.crl"));
        assert!(parse_crl_url("http://crl.example.test/a.crl").is_ok());
        assert!(matches!(parse_crl_url("https://crl.example.test/a.crl"), Err(CrlUrlError::Https(_))));
        assert!(matches!(parse_crl_url("ftp://crl.example.test/a.crl"), Err(CrlUrlError::Scheme(_))));
        assert!(matches!(parse_crl_url("/etc/ca.crl"), Err(CrlUrlError::Scheme(_))));
        assert!(matches!(parse_crl_url("http://exa mple/"), Err(CrlUrlError::Syntax(..))));
    }
}
