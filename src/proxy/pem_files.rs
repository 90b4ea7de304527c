//! The certificate, key, CA and CRL files of one config load, each read and parsed once.
//!
//! Thousands of routes often share one certificate (a wildcard, a fleet CA): without this every
//! route re-read, re-parsed and re-checked the same files, and loading grew with routes × file
//! work. The cache lives for one load only, so a reload always sees the files as they are now.
//! Results are cached whether they succeed or fail, so a broken shared file is also read once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What `check` and `run` need to know about a route's leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafFacts {
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The validity dates as the certificate states them, for messages.
    pub not_before_text: String,
    pub not_after_text: String,
    /// DNS names of the subjectAltName extension, lowercase.
    pub dns_names: Vec<String>,
    pub sig_alg: String,
    pub key_alg: String,
}

/// A certificate chain and key that belong together, ready to serve, with its leaf's facts.
#[derive(Debug)]
pub struct ServedKey {
    pub certified: Arc<CertifiedKey>,
    pub leaf: LeafFacts,
}

/// Parsed files by resolved path, for one load.
#[derive(Default)]
pub struct PemFiles {
    certs: HashMap<PathBuf, Result<Arc<Vec<CertificateDer<'static>>>, String>>,
    keys: HashMap<(PathBuf, PathBuf), Result<Arc<ServedKey>, Vec<KeyProblem>>>,
    crls: HashMap<PathBuf, Result<Arc<Vec<CertificateRevocationListDer<'static>>>, String>>,
    /// Files read from disk so far: each distinct file once, however many routes name it.
    reads: usize,
}

/// Why a certificate/key pair cannot be served, and which of the two is to blame.
#[derive(Debug, Clone)]
pub enum KeyProblem {
    Cert(String),
    Key(String),
}

impl PemFiles {
    /// How many files were read from disk during this load.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// The certificates of a PEM file (one or more).
    pub fn certs(&mut self, path: &Path) -> Result<Arc<Vec<CertificateDer<'static>>>, String> {
        if let Some(cached) = self.certs.get(path) {
            return cached.clone();
        }
        self.reads += 1;
        let parsed = read(path).and_then(|bytes| parse_certs(&bytes)).map(Arc::new);
        self.certs.insert(path.to_path_buf(), parsed.clone());
        parsed
    }

    /// The chain of `cert` and the key of `key`, checked to belong together.
    pub fn served_key(
        &mut self,
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<Arc<ServedKey>, Vec<KeyProblem>> {
        let pair = (cert.to_path_buf(), key.to_path_buf());
        if let Some(cached) = self.keys.get(&pair) {
            return cached.clone();
        }
        let built = match (self.certs(cert), self.read_key(key)) {
            (Ok(chain), Ok(private)) => leaf_facts(&chain[0]).map_err(|e| vec![KeyProblem::Cert(e)]).and_then(|leaf| {
                CertifiedKey::from_der(chain.to_vec(), private, provider)
                    .map(|certified| Arc::new(ServedKey { certified: Arc::new(certified), leaf }))
                    .map_err(|error| {
                        vec![KeyProblem::Key(format!("does not match certificate {}: {error}", cert.display()))]
                    })
            }),
            (chain, private) => {
                Err(chain.err().map(KeyProblem::Cert).into_iter().chain(private.err().map(KeyProblem::Key)).collect())
            }
        };
        self.keys.insert(pair, built.clone());
        built
    }

    fn read_key(&mut self, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
        self.reads += 1;
        let bytes = read(path)?;
        if is_encrypted_key(&bytes) {
            return Err("encrypted keys are not supported: store the key unencrypted \
                        (e.g. `openssl pkey -in KEY -out KEY.plain`) with tight file permissions"
                .into());
        }
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
            if looks_like_certificate(&bytes) {
                "holds a certificate, not a private key".to_string()
            } else {
                format!("no usable private key: {error}")
            }
        })
    }

    /// The CRLs of a file: PEM (one or more `X509 CRL` blocks) or a single DER CRL.
    pub fn crls(&mut self, path: &Path) -> Result<Arc<Vec<CertificateRevocationListDer<'static>>>, String> {
        if let Some(cached) = self.crls.get(path) {
            return cached.clone();
        }
        self.reads += 1;
        let parsed = read(path).and_then(parse_crls).map(Arc::new);
        self.crls.insert(path.to_path_buf(), parsed.clone());
        parsed
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read: {error}"))
}

