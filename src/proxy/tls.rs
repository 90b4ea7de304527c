//! Per-route rustls `ServerConfig`s (certificates chosen by SNI, client CA and CRLs, ALPN,
//! versions, resumption), built once at load time, and what a finished handshake tells the
//! backend (TLS version, cipher, client-certificate identity).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::CertificateRevocationListDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::metrics::close_cause::HandshakeFailure;
use crate::proxy::backend::Identity;
use crate::proxy::cert_dir;
use crate::proxy::cert_resolver::{self, CertResolver};
use crate::proxy::fetched_crls::{CrlPending, FetchedCrls};
/// For the importers: the names a certificate serves, as `cert_dir` and `check` read them.
pub use crate::proxy::pem_files::certificate_dns_names;
use crate::proxy::pem_files::{KeyProblem, PemFiles, ServedKey};
use crate::proxy::resumption::{self, Binding, RouteSessions, TicketSource};
use crate::proxy::session_tickets::TicketKeys;
use crate::proxy::tls_settings::{ClientAuth, TlsSettings, TlsVersion};

/// The crypto provider every TLS config uses: aws-lc-rs, its suites in the order the server
/// prefers (`ignore_client_order`): AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305, per
/// version — Mozilla's recommended order. rustls lists AES-256-GCM first; its SHA-384 key
/// schedule was 29 % of a full handshake's instructions and 39 % of a resumed one's (RESULTS.md),
/// where the AES-128 suites' SHA-256 runs on the CPU's SHA extensions.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| suite_preference(suite.suite()));
    Arc::new(provider)
}

/// Lower is preferred: TLS 1.3 before 1.2, then AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
fn suite_preference(suite: CipherSuite) -> (bool, u8) {
    let tls12 = !matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    let cipher = match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    (tls12, cipher)
}

/// A terminate route's TLS state, ready to serve.
#[derive(Debug)]
pub struct RouteTls {
    pub server_config: Arc<ServerConfig>,
    /// Routes with `alpn` and no `tls.alpn`: per protocol, the config that offers only it, so the
    /// negotiated protocol is the one the route was picked for. Shares the route's session state.
    by_alpn: Vec<(Vec<u8>, Arc<ServerConfig>)>,
    /// What the handshake serves, shared by every route naming the same files in one load.
    pub certificates: Arc<RouteCertificates>,
    /// When the first of the route's certificates expires, Unix seconds.
    pub cert_not_after: i64,
    pub identity: Identity,
    /// Close live sessions whose client certificate a reloaded CRL revokes.
    pub revoke_live: bool,
    pub revocation_lists: Vec<webpki::CertRevocationList<'static>>,
    /// The session cache and ticketer (none with `session_resumption: false`).
    pub sessions: Option<Arc<RouteSessions>>,
    /// What verified the client certificate (none with `client_auth: none`): also re-checks the
    /// certificate of a resumed session.
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// A route's certificates and which one a server name gets; one per load for the routes that name
/// the same `cert`, `key` and `cert_dir`.
#[derive(Debug)]
pub struct RouteCertificates {
    /// The default chain and key: `cert`/`key`, else the first file of `cert_dir`.
    pub served: Arc<ServedKey>,
    /// The usable certificates of `cert_dir`, by file name (none without it).
    pub dir_certificates: Vec<DirCertificate>,
    resolver: Arc<CertResolver>,
    /// The files of `cert_dir` left out, and why.
    warnings: Vec<TlsProblem>,
}

/// A certificate of a route's `cert_dir` and the file it came from.
#[derive(Debug)]
pub struct DirCertificate {
    /// As written in `cert_dir`, joined with the file name.
    pub file: PathBuf,
    pub served: Arc<ServedKey>,
}

impl DirCertificate {
    /// The certificate's subjectAltName DNS names, lowercase.
    pub fn names(&self) -> &[String] {
        &self.served.leaf.dns_names
    }
}

/// A route's TLS state and the problems that did not stop it: files of `cert_dir` left out.
#[derive(Debug)]
pub struct BuiltTls {
    pub tls: RouteTls,
    pub warnings: Vec<TlsProblem>,
}

impl RouteTls {
    /// The chain and key a handshake for `server_name` is served (the SIG_ALG / KEY_ALG source).
    pub fn served_for(&self, server_name: Option<&str>) -> &ServedKey {
        self.certificates.resolver.lookup(server_name)
    }

