//! `tls.acme.storage` on disk: the account's credentials and each certificate's chain and key.
//! Directories are created with mode 0700 and files with 0600; every file is written to a
//! temporary name, synced and renamed over the old one, so a crash leaves the old file or the new
//! one, never half of one. The key is renamed into place before its chain: a load that sees the
//! new chain also sees its key.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::AcmeCertificate;
use crate::proxy::tls::provider;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// A certificate found in storage.
#[derive(Debug)]
pub struct Stored {
    pub leaf: CertificateDer<'static>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why storage could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Content { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

/// The certificate stored for `certificate`, if there is one; an error when its chain does not
/// parse or its key is missing, unreadable or not the chain's (a load could not serve it).
pub fn read_certificate(certificate: &AcmeCertificate) -> Result<Option<Stored>, StorageError> {
    let path = certificate.cert_file();
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let content = |message: String| StorageError::Content { path: path.clone(), message };
    let chain = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    let chain = chain.map_err(|error| content(error.to_string()))?;
    let leaf = chain.first().cloned().ok_or_else(|| content("no PEM certificate".into()))?;
    let (_, parsed) = X509Certificate::from_der(&leaf).map_err(|error| content(error.to_string()))?;
    let validity = parsed.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    check_key(&certificate.key_file(), chain)?;
    Ok(Some(Stored { leaf, not_before, not_after }))
}

/// The key at `key_file` is the one `chain`'s leaf certifies.
fn check_key(key_file: &Path, chain: Vec<CertificateDer<'static>>) -> Result<(), StorageError> {
    let content = |message: String| StorageError::Content { path: key_file.to_path_buf(), message };
    let pem = std::fs::read(key_file).map_err(io_error(key_file))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| content(error.to_string()))?;
    let not_served = |error: rustls::Error| content(format!("cannot be served with cert.pem: {error}"));
    CertifiedKey::from_der(chain, key, &provider()).map_err(not_served)?.keys_match().map_err(not_served)
}

/// Stores a new chain and key for `certificate`.
pub fn write_certificate(certificate: &AcmeCertificate, chain_pem: &str, key_pem: &str) -> Result<(), StorageError> {
    let folder = certificate.folder();
    create_private_dir(&folder)?;
    let key = Pending::write(&certificate.key_file(), key_pem.as_bytes())?;
    let chain = Pending::write(&certificate.cert_file(), chain_pem.as_bytes())?;
    key.commit()?;
    chain.commit()?;
    sync_dir(&folder)
}

/// The failures in a row of a certificate's orders, kept across restarts so a proxy restarted
/// in a loop does not start its back-off over (and order again at once) each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    pub attempts: u32,
    /// Unix seconds: no attempt before.
    pub retry_at: i64,
}

fn backoff_file(certificate: &AcmeCertificate) -> PathBuf {
    certificate.folder().join("backoff.json")
}

/// The stored back-off of `certificate`; none when there is none or it does not parse.
pub fn read_backoff(certificate: &AcmeCertificate) -> Option<Backoff> {
    serde_json::from_slice(&std::fs::read(backoff_file(certificate)).ok()?).ok()
}

pub fn write_backoff(certificate: &AcmeCertificate, backoff: Backoff) -> Result<(), StorageError> {
    let file = backoff_file(certificate);
    let json = serde_json::to_vec(&backoff)
        .map_err(|error| StorageError::Content { path: file.clone(), message: error.to_string() })?;
    create_private_dir(&certificate.folder())?;
    Pending::write(&file, &json)?.commit()
}

/// Forgets the back-off once an order succeeded.
pub fn clear_backoff(certificate: &AcmeCertificate) {
    let _ = std::fs::remove_file(backoff_file(certificate));
}

/// Held while this process orders a certificate: an exclusive `flock` on `<folder>/.lock`, so
/// processes sharing a storage (`reuse_port` siblings, replicas on one volume) order it once.
/// Released when dropped (the descriptor closes), and by the kernel if the process dies.
#[derive(Debug)]
pub struct OrderLock {
    /// Held for its descriptor: closing it releases the lock.
    _file: Option<File>,
}

impl OrderLock {
    /// No lock: for a storage where `flock` fails (the order goes on, unguarded).
    pub fn none() -> OrderLock {
        OrderLock { _file: None }
    }
}

/// The order lock of `certificate`, or `None` while another process holds it.
pub fn try_lock_order(certificate: &AcmeCertificate) -> Result<Option<OrderLock>, StorageError> {
    let folder = certificate.folder();
    create_private_dir(&folder)?;
    let path = folder.join(".lock");
    let file = OpenOptions::new().write(true).create(true).truncate(false).mode(FILE_MODE).open(&path);
    let file = file.map_err(io_error(&path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(OrderLock { _file: Some(file) })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(error) => Err(io_error(&path)(error.into())),
    }
}

/// Where the TLS-ALPN-01 answers of a storage's orders are written, one file per name holding
/// its key authorization, so every process sharing the storage answers the CA's validation.
fn challenges_dir(storage: &Path) -> PathBuf {
    storage.join("challenges")
}

/// Publishes the key authorization of `name`'s pending challenge.
pub fn write_challenge(storage: &Path, name: &str, key_authorization: &str) -> Result<(), StorageError> {
    let dir = challenges_dir(storage);
    create_private_dir(&dir)?;
    Pending::write(&dir.join(name), key_authorization.as_bytes())?.commit()
}

pub fn remove_challenge(storage: &Path, name: &str) {
    let _ = std::fs::remove_file(challenges_dir(storage).join(name));
}

/// The published challenges of `storage`: name → key authorization (temporary files and names
/// that are no hostname are skipped).
pub fn read_challenges(storage: &Path) -> std::collections::HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(challenges_dir(storage)) else { return Default::default() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if name.ends_with(".tmp") || name.starts_with('.') {
                return None;
            }
            let key_authorization = std::fs::read_to_string(entry.path()).ok()?;
            Some((name, key_authorization))
        })
        .collect()
}

