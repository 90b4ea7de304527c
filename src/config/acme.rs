//! `tls.acme`: each block checked (an `https://` directory, `mailto:` contacts, exact names, the
//! storage directory's permissions, a readable `directory_ca`) and the distinct certificates of
//! the whole file with where each is stored, for `ops/acme.rs`. Routes asking for the same names
//! from the same directory share one certificate. Nothing here talks to the CA.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use hyper::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{ConfigError, Reporter};
use super::schema::{RawRoute, RawTls};
use super::yaml_position::Span;
use crate::proxy::pem_files;

/// Default `renew_before`: Let's Encrypt's advice for its 90-day certificates (renew with a
/// third of the lifetime left), leaving weeks of retries before expiry.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// A stored certificate's chain, leaf first, and its key, in the certificate's folder.
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
/// The shortest EAB HMAC key accepted: 128 bits (CAs hand out 256).
const MIN_HMAC_KEY_BYTES: usize = 16;
/// Permission bits the storage directory must not have: it holds private keys.
const STORAGE_FORBIDDEN_MODE: u32 = 0o077;

/// `tls.acme.key_type`: the certificate's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcmeKeyType {
    /// ECDSA P-256: what every current TLS stack takes, the smallest and fastest handshake.
    #[default]
    P256,
    P384,
    /// RSA, for clients (older embedded TLS stacks) without ECDSA.
    Rsa2048,
    Rsa4096,
}

impl AcmeKeyType {
    /// As written in the routes file.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeKeyType::P256 => "p256",
            AcmeKeyType::P384 => "p384",
            AcmeKeyType::Rsa2048 => "rsa2048",
            AcmeKeyType::Rsa4096 => "rsa4096",
        }
    }
}

/// One certificate snigate obtains and renews, with every route serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeCertificate {
    /// `<first name>-<8 hex digits of the directory, names and key type>`: the storage folder and the
    /// `certificate` metric label.
    pub id: String,
    /// The route's `sni` names, lowercase, sorted, each once.
    pub names: Vec<String>,
    pub directory: String,
    /// Resolved against the config file's directory.
    pub directory_ca: Option<PathBuf>,
    pub contact: Vec<String>,
    /// Resolved against the config file's directory.
    pub storage: PathBuf,
    pub renew_before: Duration,
    pub key_type: AcmeKeyType,
    /// The External Account Binding for creating the account, if the CA requires one.
    pub eab: Option<Eab>,
    /// The routes serving it, in file order.
    pub routes: Vec<String>,
    /// The leaf (DER) this load serves from the certificate's own files, if it does: what the
    /// ACME task compares storage with, to see a certificate another process sharing the storage
    /// issued (not an order setting: `same_order` ignores it).
    pub loaded_leaf: Option<Vec<u8>>,
}

impl AcmeCertificate {
    /// The certificate's folder in storage (mode 0700).
    pub fn folder(&self) -> PathBuf {
        self.storage.join(&self.id)
    }

    /// The chain as the CA issued it, leaf first.
    pub fn cert_file(&self) -> PathBuf {
        self.folder().join(CERT_FILE)
    }

    /// Its private key, PKCS#8 PEM (mode 0600).
    pub fn key_file(&self) -> PathBuf {
        self.folder().join(KEY_FILE)
    }

    /// The account at this directory: one per storage and directory, shared by its certificates.
    pub fn account_file(&self) -> PathBuf {
        self.storage.join(format!("account-{}.json", short_hash(&[self.directory.as_str()])))
    }

    /// The chain and key a load serves: this certificate's own once stored; until then, the
    /// stored certificate in the same storage that covers most of its names and has not expired
    /// (a name added to a route keeps the others served while the new certificate is ordered).
    /// `None` when there is neither: the route refuses handshakes until its first certificate.
    pub fn served_files(&self, now: i64) -> Option<(PathBuf, PathBuf)> {
        if self.cert_file().exists() {
            return Some((self.cert_file(), self.key_file()));
        }
        let mut best: Option<(usize, i64, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.storage).ok()?.flatten() {
            let folder = entry.path();
            let Some((names, not_after)) = stored_names(&folder.join(CERT_FILE)) else { continue };
            let covered = self.names.iter().filter(|name| pem_files::covers(&names, name)).count();
            let better = best.as_ref().is_none_or(|(most, latest, _)| (covered, not_after) > (*most, *latest));
            if covered > 0 && not_after > now && folder.join(KEY_FILE).exists() && better {
                best = Some((covered, not_after, folder));
            }
        }
        best.map(|(_, _, folder)| (folder.join(CERT_FILE), folder.join(KEY_FILE)))
    }

