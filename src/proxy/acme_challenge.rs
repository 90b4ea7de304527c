//! TLS-ALPN-01 (RFC 8737): the challenge certificates of the names being validated, and which
//! connections get one.
//!
//! A ClientHello whose ALPN list is exactly `acme-tls/1`, for a name with a pending challenge,
//! is the ACME server validating that name: it gets a handshake with [`TlsAlpnChallenges::config`]
//! (ALPN `acme-tls/1`, the name's challenge certificate), whatever the route's mode; every other
//! connection is untouched. The certificate (RFC 8737 §3) is self-signed, its only SAN is the
//! identifier's dNSName, and it carries the critical `id-pe-acmeIdentifier` extension whose value
//! is the DER OCTET STRING of the SHA-256 digest of the key authorization.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, SanType};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::proxy::routes::canonicalize;
use crate::proxy::tls::provider;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("{0:?} is not a hostname TLS-ALPN-01 can validate (wildcards need DNS-01)")]
    Identifier(String),
    #[error("building the TLS-ALPN-01 certificate for {name}: {source}")]
    Certificate { name: String, source: rcgen::Error },
    #[error("loading the TLS-ALPN-01 key for {name}: {source}")]
    Key { name: String, source: rustls::Error },
}

/// The pending challenges (name → challenge certificate) and the one server config that answers
/// them. Cheap to clone; clones share the map.
#[derive(Debug, Clone)]
pub struct TlsAlpnChallenges {
    pending: Arc<Pending>,
    config: Arc<ServerConfig>,
}

impl TlsAlpnChallenges {
    pub fn new() -> TlsAlpnChallenges {
        let pending = Arc::new(Pending::default());
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(pending.clone());
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        // A validation is one handshake: nothing to resume.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        TlsAlpnChallenges { pending, config: Arc::new(config) }
    }

    /// Answers the challenge of `identifier` (a route's exact `sni` name) with the certificate for
    /// `key_authorization` (RFC 8555 §8.1: `token.thumbprint`), replacing one already pending.
    /// The answer is what [`TlsAlpnChallenges::remove`] takes back.
    pub fn add(&self, identifier: &str, key_authorization: &str) -> Result<Answer, ChallengeError> {
        let name = canonicalize(identifier.as_bytes())
            .filter(|name| !name.starts_with('*'))
            .ok_or_else(|| ChallengeError::Identifier(identifier.to_string()))?;
        let certified = Arc::new(challenge_certificate(&name, key_authorization)?);
        self.pending.write().insert(name.clone(), certified.clone());
        Ok(Answer { name, certified })
    }

    /// Stops answering with `answer` (validated, failed or abandoned); a later answer for the
    /// same name, added since, stays.
    pub fn remove(&self, answer: &Answer) {
        let mut pending = self.pending.write();
        if pending.get(&answer.name).is_some_and(|current| Arc::ptr_eq(current, &answer.certified)) {
            pending.remove(&answer.name);
        }
    }

    /// The server config for a hello with this (canonical) server name and ALPN list when it is a
    /// TLS-ALPN-01 validation of a pending name; `None` for every other connection.
    pub(crate) fn config_for(&self, server_name: Option<&str>, alpn: &[Vec<u8>]) -> Option<Arc<ServerConfig>> {
        let [only] = alpn else { return None };
        if only.as_slice() != ACME_TLS_ALPN {
            return None;
        }
        let pending = self.pending.read().contains_key(server_name?);
        pending.then(|| self.config.clone())
    }
}

/// One pending challenge certificate, as added.
#[derive(Debug)]
pub struct Answer {
    name: String,
    certified: Arc<CertifiedKey>,
}

/// name → challenge certificate, and the resolver that picks one by the hello's server name.
#[derive(Debug, Default)]
struct Pending(RwLock<HashMap<String, Arc<CertifiedKey>>>);

impl Pending {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        // The map is valid after any panic (each operation is one insert or remove).
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for Pending {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = canonicalize(hello.server_name()?.as_bytes())?;
        self.read().get(&name).cloned()
    }
}