/// The account's credentials at `file`, if stored.
pub fn read_account(file: &Path) -> Result<Option<AccountCredentials>, StorageError> {
    let json = match std::fs::read(file) {
        Ok(json) => json,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(file)(error)),
    };
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|error| StorageError::Content { path: file.to_path_buf(), message: error.to_string() })
}

pub fn write_account(file: &Path, credentials: &AccountCredentials) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(credentials)
        .map_err(|error| StorageError::Content { path: file.to_path_buf(), message: error.to_string() })?;
    if let Some(dir) = file.parent() {
        create_private_dir(dir)?;
    }
    Pending::write(file, &json)?.commit()?;
    file.parent().map_or(Ok(()), sync_dir)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing one is left as it is (`check`
/// reports one others can read).
fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(io_error(dir))
}

/// A file written and synced under a temporary name, not yet in place.
struct Pending {
    temporary: PathBuf,
    target: PathBuf,
}

impl Pending {
    fn write(target: &Path, bytes: &[u8]) -> Result<Pending, StorageError> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        let temporary = target.with_file_name(name);
        // A leftover of a crash (the pid repeats, e.g. 1 in a container) goes first; `create_new`
        // then never follows a link planted there, nor keeps another file's mode.
        let _ = std::fs::remove_file(&temporary);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error(&temporary))?;
        Ok(Pending { temporary, target: target.to_path_buf() })
    }

    fn commit(self) -> Result<(), StorageError> {
        std::fs::rename(&self.temporary, &self.target).map_err(io_error(&self.target))
    }
}

impl Drop for Pending {
    /// A file never committed is removed (after a commit the name is gone and this does nothing).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    fn certificate(storage: &Path) -> AcmeCertificate {
        AcmeCertificate {
            id: "a.test-00000000".into(),
            names: vec!["a.test".into()],
            directory: "https://ca.test/dir".into(),
            directory_ca: None,
            contact: Vec::new(),
            storage: storage.to_path_buf(),
            renew_before: Duration::from_secs(86_400),
            key_type: crate::config::AcmeKeyType::P256,
            eab: None,
            routes: vec!["a".into()],
            loaded_leaf: None,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_stored_certificate_is_private_complete_and_read_back_with_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = certificate(&dir.path().join("acme"));
        assert!(read_certificate(&certificate).unwrap().is_none(), "nothing stored yet");

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let issued = params.self_signed(&key).unwrap();
        write_certificate(&certificate, &issued.pem(), &key.serialize_pem()).unwrap();

        let stored = read_certificate(&certificate).unwrap().expect("stored");
        assert_eq!(stored.leaf.as_ref(), issued.der().as_ref());
        assert_eq!((stored.not_before, stored.not_after), (1_893_456_000, 1_896_048_000));
        assert_eq!(mode(&certificate.folder()), 0o700);
        assert_eq!(mode(&certificate.key_file()), 0o600);
        assert_eq!(mode(&certificate.cert_file()), 0o600);
        assert_eq!(std::fs::read_to_string(certificate.key_file()).unwrap(), key.serialize_pem());
        let leftovers: Vec<_> = std::fs::read_dir(certificate.folder())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn one_process_at_a_time_holds_a_certificates_order_lock() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = certificate(dir.path());
        let held = try_lock_order(&certificate).unwrap().expect("free");
        // A second open file description, as another process would have.
        assert!(try_lock_order(&certificate).unwrap().is_none(), "held");
        drop(held);
        assert!(try_lock_order(&certificate).unwrap().is_some(), "released");
    }

    #[test]
    fn published_challenges_are_read_back_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_challenges(dir.path()).is_empty());
        write_challenge(dir.path(), "a.test", "token.thumbprint").unwrap();
        assert_eq!(read_challenges(dir.path()).get("a.test").map(String::as_str), Some("token.thumbprint"));
        assert_eq!(mode(&dir.path().join("challenges/a.test")), 0o600);
        remove_challenge(dir.path(), "a.test");
        assert!(read_challenges(dir.path()).is_empty());
    }

    #[test]
    fn a_back_off_is_kept_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = certificate(dir.path());
        assert_eq!(read_backoff(&certificate), None);
        let backoff = Backoff { attempts: 3, retry_at: 1_900_000_000 };
        write_backoff(&certificate, backoff).unwrap();
        assert_eq!(read_backoff(&certificate), Some(backoff));
        clear_backoff(&certificate);
        assert_eq!(read_backoff(&certificate), None);
    }

    #[test]
    fn a_stored_certificate_without_its_key_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = certificate(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let issued = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        write_certificate(&certificate, &issued.pem(), &other_key.serialize_pem()).unwrap();
        let error = read_certificate(&certificate).unwrap_err().to_string();
        assert!(error.contains("key.pem") && error.contains("cannot be served with cert.pem"), "{error}");
        std::fs::remove_file(certificate.key_file()).unwrap();
        let error = read_certificate(&certificate).unwrap_err().to_string();
        assert!(error.contains("key.pem"), "{error}");
    }

    #[test]
    fn a_broken_stored_certificate_is_an_error_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = certificate(dir.path());
        std::fs::create_dir_all(certificate.folder()).unwrap();
        std::fs::write(certificate.cert_file(), "not a certificate").unwrap();
        let error = read_certificate(&certificate).unwrap_err().to_string();
        assert!(error.contains("cert.pem") && error.contains("no PEM certificate"), "{error}");
    }
}