    /// Same certificate, same settings: every field but the routes serving it.
    pub fn same_order(&self, other: &AcmeCertificate) -> bool {
        let settings = (&self.directory_ca, &self.contact, &self.storage, self.renew_before, self.key_type, &self.eab);
        self.id == other.id
            && settings
                == (&other.directory_ca, &other.contact, &other.storage, other.renew_before, other.key_type, &other.eab)
    }
}

/// The DNS names and expiry of the leaf in a stored chain.
fn stored_names(cert_file: &Path) -> Option<(Vec<String>, i64)> {
    let pem = std::fs::read(cert_file).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, parsed) = X509Certificate::from_der(&leaf).ok()?;
    Some((pem_files::certificate_dns_names(&parsed), parsed.validity().not_after.timestamp()))
}

/// `tls.acme.eab`: the key id, and the file of the HMAC key (read when the account is created,
/// so the key is not held in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eab {
    pub key_id: String,
    /// Resolved against the config file's directory.
    pub hmac_key_file: PathBuf,
}

impl Eab {
    /// The HMAC key: the file's base64url text (padding and surrounding whitespace allowed).
    pub fn hmac_key(&self) -> Result<Vec<u8>, String> {
        let text = std::fs::read_to_string(&self.hmac_key_file)
            .map_err(|error| format!("`hmac_key_file` {}: {error}", self.hmac_key_file.display()))?;
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            // Not the decoder's message: it quotes the offending character of the key.
            .map_err(|_| format!("`hmac_key_file` {} is not base64url", self.hmac_key_file.display()))?;
        if key.len() < MIN_HMAC_KEY_BYTES {
            return Err(format!(
                "`hmac_key_file` {} holds {} bytes; an EAB HMAC key has at least {MIN_HMAC_KEY_BYTES}",
                self.hmac_key_file.display(),
                key.len()
            ));
        }
        Ok(key)
    }
}