    /// Whether `certificate` is the one served when no name matches.
    pub fn is_default(&self, certificate: &DirCertificate) -> bool {
        Arc::ptr_eq(&certificate.served, self.certificates.resolver.default_key())
    }

    /// The config for a connection routed here for protocol `matched` (see `Route::matched_alpn`).
    pub fn server_config_for(&self, matched: Option<&[u8]>) -> &Arc<ServerConfig> {
        matched
            .and_then(|matched| self.by_alpn.iter().find(|(protocol, _)| protocol == matched))
            .map_or(&self.server_config, |(_, config)| config)
    }

    /// After the handshake: a resumed session's client certificate verified again, as a full
    /// handshake's was (see `resumption`).
    pub fn recheck_resumed(&self, connection: &ServerConnection) -> Result<(), rustls::Error> {
        resumption::recheck_resumed(connection, self.client_verifier.as_ref())
    }

    /// At reload: keep `previous`'s sessions if both are bound alike (see `RouteSessions::carry_from`).
    pub fn carry_sessions_from(&self, previous: &RouteTls) -> bool {
        match (&self.sessions, &previous.sessions) {
            (Some(sessions), Some(before)) => sessions.carry_from(before),
            _ => false,
        }
    }

    /// Whether this route's CRLs revoke the client certificate with this issuer and serial.
    pub fn revokes(&self, client: &ClientCertId) -> bool {
        self.revocation_lists.iter().any(|crl| {
            // webpki keeps the issuer Name's contents; x509-parser the whole DER SEQUENCE.
            client.issuer.ends_with(crl.issuer()) && matches!(crl.find_serial(&client.serial), Ok(Some(_)))
        })
    }
}

/// Who issued a client certificate and its serial, raw DER: enough to look it up in a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertId {
    pub issuer: Vec<u8>,
    pub serial: Vec<u8>,
}

/// A problem with a route's TLS settings: `field` is the `tls:` key it concerns and `value`
/// the text under that key to point at (empty: the key itself).
#[derive(Debug, Clone)]
pub struct TlsProblem {
    pub field: &'static str,
    pub value: String,
    pub message: String,
}

impl TlsProblem {
    fn file(field: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsProblem {
        TlsProblem { field, value: path.display().to_string(), message: format!("{}: {message}", path.display()) }
    }

    fn setting(field: &'static str, message: impl std::fmt::Display) -> TlsProblem {
        TlsProblem { field, value: String::new(), message: message.to_string() }
    }
}

/// What one load builds once and every route that names the same files shares: parsed files,
/// served keys and client-certificate verifiers. Session caches and ticket keys stay per route.
pub struct LoadCache {
    pub files: PemFiles,
    verifiers: HashMap<VerifierKey, Result<Arc<dyn ClientCertVerifier>, Vec<TlsProblem>>>,
    /// By `cert`, `key` and `cert_dir` as written: a directory shared by many routes is listed
    /// and indexed once.
    certificates: HashMap<CertificatesKey, Result<Arc<RouteCertificates>, Vec<TlsProblem>>>,
    /// When the load happens, Unix seconds: ranks certificates that share a name.
    now: i64,
    /// `session_tickets`: the shared key file's keys and the ticket lifetime.
    pub ticket_keys: Option<(TicketKeys, Duration)>,
    /// The CRLs of `crl_urls` fetched so far: what this load's verifiers check.
    fetched_crls: FetchedCrls,
}

impl LoadCache {
    /// An empty cache for a load at Unix time `now` with these fetched CRLs.
    pub fn new(now: i64, fetched_crls: FetchedCrls) -> LoadCache {
        LoadCache {
            files: PemFiles::default(),
            verifiers: HashMap::new(),
            certificates: HashMap::new(),
            now,
            ticket_keys: None,
            fetched_crls,
        }
    }
}

/// Routes naming the same `cert`, `key` and `cert_dir` serve the same certificates.
type CertificatesKey = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);

/// Routes with the same CA, CRLs and `client_auth` verify client certificates alike.
#[derive(PartialEq, Eq, Hash)]
struct VerifierKey {
    ca: PathBuf,
    crls: Vec<PathBuf>,
    crl_urls: Vec<String>,
    optional: bool,
}

