//! A throwaway PKI generated with rcgen at test time, written as PEM files into a temp dir.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

fn next_serial() -> Vec<u8> {
    let n = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
    // A leading 0x10 keeps the INTEGER positive and free of leading zero bytes.
    vec![0x10, (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// A temp dir holding generated files; removed on drop.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Pki { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new self-signed CA whose files are `<stem>.pem` / `<stem>.key`.
    pub fn ca(&self, stem: &str, common_name: &str) -> Ca {
        Ca::new(self.path(), stem, common_name)
    }

    /// Writes arbitrary text into the dir (for broken-file tests).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// A certificate authority: its certificate (PEM file + DER) and an issuer to sign with.
pub struct Ca {
    pub cert_path: PathBuf,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub cn: Option<String>,
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub email: Vec<String>,
}

impl ClientSpec {
    pub fn cn(cn: &str) -> ClientSpec {
        ClientSpec { cn: Some(cn.to_string()), ..Default::default() }
    }
}

/// An end-entity certificate and its key.
pub struct Leaf {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_pkcs8: Vec<u8>,
    pub serial: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// The chain to present (leaf only: the CA is the trust anchor).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    /// (chain, key) as rustls wants them for client auth.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain(), self.key())
    }
}

impl Ca {
    pub fn new(dir: &Path, stem: &str, common_name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "snigate tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from_slice(&next_serial()));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2090, 1, 1);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).expect("self-signed CA");
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Ca { cert_path, cert_der: cert.der().clone(), issuer: Issuer::new(params, key), dir: dir.to_path_buf() }
    }

    fn issue(&self, stem: &str, params: CertificateParams) -> Leaf {
        self.issue_with(stem, params, KeyPair::generate().expect("leaf key"))
    }

    fn issue_with(&self, stem: &str, mut params: CertificateParams, key: KeyPair) -> Leaf {
        let serial = next_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2090, 1, 1);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        std::fs::write(&cert_path, &cert_pem).unwrap();
        std::fs::write(&key_path, &key_pem).unwrap();
        Leaf {
            cert_path,
            key_path,
            cert_der: cert.der().clone(),
            cert_pem,
            key_pem,
            key_pkcs8: key.serialize_der(),
            serial,
        }
    }

    /// A server certificate for `dns_names` (wildcards like `*.a.test` allowed; a name that parses
    /// as an IP address becomes an IP SAN).
    pub fn server_cert(&self, stem: &str, dns_names: &[&str]) -> Leaf {
        self.issue(stem, server_params(dns_names))
    }

    /// A server certificate as [`Ca::server_cert`], with a P-384 key instead of P-256.
    pub fn server_cert_p384(&self, stem: &str, dns_names: &[&str]) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
        self.issue_with(stem, server_params(dns_names), key)
    }

    /// A client certificate with the given subject CN and SANs.
    pub fn client_cert(&self, stem: &str, spec: &ClientSpec) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = &spec.cn {
            params.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name.push(DnType::OrganizationName, "snigate test clients");
        let mut sans = Vec::new();
        for dns in &spec.dns {
            sans.push(SanType::DnsName(dns.as_str().try_into().expect("dns SAN")));
        }
        for uri in &spec.uri {
            sans.push(SanType::URI(uri.as_str().try_into().expect("uri SAN")));
        }
        for email in &spec.email {
            sans.push(SanType::Rfc822Name(email.as_str().try_into().expect("email SAN")));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, params)
    }

    /// A CRL signed by this CA revoking `revoked`, written as `<stem>.crl` (PEM).
    pub fn crl(&self, stem: &str, revoked: &[&Leaf]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2089, 1, 1),
            crl_number: SerialNumber::from_slice(&next_serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&leaf.serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign CRL");
        let path = self.dir.join(format!("{stem}.crl"));
        std::fs::write(&path, crl.pem().expect("CRL PEM")).unwrap();
        path
    }
}

/// What every test server certificate says: `dns_names` as SANs, the first as CN, server auth.
fn server_params(dns_names: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, dns_names.first().copied().unwrap_or("server"));
    params.subject_alt_names = dns_names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().expect("dns SAN")),
        })
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}