/// The first 8 hex digits of SHA-256 over `parts`, each followed by a NUL.
fn short_hash(parts: &[&str]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    context.finish().as_ref()[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The distinct ACME certificates of a file.
#[derive(Debug, Default)]
pub(super) struct AcmeCertificates(pub(super) Vec<AcmeCertificate>);

impl AcmeCertificates {
    /// Checks a terminate route's `acme:` block (none: `None`) (problems go to `errors`, at the key) and adds its
    /// certificate, or the route to the certificate another route already asks for. Returns the
    /// certificate the route serves.
    pub(super) fn add_route(
        &mut self,
        raw_route: &RawRoute,
        raw_tls: &RawTls,
        base_dir: &Path,
        report: &Reporter,
        span: Span,
        errors: &mut Vec<ConfigError>,
    ) -> Option<AcmeCertificate> {
        let raw = raw_tls.acme.as_ref()?;
        let before = errors.len();
        let acme_at = report.at.find_key("acme", span).unwrap_or((span.start, 1));
        if raw_tls.cert.is_some() || raw_tls.key.is_some() || raw_tls.cert_dir.is_some() {
            let message = "`acme` obtains the route's certificate: remove `cert`, `key` and `cert_dir`, or `acme`";
            errors.push(report.error(acme_at, message.into()));
        }
        let names = acme_names(raw_route, report, span, acme_at, errors);
        check_directory(&raw.directory, report, span, errors);
        for contact in &raw.contact {
            if contact.strip_prefix("mailto:").is_none_or(str::is_empty) {
                let message = format!("`contact` {contact:?} must be a mailto: address (mailto:ops@example.com)");
                errors.push(report.error(report.at.find_value("contact", contact, span), message));
            }
        }
        let renew_before = raw.renew_before.unwrap_or(DEFAULT_RENEW_BEFORE);
        if renew_before.is_zero() {
            let position = report.at.find_key("renew_before", span).unwrap_or(acme_at);
            errors.push(report.error(position, "`renew_before` must be more than 0".into()));
        }
        let storage = resolve(base_dir, &raw.storage);
        if let Err(message) = check_storage(&storage) {
            errors
                .push(report.error(report.at.find_value("storage", &raw.storage.display().to_string(), span), message));
        }
        let directory_ca = raw.directory_ca.as_ref().map(|file| resolve(base_dir, file));
        if let (Some(file), Some(written)) = (&directory_ca, &raw.directory_ca) {
            if let Err(message) = check_directory_ca(file) {
                let position = report.at.find_value("directory_ca", &written.display().to_string(), span);
                errors.push(report.error(position, message));
            }
        }
        let eab = raw.eab.as_ref().map(|raw_eab| Eab {
            key_id: raw_eab.key_id.clone(),
            hmac_key_file: resolve(base_dir, &raw_eab.hmac_key_file),
        });
        if let (Some(eab), Some(raw_eab)) = (&eab, &raw.eab) {
            let file_at = report.at.find_value("hmac_key_file", &raw_eab.hmac_key_file.display().to_string(), span);
            if eab.key_id.trim().is_empty() {
                errors.push(
                    report.error(
                        report.at.find_key("key_id", span).unwrap_or(file_at),
                        "`key_id` must not be empty".into(),
                    ),
                );
            }
            match eab.hmac_key() {
                Ok(_) => super::ticket_key_file::warn_if_others_can_read(&eab.hmac_key_file, "the EAB HMAC key file"),
                Err(message) => errors.push(report.error(file_at, message)),
            }
        }
        if errors.len() > before {
            return None;
        }
        // Another key type is another certificate (the default is left out: ids stay as they were).
        let mut id_parts = vec![raw.directory.as_str()];
        id_parts.extend(names.iter().map(String::as_str));
        if raw.key_type != AcmeKeyType::default() {
            id_parts.push(raw.key_type.as_str());
        }
        let certificate = AcmeCertificate {
            id: format!("{}-{}", names[0], short_hash(&id_parts)),
            names,
            directory: raw.directory.clone(),
            directory_ca,
            contact: raw.contact.clone(),
            storage,
            renew_before,
            key_type: raw.key_type,
            eab,
            routes: vec![raw_route.name.clone()],
            loaded_leaf: None,
        };
        self.share(certificate, report, acme_at, errors)
    }

    /// Records the leaf a route of certificate `id` was built with from its own stored files.
    pub(super) fn loaded(&mut self, id: &str, leaf: &[u8]) {
        if let Some(certificate) = self.0.iter_mut().find(|certificate| certificate.id == id) {
            certificate.loaded_leaf = Some(leaf.to_vec());
        }
    }

    /// Adds `certificate`, or its route to the same certificate asked for before.
    fn share(
        &mut self,
        certificate: AcmeCertificate,
        report: &Reporter,
        acme_at: super::yaml_position::Position,
        errors: &mut Vec<ConfigError>,
    ) -> Option<AcmeCertificate> {
        let Some(earlier) = self.0.iter_mut().find(|earlier| earlier.id == certificate.id) else {
            self.0.push(certificate.clone());
            return Some(certificate);
        };
        if !earlier.same_order(&certificate) {
            let message = format!(
                "route {:?} asks for the certificate of route {:?} (the same names from the same directory) \
                 with other `acme` settings: make them the same, so both share one certificate",
                certificate.routes[0], earlier.routes[0]
            );
            errors.push(report.error(acme_at, message));
            return None;
        }
        earlier.routes.extend(certificate.routes);
        Some(earlier.clone())
    }
}

/// `path` against the config file's directory, made absolute: the ACME task writes there
/// whatever the working directory.
fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    let joined = base_dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// The route's `sni` names for the certificate: at least one, exact names only.
fn acme_names(
    raw_route: &RawRoute,
    report: &Reporter,
    span: Span,
    acme_at: super::yaml_position::Position,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    if raw_route.sni.is_empty() {
        let message = "an `acme` route needs `sni` names: the certificate is issued for exactly those";
        errors.push(report.error(acme_at, message.into()));
    }
    let mut names = Vec::new();
    for name in &raw_route.sni {
        if name.contains('*') {
            let message = format!(
                "{name:?}: ACME wildcard certificates need the DNS-01 challenge, which snigate does not answer \
                 (TLS-ALPN-01 validates exact names): list the names, or serve a wildcard from `cert` or `cert_dir`"
            );
            errors.push(report.error(report.at.find_value("sni", name, span), message));
            continue;
        }
        names.push(name.trim_end_matches('.').to_ascii_lowercase());
    }
    names.sort();
    names.dedup();
    names
}

fn check_directory(directory: &str, report: &Reporter, span: Span, errors: &mut Vec<ConfigError>) {
    let problem = match directory.parse::<Uri>() {
        Err(error) => Some(format!("`directory` {directory:?} is not a URL: {error}")),
        Ok(uri) if uri.scheme_str() != Some("https") => {
            Some(format!("`directory` {directory:?} must be an https:// URL (RFC 8555 requires HTTPS)"))
        }
        Ok(uri) if uri.host().is_none_or(str::is_empty) => Some(format!("`directory` {directory:?} has no host")),
        Ok(_) => None,
    };
    if let Some(message) = problem {
        errors.push(report.error(report.at.find_value("directory", directory, span), message));
    }
}

/// An existing storage is a directory nobody else may read; a missing one (created at start with
/// mode 0700) needs its parent.
fn check_storage(storage: &Path) -> Result<(), String> {
    let shown = storage.display();
    match std::fs::metadata(storage) {
        Ok(meta) if !meta.is_dir() => Err(format!("`storage` {shown} is not a directory")),
        Ok(meta) if meta.permissions().mode() & STORAGE_FORBIDDEN_MODE != 0 => Err(format!(
            "`storage` {shown} is mode {:04o}; it holds private keys: chmod 700 {shown}",
            meta.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => match storage.parent() {
            Some(parent) if parent.as_os_str().is_empty() || parent.is_dir() => Ok(()),
            _ => Err(format!("`storage` {shown} does not exist, and neither does the directory to create it in")),
        },
        Err(error) => Err(format!("`storage` {shown}: {error}")),
    }
}

fn check_directory_ca(file: &Path) -> Result<(), String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|error| format!("`directory_ca` {shown}: {error}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok).count();
    if certificates == 0 {
        return Err(format!("`directory_ca` {shown} holds no PEM certificate"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_first_name_and_hash_the_directory_and_names() {
        let id = |directory: &str, names: &[&str]| {
            let mut parts = vec![directory];
            parts.extend(names);
            short_hash(&parts)
        };
        assert_eq!(id("https://ca/dir", &["a.test"]).len(), 8);
        assert_ne!(id("https://ca/dir", &["a.test"]), id("https://other/dir", &["a.test"]));
        assert_ne!(id("https://ca/dir", &["a.test", "b.test"]), id("https://ca/dir", &["a.testb.test"]));
    }

    #[test]
    fn an_eab_key_is_base64url_of_at_least_16_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let eab = |text: &str| {
            let file = dir.path().join("eab.key");
            std::fs::write(&file, text).unwrap();
            Eab { key_id: "kid-1".into(), hmac_key_file: file }.hmac_key()
        };
        assert_eq!(eab("AAECAwQFBgcICQoLDA0ODw\n").unwrap(), (0u8..16).collect::<Vec<_>>(), "unpadded, a newline");
        assert_eq!(eab("AAECAwQFBgcICQoLDA0ODw==").unwrap().len(), 16, "padded");
        assert!(eab("not base64!").unwrap_err().contains("not base64url"));
        assert!(eab("AAECAw").unwrap_err().contains("at least 16"));
        let missing = Eab { key_id: "kid-1".into(), hmac_key_file: dir.path().join("none") }.hmac_key();
        assert!(missing.unwrap_err().contains("none"));
    }

    #[test]
    fn storage_must_be_private_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("acme");
        assert_eq!(check_storage(&storage), Ok(()), "missing, in an existing directory");
        assert!(check_storage(&dir.path().join("no/such/acme")).unwrap_err().contains("does not exist"));
        std::fs::create_dir(&storage).unwrap();
        std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = check_storage(&storage).unwrap_err();
        assert!(error.contains("mode 0755") && error.contains("chmod 700"), "{error}");
        std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_storage(&storage), Ok(()));
    }
}
