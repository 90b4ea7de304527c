//! The CRLs fetched from `tls.crl_urls`, as one load sees them, and the client-certificate
//! verifier of a route still missing one of them: it refuses every client certificate (fail
//! closed) until the CRL arrives. Fetching is `ops/crl_fetch.rs`'s; this layer gets the parsed
//! CRLs keyed by the URL as the config writes it, and never opens a connection.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

/// The CRLs of one URL: a PEM file may hold several, a DER one holds one.
pub type Crls = Arc<Vec<CertificateRevocationListDer<'static>>>;

/// The last good CRLs of every `crl_urls` URL fetched so far, by URL.
#[derive(Debug, Clone, Default)]
pub struct FetchedCrls(HashMap<String, Crls>);

impl FetchedCrls {
    pub fn insert(&mut self, url: String, crls: Crls) {
        self.0.insert(url, crls);
    }

    /// The CRLs of `url`, if one was fetched.
    pub fn get(&self, url: &str) -> Option<&Crls> {
        self.0.get(url)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The verifier of a route with a `crl_urls` CRL not fetched yet. It verifies as the route's
/// verifier does (so a certificate it refuses keeps its reason), then refuses what passes with
/// `UnknownRevocationStatus` (`revocation_unknown`): without the CRL nobody can tell whether the
/// certificate is revoked. A client without a certificate on an `optional` route still passes.
#[derive(Debug)]
pub struct CrlPending {
    inner: Arc<dyn ClientCertVerifier>,
}

impl CrlPending {
    pub fn wrap(inner: Arc<dyn ClientCertVerifier>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(CrlPending { inner })
    }
}

impl ClientCertVerifier for CrlPending {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        Err(Error::InvalidCertificate(CertificateError::UnknownRevocationStatus))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