fn parse_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    match certs {
        Ok(certs) if certs.is_empty() && contains(bytes, b"PRIVATE KEY-----") => {
            Err("holds a private key, not a PEM certificate".into())
        }
        Ok(certs) if certs.is_empty() => Err("holds no PEM certificate".into()),
        Ok(certs) => Ok(certs),
        Err(error) => Err(format!("bad PEM certificate: {error}")),
    }
}

pub(crate) fn parse_crls(bytes: Vec<u8>) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = if bytes.trim_ascii_start().starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("bad PEM CRL: {error}"))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err("holds no CRL".into());
    }
    for crl in &crls {
        webpki::OwnedCertRevocationList::from_der(crl).map_err(|error| format!("CRL does not parse: {error:?}"))?;
    }
    Ok(crls)
}

/// PKCS#8 `ENCRYPTED PRIVATE KEY` blocks and OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` headers.
fn is_encrypted_key(bytes: &[u8]) -> bool {
    contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(bytes, b"Proc-Type: 4,ENCRYPTED")
}

fn looks_like_certificate(bytes: &[u8]) -> bool {
    contains(bytes, b"-----BEGIN CERTIFICATE-----") && !contains(bytes, b"PRIVATE KEY-----")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A certificate's subjectAltName DNS names, lowercase (none when it has no SAN extension).
pub fn certificate_dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn leaf_facts(der: &CertificateDer<'_>) -> Result<LeafFacts, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|error| format!("certificate does not parse: {error}"))?;
    let dns_names = certificate_dns_names(&cert);
    let (sig_alg, key_alg) = describe_certificate(Some(&cert));
    Ok(LeafFacts {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        not_before_text: cert.validity().not_before.to_string(),
        not_after_text: cert.validity().not_after.to_string(),
        dns_names,
        sig_alg,
        key_alg,
    })
}

/// OpenSSL-style names for the certificate's signature and key algorithms, as HAProxy sends them.
fn describe_certificate(cert: Option<&X509Certificate<'_>>) -> (String, String) {
    let Some(cert) = cert else {
        return ("unknown".into(), "unknown".into());
    };
    let sig_alg = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.11" => "RSA-SHA256",
        "1.2.840.113549.1.1.12" => "RSA-SHA384",
        "1.2.840.113549.1.1.13" => "RSA-SHA512",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.112" => "ED25519",
        other => other,
    }
    .to_string();
    let key_alg = match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA{}", rsa.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => format!("EC{}", ec.key_size()),
        _ => match cert.public_key().algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "ED25519".to_string(),
            other => other.to_string(),
        },
    };
    (sig_alg, key_alg)
}

/// Whether a certificate with these subjectAltName DNS names serves `pattern` (a route's `sni`
/// entry in canonical form: `name` or `*.suffix`), following RFC 6125 §6.4.3: a `*` stands for
/// exactly one whole leftmost label. A wildcard route needs the same wildcard in the certificate.
pub fn covers(dns_names: &[String], pattern: &str) -> bool {
    dns_names.iter().any(|san| {
        let san = san.strip_suffix('.').unwrap_or(san);
        if san == pattern {
            return true;
        }
        match (san.strip_prefix("*."), pattern.split_once('.')) {
            (Some(san_suffix), Some((label, rest))) => {
                !label.is_empty() && label != "*" && !san_suffix.is_empty() && rest == san_suffix
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_san_covers_one_label_only() {
        let sans = names(&["*.a.test", "b.test"]);
        assert!(covers(&sans, "x.a.test"));
        assert!(covers(&sans, "*.a.test"));
        assert!(covers(&sans, "b.test"));
        assert!(!covers(&sans, "a.test"), "a wildcard does not cover its bare suffix");
        assert!(!covers(&sans, "y.x.a.test"), "a wildcard stands for one label");
        assert!(!covers(&sans, "*.b.test"));
        assert!(!covers(&names(&["*.test"]), "*.a.test"), "a wildcard route needs its own wildcard");
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        assert!(is_encrypted_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMII\n"));
        assert!(is_encrypted_key(b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"));
        assert!(!is_encrypted_key(b"-----BEGIN PRIVATE KEY-----\nMII\n"));
    }
}