impl RouteTls {
    /// Loads every file the route names and builds its `ServerConfig`; relative paths are
    /// resolved against `base_dir` (the config file's directory). Lists every problem found; a
    /// broken file of `cert_dir` is a warning as long as the route has a certificate left to serve.
    pub fn build(
        route: &str,
        tls: &TlsSettings,
        identity: Identity,
        base_dir: &Path,
        cache: &mut LoadCache,
    ) -> Result<BuiltTls, Vec<TlsProblem>> {
        let provider = provider();
        let mut problems = Vec::new();
        let certificates = cache.certificates(tls, base_dir, &provider).map_err(|found| problems.extend(found)).ok();
        let (verifier, crls) = match cache.client_verifier(tls, base_dir, &provider) {
            Ok(found) => found,
            Err(found) => {
                problems.extend(found);
                (None, Vec::new())
            }
        };
        if tls.client_auth == ClientAuth::None
            && (tls.client_ca.is_some() || !tls.crl.is_empty() || !tls.crl_urls.is_empty())
        {
            tracing::warn!("client_ca / crl / crl_urls are ignored with `client_auth: none`");
        }
        problems.extend(alpn_problems(tls));
        let certificates = match certificates {
            Some(certificates) if problems.is_empty() => certificates,
            other => {
                problems.extend(other.into_iter().flat_map(|certificates| certificates.warnings.clone()));
                return Err(problems);
            }
        };
        let sessions = match tls.session_resumption {
            true => Some(cache.route_sessions(route, tls, base_dir, &certificates)?),
            false => None,
        };
        let config = server_config(tls, certificates.resolver.clone(), verifier.clone(), sessions.clone(), provider)?;
        let by_alpn = per_protocol_configs(tls, &config);
        let in_dir = certificates.dir_certificates.iter().map(|certificate| certificate.served.leaf.not_after);
        let cert_not_after = in_dir.fold(certificates.served.leaf.not_after, i64::min);
        let warnings = certificates.warnings.clone();
        let tls = RouteTls {
            server_config: Arc::new(config),
            by_alpn,
            certificates,
            cert_not_after,
            identity,
            revoke_live: tls.revoke_live,
            revocation_lists: crls
                .iter()
                .filter_map(|crl| webpki::OwnedCertRevocationList::from_der(crl).ok())
                .map(webpki::CertRevocationList::from)
                .collect(),
            sessions,
            client_verifier: verifier,
        };
        Ok(BuiltTls { tls, warnings })
    }
}

/// Why a `cert_dir` serves nothing.
const NO_USABLE_CERTIFICATE: &str =
    "holds no usable certificate (NAME.pem with chain and key, or NAME.crt with NAME.key)";

/// Each of `tls.alpn` is 1 to 255 bytes.
fn alpn_problems(tls: &TlsSettings) -> Vec<TlsProblem> {
    tls.alpn
        .iter()
        .filter(|protocol| protocol.is_empty() || protocol.len() > MAX_ALPN_PROTOCOL_BYTES)
        .map(|protocol| TlsProblem {
            field: "alpn",
            value: protocol.clone(),
            message: format!("ALPN protocol {protocol:?} must be 1 to {MAX_ALPN_PROTOCOL_BYTES} bytes"),
        })
        .collect()
}

/// The resolver over the directory's certificates, ranked, with `default` for the rest.
fn resolver(default: &Arc<ServedKey>, dir_certificates: &[DirCertificate], now: i64) -> CertResolver {
    let mut ranked: Vec<&DirCertificate> = dir_certificates.iter().collect();
    cert_resolver::preference_order(&mut ranked, now, |certificate| {
        (&certificate.served, certificate.file.to_str().unwrap_or_default())
    });
    CertResolver::new(default, ranked.into_iter().map(|certificate| &certificate.served))
}