/// The RFC 8737 §3 certificate for `name` and `key_authorization`, with a fresh P-256 key.
fn challenge_certificate(name: &str, key_authorization: &str) -> Result<CertifiedKey, ChallengeError> {
    let certificate_error = |source| ChallengeError::Certificate { name: name.to_string(), source };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(certificate_error)?)];
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate().map_err(certificate_error)?;
    let certificate = params.self_signed(&key).map_err(certificate_error)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension. The pair was generated together above.
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| ChallengeError::Key { name: name.to_string(), source })?;
    Ok(CertifiedKey::new(vec![certificate.der().clone()], signing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConnection, SignatureScheme};
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

    const NAME: &str = "a.test";
    const KEY_AUTHORIZATION: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";

    fn acme_alpn() -> Vec<Vec<u8>> {
        vec![ACME_TLS_ALPN.to_vec()]
    }

    fn pending_certificate(challenges: &TlsAlpnChallenges, name: &str) -> CertificateDer<'static> {
        challenges.pending.read()[name].cert[0].clone()
    }

    #[test]
    fn challenge_certificate_follows_rfc_8737_section_3() {
        let certified = challenge_certificate(NAME, KEY_AUTHORIZATION).unwrap();
        let (rest, cert) = X509Certificate::from_der(&certified.cert[0]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(cert.subject(), cert.issuer(), "self-signed");
        let acme = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("id-pe-acmeIdentifier");
        assert!(acme.critical);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, KEY_AUTHORIZATION.as_bytes());
        let mut octet_string = vec![0x04, 0x20];
        octet_string.extend_from_slice(digest.as_ref());
        assert_eq!(acme.value, octet_string.as_slice(), "DER OCTET STRING (SIZE (32)) of the SHA-256");
        let san = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .expect("subjectAltName");
        assert_eq!(san.general_names, vec![GeneralName::DNSName(NAME)]);
    }

    #[test]
    fn only_an_acme_tls_hello_for_a_pending_name_is_a_challenge() {
        let challenges = TlsAlpnChallenges::new();
        let answer = challenges.add("A.Test.", KEY_AUTHORIZATION).unwrap();
        assert!(challenges.config_for(Some(NAME), &acme_alpn()).is_some());
        assert!(challenges.config_for(Some("b.test"), &acme_alpn()).is_none(), "no pending challenge");
        assert!(challenges.config_for(None, &acme_alpn()).is_none(), "no SNI");
        assert!(challenges.config_for(Some(NAME), &[]).is_none(), "no ALPN");
        assert!(challenges.config_for(Some(NAME), &[b"h2".to_vec()]).is_none());
        let with_h2 = vec![ACME_TLS_ALPN.to_vec(), b"h2".to_vec()];
        assert!(challenges.config_for(Some(NAME), &with_h2).is_none(), "ALPN must be exactly acme-tls/1");

        challenges.remove(&answer);
        assert!(challenges.config_for(Some(NAME), &acme_alpn()).is_none(), "removed");
    }

    #[test]
    fn wildcards_and_invalid_names_are_refused() {
        let challenges = TlsAlpnChallenges::new();
        for name in ["*.a.test", "", "a..test", "127.0.0.1"] {
            assert!(
                matches!(challenges.add(name, KEY_AUTHORIZATION), Err(ChallengeError::Identifier(_))),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn adding_again_replaces_the_pending_certificate_and_removing_the_first_keeps_it() {
        let challenges = TlsAlpnChallenges::new();
        let first_answer = challenges.add(NAME, "first.thumbprint").unwrap();
        let first = pending_certificate(&challenges, NAME);
        challenges.add(NAME, KEY_AUTHORIZATION).unwrap();
        let second = pending_certificate(&challenges, NAME);
        assert_ne!(second, first);
        challenges.remove(&first_answer);
        assert_eq!(pending_certificate(&challenges, NAME), second, "the later answer stays");
    }

    #[test]
    fn acme_tls_client_handshake_sees_the_challenge_certificate() {
        let challenges = TlsAlpnChallenges::new();
        challenges.add(NAME, KEY_AUTHORIZATION).unwrap();
        challenges.add("other.test", "other.thumbprint").unwrap();
        let config = challenges.config_for(Some(NAME), &acme_alpn()).expect("challenge connection");

        let (client, result) = handshake(config, NAME);
        result.expect("handshake");
        assert_eq!(client.alpn_protocol(), Some(ACME_TLS_ALPN));
        let presented = client.peer_certificates().expect("server certificate");
        assert_eq!(presented, [pending_certificate(&challenges, NAME)]);
    }

    #[test]
    fn handshake_for_a_removed_name_fails() {
        let challenges = TlsAlpnChallenges::new();
        let answer = challenges.add(NAME, KEY_AUTHORIZATION).unwrap();
        let config = challenges.config_for(Some(NAME), &acme_alpn()).expect("challenge connection");
        challenges.remove(&answer);
        let (_, result) = handshake(config, NAME);
        assert!(result.is_err(), "a removed challenge must not be answered");
    }

    /// Runs a TLS handshake in memory: a client offering only `acme-tls/1` for `name`, accepting
    /// any certificate (as the validation authority does: it checks the extension, not a chain).
    fn handshake(config: Arc<ServerConfig>, name: &str) -> (ClientConnection, Result<(), rustls::Error>) {
        let mut client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        client_config.alpn_protocols = acme_alpn();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let mut client = ClientConnection::new(Arc::new(client_config), server_name).unwrap();
        let mut server = ServerConnection::new(config).unwrap();
        let result = (|| {
            for _ in 0..10 {
                if !client.is_handshaking() && !server.is_handshaking() {
                    return Ok(());
                }
                transfer(&mut client, &mut server)?;
                transfer(&mut server, &mut client)?;
            }
            Err(rustls::Error::General("handshake did not finish".into()))
        })();
        (client, result)
    }

    fn transfer(
        from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
        to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    ) -> Result<(), rustls::Error> {
        let mut buffer = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buffer).unwrap();
        }
        let mut bytes = buffer.as_slice();
        while !bytes.is_empty() {
            to.read_tls(&mut bytes).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    #[derive(Debug)]
    struct AcceptAny;

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_p256(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_p256(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ECDSA_NISTP256_SHA256]
        }
    }

    /// Checks the handshake signature with the certificate's P-256 key, parsed by x509-parser:
    /// rustls' own check goes through webpki, which refuses the critical acmeIdentifier extension.
    fn verify_p256(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        assert_eq!(dss.scheme, SignatureScheme::ECDSA_NISTP256_SHA256);
        let (_, parsed) = X509Certificate::from_der(cert).expect("challenge certificate");
        let public_key = parsed.public_key().subject_public_key.data.to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
            .verify(message, dss.signature())
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| rustls::Error::General("bad handshake signature".into()))
    }
}
