//! ACME (issue 19) against a real private ACME server, Debian's pebble (`support::pebble`).
//! Skipped, with the reason printed, where pebble is not installed.

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::support::pebble::Pebble;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_serves_its_directory_and_root_on_loopback() {
    let Some(pebble) = Pebble::start(closed_port().await.port()).await else { return };

    let directory = within("GET /dir", pebble.get_acme("/dir")).await.expect("directory");
    assert_eq!(directory.status, 200);
    for resource in ["newNonce", "newAccount", "newOrder"] {
        assert!(directory.body.contains(&format!("\"{resource}\"")), "{resource} missing: {}", directory.body);
    }
    let dir_path = pebble.directory.strip_prefix("https://").and_then(|rest| rest.split_once('/')).map(|(_, p)| p);
    assert_eq!(dir_path, Some("dir"), "directory URL {}", pebble.directory);

    let root = pebble.root_pem().await;
    assert!(CertificateDer::from_pem_slice(root.as_bytes()).is_ok(), "not a PEM certificate: {root}");
    let listener_ca = std::fs::read(&pebble.directory_ca).expect("directory_ca file");
    assert!(CertificateDer::from_pem_slice(&listener_ca).is_ok());

    let log = pebble.log();
    assert!(log.contains("Using custom DNS resolver"), "challtestsrv not used as resolver:\n{log}");
    assert!(log.contains("Disabling random VA sleeps"), "{log}");
}

/// The harness itself, end to end: pebble resolves the identifier through challtestsrv to
/// loopback and validates TLS-ALPN-01 on the port it was given. The challenge is answered here by
/// a minimal responder (not snigate's), so a failure of snigate's ACME tests is not the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_test_server_validates_tls_alpn_01_on_the_given_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Some(pebble) = Pebble::start(listener.local_addr().unwrap().port()).await else { return };
    let responder = alpn_responder::Responder::start(listener);

    let new_account = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let builder = Account::builder_with_root(&pebble.directory_ca).expect("directory_ca");
    let (account, _) = within("account", builder.create(&new_account, pebble.directory.clone(), None)).await.unwrap();
    let identifiers = [Identifier::Dns("harness.test".into())];
    let mut order = within("new order", account.new_order(&NewOrder::new(&identifiers))).await.unwrap();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = within("authorization", authorizations.next()).await {
        let mut authorization = authorization.unwrap();
        assert_eq!(authorization.status, AuthorizationStatus::Pending);
        let mut challenge = authorization.challenge(ChallengeType::TlsAlpn01).expect("tls-alpn-01 offered");
        responder.answer(&challenge.identifier().to_string(), challenge.key_authorization().digest().as_ref());
        within("challenge ready", challenge.set_ready()).await.unwrap();
    }
    let status = within("order ready", order.poll_ready(&RetryPolicy::default())).await;
    assert_eq!(status.unwrap(), OrderStatus::Ready, "pebble log:\n{}", pebble.log());
    assert!(responder.answered() >= 1, "pebble never connected to the challenge port");
}

/// A TLS-ALPN-01 responder for the harness test: RFC 8737 certificates by SNI.
mod alpn_responder {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use crate::support::tls::provider;

    #[derive(Debug, Default)]
    struct Certificates(Mutex<HashMap<String, Arc<CertifiedKey>>>);

    impl ResolvesServerCert for Certificates {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            self.0.lock().unwrap().get(hello.server_name()?).cloned()
        }
    }

    pub struct Responder {
        certificates: Arc<Certificates>,
        handshakes: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Responder {
        pub fn start(listener: tokio::net::TcpListener) -> Responder {
            let certificates = Arc::new(Certificates::default());
            let mut config = rustls::ServerConfig::builder_with_provider(provider(false))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
            config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let handshakes = Arc::new(AtomicUsize::new(0));
            let counted = handshakes.clone();
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, counted) = (acceptor.clone(), counted.clone());
                    tokio::spawn(async move {
                        if acceptor.accept(tcp).await.is_ok() {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            Responder { certificates, handshakes, task }
        }

        /// Answers `name` with the certificate for this key authorization digest.
        pub fn answer(&self, name: &str, digest: &[u8]) {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
            params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
            let key = KeyPair::generate().unwrap();
            let certificate = params.self_signed(&key).unwrap();
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let signing_key = provider(false).key_provider.load_private_key(key_der).unwrap();
            let certified = CertifiedKey::new(vec![certificate.der().clone()], signing_key);
            self.certificates.0.lock().unwrap().insert(name.to_string(), Arc::new(certified));
        }

        /// TLS-ALPN-01 handshakes completed so far.
        pub fn answered(&self) -> usize {
            self.handshakes.load(Ordering::Relaxed)
        }
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}