/// The route's own `ServerConfig` around a (possibly shared) key and verifier.
fn server_config(
    tls: &TlsSettings,
    resolver: Arc<CertResolver>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    sessions: Option<Arc<RouteSessions>>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, Vec<TlsProblem>> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|error| vec![TlsProblem::setting("min_version", error)])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    let offered = if tls.alpn.is_empty() { &tls.route_alpn } else { &tls.alpn };
    config.alpn_protocols = offered.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.max_early_data_size = 0;
    // Every suite offered is AEAD with forward secrecy; the server's order (AES-GCM first,
    // hardware-accelerated) is the one to use.
    config.ignore_client_order = true;
    // Each route has its own cache and ticket keys (see `resumption`).
    match sessions {
        Some(sessions) => {
            config.session_storage = sessions.clone();
            config.ticketer = sessions;
            // One ticket per handshake (rustls sends two): a device reconnects one connection at
            // a time and gets a fresh ticket each time it resumes.
            config.send_tls13_tickets = 1;
        }
        None => {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
    }
    Ok(config)
}

/// With route `alpn` and no `tls.alpn`, one copy of `config` per protocol offering only that one
/// (the copies share the route's certificate, verifier, session cache and ticket key).
fn per_protocol_configs(tls: &TlsSettings, config: &ServerConfig) -> Vec<(Vec<u8>, Arc<ServerConfig>)> {
    if !tls.alpn.is_empty() {
        return Vec::new();
    }
    tls.route_alpn
        .iter()
        .map(|protocol| {
            let mut only = config.clone();
            only.alpn_protocols = vec![protocol.as_bytes().to_vec()];
            (protocol.as_bytes().to_vec(), Arc::new(only))
        })
        .collect()
}

/// A file of `cert_dir` that is left out, named by its path as the config writes it.
fn dir_file_problem(dir: &Path, file: &str, message: &str) -> TlsProblem {
    let message = format!("{}: {message}", dir.join(file).display());
    TlsProblem { field: "cert_dir", value: dir.display().to_string(), message }
}

/// Why an entry of `cert_dir` cannot be served, blaming its certificate or its key file. A
/// `.pem` whose certificate is broken is reported once, for that.
fn dir_key_problems(dir: &Path, entry: &cert_dir::DirEntry, found: Vec<KeyProblem>) -> Vec<TlsProblem> {
    let cert_broken = found.iter().any(|problem| matches!(problem, KeyProblem::Cert(_)));
    let combined = entry.cert == entry.key;
    found
        .into_iter()
        .filter(|problem| !(combined && cert_broken && matches!(problem, KeyProblem::Key(_))))
        .map(|problem| dir_key_problem(dir, entry, combined, problem))
        .collect()
}

fn dir_key_problem(dir: &Path, entry: &cert_dir::DirEntry, combined: bool, problem: KeyProblem) -> TlsProblem {
    match problem {
        KeyProblem::Cert(message) => dir_file_problem(dir, &entry.name, &message),
        KeyProblem::Key(message) if combined => {
            let hint = "a .pem in cert_dir holds its chain and its key; or use NAME.crt with NAME.key";
            dir_file_problem(dir, &entry.name, &format!("{message} ({hint})"))
        }
        KeyProblem::Key(message) => {
            let key_name = entry.key.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
            dir_file_problem(dir, &key_name, &message)
        }
    }
}

