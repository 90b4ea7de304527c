//! Self-tests of the test support code without snigate in the loop: the generated PKI (CRL,
//! client-certificate SANs) works with plain rustls, the TLS test backend captures and replays
//! hellos, and the hand-driven client can finish handshakes from re-framed hellos. When a proxy
//! test fails, these passing shows the fault is not in the harness.

use std::sync::Arc;

use crate::support::hello::{
    drive_handshake, read_hello_records, read_plaintext, reframe_into_two_records, rustls_hello, send_plaintext,
    RecordingStream,
};
use crate::support::tls::{provider, server_config, simple_client, tls_connect};
use crate::support::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateRevocationListDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backend_captures_hello_and_echoes_directly() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Direct CA");
    let leaf = ca.server_cert("leaf", &["direct.test"]);
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::None, server_config(&leaf, &[]))).await;

    let tcp = TcpStream::connect(backend.addr).await.unwrap();
    let (recording, written) = RecordingStream::new(tcp);
    let connector = tokio_rustls::TlsConnector::from(simple_client(&ca.cert_der, None));
    let mut tls =
        within("handshake", connector.connect(ServerName::try_from("direct.test").unwrap(), recording)).await.unwrap();
    tls.write_all(b"echo me").await.unwrap();
    assert_eq!(read_n(&mut tls, 7).await, b"echo me");
    tls.shutdown().await.unwrap();
    let accepted = backend.accepted().await;
    assert!(accepted.header.is_none());
    let sent = written.lock().unwrap().clone();
    let first = read_hello_records(&mut &sent[..], 1 << 16).await.unwrap();
    assert_eq!(accepted.hello(), &first[..]);
    let finished = backend.finished().await;
    assert_eq!(finished.error, None);
    assert_eq!(finished.received, b"echo me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_client_finishes_handshake_from_two_record_hello() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Direct CA");
    let leaf = ca.server_cert("leaf", &["direct.test"]);
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::None, server_config(&leaf, &[]))).await;
    let (mut conn, hello) = rustls_hello(simple_client(&ca.cert_der, None), "direct.test");
    let two = reframe_into_two_records(&hello, 40);
    let mut tcp = TcpStream::connect(backend.addr).await.unwrap();
    tcp.write_all(&two).await.unwrap();
    within("handshake", drive_handshake(&mut tcp, &mut conn)).await.unwrap();
    send_plaintext(&mut tcp, &mut conn, b"hi").await.unwrap();
    assert_eq!(within("echo", read_plaintext(&mut tcp, &mut conn, 2)).await.unwrap(), b"hi");
    assert_eq!(backend.accepted().await.hello(), &two[..]);
}

/// A plain rustls server requiring client certs from `ca`, with `crl`; returns its address.
async fn crl_server(ca: &Ca, leaf: &Leaf, crl: &std::path::Path) -> std::net::SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).unwrap();
    let crl = CertificateRevocationListDer::from_pem_file(crl).expect("CRL PEM");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider(false))
        .with_crls(vec![crl])
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider(false))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf.chain(), leaf.key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4];
                    if tls.read_exact(&mut buf).await.is_ok() {
                        let _ = tls.write_all(&buf).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_crl_revokes_with_plain_rustls() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "CRL CA");
    let leaf = ca.server_cert("server", &["crl.test"]);
    let revoked = ca.client_cert("revoked", &ClientSpec::cn("revoked"));
    let good = ca.client_cert("good", &ClientSpec::cn("good"));
    let crl = ca.crl("ca", &[&revoked]);
    let addr = crl_server(&ca, &leaf, &crl).await;

    let (mut tls, _) = tls_connect(addr, simple_client(&ca.cert_der, Some(&good)), "crl.test").await.unwrap();
    tls.write_all(b"good").await.unwrap();
    assert_eq!(read_n(&mut tls, 4).await, b"good");

    let how = crate::support::tls::expect_refused(addr, simple_client(&ca.cert_der, Some(&revoked)), "crl.test").await;
    println!("plain rustls refused the revoked cert: {how}");
}

#[test]
fn generated_client_cert_has_the_requested_names() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Names CA");
    let spec = ClientSpec {
        cn: Some("cn-user".into()),
        dns: vec!["device.example.net".into()],
        uri: vec!["spiffe://example.net/device/7".into()],
        email: vec!["device7@example.net".into()],
    };
    let leaf = ca.client_cert("names", &spec);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    assert_eq!(cn, "cn-user");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san.value.general_names.iter().map(|n| format!("{n:?}")).collect();
    let joined = names.join(" ");
    for needle in ["device.example.net", "spiffe://example.net/device/7", "device7@example.net"] {
        assert!(joined.contains(needle), "{needle} not in {joined}");
    }
    assert_eq!(cert.raw_serial(), &leaf.serial[..]);
}
