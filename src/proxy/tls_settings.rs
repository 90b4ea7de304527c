//! What a terminate route asks of its TLS, as [`RouteTls::build`](crate::proxy::tls::RouteTls::build)
//! takes it: the config layer fills it from the routes file's `tls:` section.

use std::path::PathBuf;

use serde::Deserialize;

/// Whether and how clients present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Optional,
    Required,
}

impl ClientAuth {
    /// The setting as written in the routes file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// The oldest TLS version a route accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// One route's TLS settings. Paths are as written; `RouteTls::build` resolves relative ones.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The default certificate chain and its key (the same file for a combined PEM); with
    /// `cert_dir` optional, else both required.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A directory of certificates chosen by SNI (`cert_dir.rs`, `cert_resolver.rs`).
    pub cert_dir: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    pub crl: Vec<PathBuf>,
    /// URLs of CRLs fetched by `ops/crl_fetch.rs`; a load reads them from its `FetchedCrls`.
    pub crl_urls: Vec<String>,
    pub alpn: Vec<String>,
    /// The route's own `alpn` (what it is routed on): offered when `alpn` is empty.
    pub route_alpn: Vec<String>,
    pub min_version: TlsVersion,
    /// Stateful cache and tickets, each per route so sessions never cross tenants.
    pub session_resumption: bool,
    /// At reload, also close live sessions whose client certificate the new CRLs revoke.
    pub revoke_live: bool,
}