impl LoadCache {
    /// A new session cache and ticketer for route `route`, bound to its certificates, client CA
    /// and `client_auth` (the verifier was built first, so the CA file is read already).
    fn route_sessions(
        &mut self,
        route: &str,
        tls: &TlsSettings,
        base_dir: &Path,
        certificates: &RouteCertificates,
    ) -> Result<Arc<RouteSessions>, Vec<TlsProblem>> {
        let client_cas = match (&tls.client_ca, tls.client_auth) {
            (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
                self.files.certs(&base_dir.join(ca)).map(|certs| certs.to_vec()).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let in_dir = certificates.dir_certificates.iter().map(|certificate| &certificate.served);
        let served = std::iter::once(&certificates.served).chain(in_dir).map(|served| served.certified.cert.as_slice());
        let binding = Binding::new(served, &client_cas, tls.client_auth.as_str());
        let tickets = match &self.ticket_keys {
            Some((keys, lifetime)) => TicketSource::Shared { keys, lifetime: *lifetime },
            None => TicketSource::Local,
        };
        RouteSessions::new(route, binding, tickets).map_err(|error| {
            vec![TlsProblem::setting("session_resumption", format!("cannot make a ticket key: {error}"))]
        })
    }
}

type Verified = (Option<Arc<dyn ClientCertVerifier>>, Vec<CertificateRevocationListDer<'static>>);

impl LoadCache {
    /// The route's certificates, built once per load for each `cert`, `key` and `cert_dir`.
    fn certificates(
        &mut self,
        tls: &TlsSettings,
        base_dir: &Path,
        provider: &CryptoProvider,
    ) -> Result<Arc<RouteCertificates>, Vec<TlsProblem>> {
        let key = (tls.cert.clone(), tls.key.clone(), tls.cert_dir.clone());
        if let Some(cached) = self.certificates.get(&key) {
            return cached.clone();
        }
        let built = self.build_certificates(tls, base_dir, provider).map(Arc::new);
        self.certificates.insert(key, built.clone());
        built
    }

    /// The route's default certificate (`cert`/`key`, else the first file of `cert_dir`), the
    /// files of `cert_dir` and the resolver over them. Without a default to serve, every problem
    /// found is an error.
    fn build_certificates(
        &mut self,
        tls: &TlsSettings,
        base_dir: &Path,
        provider: &CryptoProvider,
    ) -> Result<RouteCertificates, Vec<TlsProblem>> {
        let named = self.named_key(tls, base_dir, provider);
        let in_dir = match &tls.cert_dir {
            Some(dir) => self.dir_certificates(dir, base_dir, provider),
            None => Ok((Vec::new(), Vec::new())),
        };
        let (named, (dir_certificates, mut warnings)) = match (named, in_dir) {
            (Ok(named), Ok(in_dir)) => (named, in_dir),
            (named, in_dir) => {
                let dir_problems = in_dir.map_or_else(|problem| vec![problem], |(_, skipped)| skipped);
                return Err(named.err().into_iter().flatten().chain(dir_problems).collect());
            }
        };
        if let (Some(dir), true) = (&tls.cert_dir, dir_certificates.is_empty()) {
            warnings.push(TlsProblem::file("cert_dir", dir, NO_USABLE_CERTIFICATE));
        }
        match named.or_else(|| dir_certificates.first().map(|first| Arc::clone(&first.served))) {
            Some(served) => {
                let resolver = Arc::new(resolver(&served, &dir_certificates, self.now));
                Ok(RouteCertificates { served, dir_certificates, resolver, warnings })
            }
            None => Err(warnings),
        }
    }

    /// The chain and key of `cert` / `key`: `None` when the route names neither and has a
    /// `cert_dir` to serve from.
    fn named_key(
        &mut self,
        tls: &TlsSettings,
        base_dir: &Path,
        provider: &CryptoProvider,
    ) -> Result<Option<Arc<ServedKey>>, Vec<TlsProblem>> {
        let (cert, key) = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if tls.cert_dir.is_some() => return Ok(None),
            (None, None) => {
                return Err(vec![TlsProblem::setting("tls", "`tls:` needs `cert` and `key`, or `cert_dir`")])
            }
            (Some(_), None) => {
                return Err(vec![TlsProblem::setting(
                    "cert",
                    "`cert` needs `key` (name the same file twice for a PEM holding both)",
                )]);
            }
            (None, Some(_)) => return Err(vec![TlsProblem::setting("key", "`key` needs `cert`")]),
        };
        self.files.served_key(&base_dir.join(cert), &base_dir.join(key), provider).map(Some).map_err(|found| {
            found
                .into_iter()
                .map(|problem| match problem {
                    KeyProblem::Cert(message) => TlsProblem::file("cert", cert, message),
                    KeyProblem::Key(message) => TlsProblem::file("key", key, message),
                })
                .collect()
        })
    }

    /// The usable certificates of `cert_dir` by file name, and a warning for each file left out;
    /// an error when the directory cannot be listed.
    fn dir_certificates(
        &mut self,
        dir: &Path,
        base_dir: &Path,
        provider: &CryptoProvider,
    ) -> Result<(Vec<DirCertificate>, Vec<TlsProblem>), TlsProblem> {
        let listing = cert_dir::scan(&base_dir.join(dir)).map_err(|error| TlsProblem::file("cert_dir", dir, error))?;
        let mut skipped: Vec<TlsProblem> =
            listing.problems.iter().map(|problem| dir_file_problem(dir, &problem.name, &problem.message)).collect();
        let mut certificates = Vec::new();
        for entry in listing.entries {
            match self.files.served_key(&entry.cert, &entry.key, provider) {
                Ok(served) => certificates.push(DirCertificate { file: dir.join(&entry.name), served }),
                Err(found) => skipped.extend(dir_key_problems(dir, &entry, found)),
            }
        }
        Ok((certificates, skipped))
    }

    /// The route's client-certificate verifier (none for `client_auth: none`) and its CRLs.
    fn client_verifier(
        &mut self,
        tls: &TlsSettings,
        base_dir: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Verified, Vec<TlsProblem>> {
        if tls.client_auth == ClientAuth::None {
            return Ok((None, Vec::new()));
        }
        let Some(ca) = &tls.client_ca else {
            let message = format!("client_auth {:?} needs `client_ca`", tls.client_auth).to_lowercase();
            return Err(vec![TlsProblem::setting("client_auth", message)]);
        };
        let mut problems = Vec::new();
        let mut crls = Vec::new();
        for crl_path in &tls.crl {
            match self.files.crls(&base_dir.join(crl_path)) {
                Ok(found) => crls.extend(found.iter().cloned()),
                Err(message) => problems.push(TlsProblem::file("crl", crl_path, message)),
            }
        }
        let key = VerifierKey {
            ca: base_dir.join(ca),
            crls: tls.crl.iter().map(|crl| base_dir.join(crl)).collect(),
            crl_urls: tls.crl_urls.clone(),
            optional: tls.client_auth == ClientAuth::Optional,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let missing = self.add_fetched_crls(&tls.crl_urls, &mut crls);
        if let Some(cached) = self.verifiers.get(&key) {
            return cached.clone().map(|verifier| (Some(verifier), crls));
        }
        let built = build_verifier(&mut self.files, ca, &key, crls.clone(), provider).map(|verifier| {
            if missing {
                CrlPending::wrap(verifier)
            } else {
                verifier
            }
        });
        self.verifiers.insert(key, built.clone());
        built.map(|verifier| (Some(verifier), crls))
    }
}

impl LoadCache {
    /// Adds the fetched CRLs of `urls` to `crls`; true when one of them has none yet (the route
    /// then fails closed, see `fetched_crls.rs`).
    fn add_fetched_crls(&self, urls: &[String], crls: &mut Vec<CertificateRevocationListDer<'static>>) -> bool {
        let mut missing = false;
        for url in urls {
            match self.fetched_crls.get(url) {
                Some(fetched) => crls.extend(fetched.iter().cloned()),
                None => missing = true,
            }
        }
        missing
    }
}

fn build_verifier(
    files: &mut PemFiles,
    ca_name: &Path,
    key: &VerifierKey,
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, Vec<TlsProblem>> {
    let certs = files.certs(&key.ca).map_err(|message| vec![TlsProblem::file("client_ca", ca_name, message)])?;
    let mut roots = RootCertStore::empty();
    for cert in certs.iter() {
        roots.add(cert.clone()).map_err(|error| {
            vec![TlsProblem::file("client_ca", ca_name, format!("not a usable CA certificate: {error}"))]
        })?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).with_crls(crls);
    if key.optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|error| {
        vec![TlsProblem::file(
            "client_ca",
            ca_name,
            format!("cannot verify client certificates with this CA / CRL set: {error}"),
        )]
    })
}

/// What a finished server handshake tells the backend and the access log.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub version: &'static str,
    pub cipher: &'static str,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// A verified client certificate is part of this session.
    pub client_cert: bool,
    /// ... and it was presented in this handshake (not carried over by resumption).
    pub client_cert_this_connection: bool,
    /// The session was resumed (ticket or session id), not a full handshake.
    pub resumed: bool,
    /// The configured `identity` read from the verified client certificate.
    pub client_identity: Option<String>,
    /// The client certificate's serial number, hex.
    pub client_serial: Option<String>,
    pub client_cert_id: Option<ClientCertId>,
}

/// Longest ALPN protocol name: the extension gives each name a one-byte length (RFC 7301 §3.1).
pub const MAX_ALPN_PROTOCOL_BYTES: usize = 255;

/// Longest identity passed to the backend: the PROXY v2 spec and Mosquitto cap TLV strings there.
pub const MAX_IDENTITY_BYTES: usize = 255;

/// A verified client certificate whose identity cannot be passed on safely.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate identity has {0} bytes, over the {MAX_IDENTITY_BYTES}-byte limit")]
    TooLong(usize),
    #[error("client certificate identity contains control characters (shown escaped: {0})")]
    ControlCharacters(String),
}

impl Session {
    /// Reads the finished handshake. A certificate whose identity holds NUL or other control
    /// characters, or is over 255 bytes, is refused rather than passed to the backend altered.
    pub fn from_connection(connection: &ServerConnection, identity: Identity) -> Result<Session, IdentityError> {
        let leaf = connection.peer_certificates().and_then(|certs| certs.first());
        let resumed = connection.handshake_kind() == Some(HandshakeKind::Resumed);
        let parsed = leaf.and_then(|der| X509Certificate::from_der(der).ok()).map(|(_, cert)| cert);
        let client_identity = parsed.as_ref().and_then(|cert| certificate_identity(cert, identity));
        if let Some(value) = &client_identity {
            if value.len() > MAX_IDENTITY_BYTES {
                return Err(IdentityError::TooLong(value.len()));
            }
            if value.chars().any(char::is_control) {
                return Err(IdentityError::ControlCharacters(value.escape_debug().to_string()));
            }
        }
        Ok(Session {
            version: match connection.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            },
            cipher: connection.negotiated_cipher_suite().map_or("unknown", |s| cipher_name(s.suite())),
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
            client_cert: leaf.is_some(),
            client_cert_this_connection: leaf.is_some() && !resumed,
            resumed,
            client_identity,
            client_serial: parsed.as_ref().map(|cert| cert.raw_serial_as_string().replace(':', "")),
            client_cert_id: parsed.as_ref().map(|cert| ClientCertId {
                issuer: cert.issuer().as_raw().to_vec(),
                serial: cert.raw_serial().to_vec(),
            }),
        })
    }
}

/// Reads the configured identity from a verified client certificate.
pub fn certificate_identity(cert: &X509Certificate<'_>, identity: Identity) -> Option<String> {
    if identity == Identity::Cn {
        return cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    }
    let names = cert.subject_alternative_name().ok().flatten()?;
    names.value.general_names.iter().find_map(|name| match (identity, name) {
        (Identity::SanDns, GeneralName::DNSName(value))
        | (Identity::SanUri, GeneralName::URI(value))
        | (Identity::SanEmail, GeneralName::RFC822Name(value)) => Some(value.to_string()),
        _ => None,
    })
}

/// Why a server handshake failed, for metrics.
pub fn failure_reason(error: &std::io::Error) -> HandshakeFailure {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(error) => tls_failure_reason(error),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => HandshakeFailure::ClientClosed,
        None => HandshakeFailure::Io,
    }
}

/// Why rustls refused a handshake (or the re-check of a resumed one), for metrics.
pub fn tls_failure_reason(error: &rustls::Error) -> HandshakeFailure {
    use rustls::{CertificateError, Error};
    match error {
        Error::NoCertificatesPresented => HandshakeFailure::CertificateRequired,
        Error::InvalidCertificate(CertificateError::Revoked) => HandshakeFailure::CertificateRevoked,
        Error::InvalidCertificate(CertificateError::UnknownRevocationStatus) => HandshakeFailure::RevocationUnknown,
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            HandshakeFailure::CertificateExpired
        }
        Error::InvalidCertificate(_) => HandshakeFailure::BadCertificate,
        Error::NoApplicationProtocol => HandshakeFailure::NoApplicationProtocol,
        Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
        Error::AlertReceived(_) => HandshakeFailure::AlertReceived,
        _ => HandshakeFailure::ProtocolError,
    }
}

/// OpenSSL names for the suites rustls offers (what HAProxy and nginx put in CIPHER).
fn cipher_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other.as_str().unwrap_or("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_prefers_aes_128_then_aes_256_then_chacha_within_each_version() {
        let order: Vec<CipherSuite> = provider().cipher_suites.iter().map(|suite| suite.suite()).collect();
        assert_eq!(
            order[..3],
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        let tls12: Vec<u8> = order[3..].iter().map(|&suite| suite_preference(suite).1).collect();
        assert!(tls12.is_sorted() && tls12.len() == 6, "{order:?}");
        assert_eq!(order.len(), rustls::crypto::aws_lc_rs::default_provider().cipher_suites.len(), "none dropped");
    }
}
