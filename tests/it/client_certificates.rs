//! Client certificates that must not pass: an unknown issuer on an `optional` route (refused, not
//! treated as anonymous), an expired certificate, and identities that cannot be passed to the
//! backend safely (NUL or control characters, more than 255 bytes) — those are refused, never
//! forwarded altered.

use std::time::Duration;

use crate::support::tls::{expect_refused, simple_client, tls_connect};
use crate::support::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;

/// A CA made here (not with tests/it/support/pki.rs) because these tests need validity dates and
/// subject names that the shared helpers never produce.
struct OddCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OddCa {
    fn new() -> OddCa {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "odd client CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.path().join("odd-ca.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        OddCa { issuer: Issuer::new(params, key), cert_path, _dir: dir }
    }

    /// A client certificate with this subject CN, valid between the given years.
    fn client(
        &self,
        common_name: &str,
        from_year: i32,
        to_year: i32,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.not_before = date_time_ymd(from_year, 1, 1);
        params.not_after = date_time_ymd(to_year, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap())
    }
}

struct Setup {
    _pki: Pki,
    server_ca: Ca,
    odd: OddCa,
    backend: TestBackend,
    proxy: RunningProxy,
}

async fn setup(client_auth: &str) -> Setup {
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca", "Server CA");
    let server = server_ca.server_cert("a", &["a.test"]);
    let odd = OddCa::new();
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let route = RouteYaml::new("a", "terminate")
        .sni(&["a.test"])
        .cert(&server)
        .tls(format!("client_auth: {client_auth}"))
        .tls(format!("client_ca: {}", q(odd.cert_path.to_str().unwrap())))
        .server(backend.addr);
    let proxy = start_proxy(&config_v4("reject", &[route])).await;
    Setup { _pki: pki, server_ca, odd, backend, proxy }
}

fn client_with(
    setup: &Setup,
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(ClientOpts {
        roots: vec![setup.server_ca.cert_der.clone()],
        identity: Some(identity),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_with_an_untrusted_certificate_is_refused_not_anonymous() {
    let s = setup("optional").await;
    let stranger_ca = s._pki.ca("stranger", "Some other CA");
    let stranger = stranger_ca.client_cert("stranger", &ClientSpec::cn("stranger"));
    let how = expect_refused(s.proxy.addr(0), simple_client(&s.server_ca.cert_der, Some(&stranger)), "a.test").await;
    assert!(!how.is_empty());
    s.backend.assert_untouched(Duration::from_millis(100)).await;
    // Sanity: the same route serves a client without a certificate, and one with a good one.
    assert!(tls_connect(s.proxy.addr(0), simple_client(&s.server_ca.cert_der, None), "a.test").await.is_ok());
    let good = client_with(&s, s.odd.client("device-1", 2020, 2090));
    let (mut tls, _) = tls_connect(s.proxy.addr(0), good, "a.test").await.expect("a valid certificate is served");
    tls.write_all(b"hi").await.unwrap();
    assert_eq!(read_n(&mut tls, 2).await, b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_refused() {
    let s = setup("required").await;
    let expired = client_with(&s, s.odd.client("old-device", 2015, 2020));
    let how = expect_refused(s.proxy.addr(0), expired, "a.test").await;
    assert!(!how.is_empty());
    s.backend.assert_untouched(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_with_nul_or_control_characters_is_refused() {
    let s = setup("required").await;
    for common_name in ["admin\0device", "line\nbreak", "bell\u{7}", "del\u{7f}"] {
        let client = client_with(&s, s.odd.client(common_name, 2020, 2090));
        let how = expect_refused(s.proxy.addr(0), client, "a.test").await;
        assert!(!how.is_empty(), "{common_name:?}");
    }
    s.backend.assert_untouched(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_over_255_bytes_is_refused_and_255_bytes_pass() {
    let s = setup("required").await;
    let too_long = client_with(&s, s.odd.client(&"x".repeat(256), 2020, 2090));
    assert!(!expect_refused(s.proxy.addr(0), too_long, "a.test").await.is_empty());
    s.backend.assert_untouched(Duration::from_millis(100)).await;

    let longest = "y".repeat(255);
    let mut backend = s.backend;
    let client = client_config(ClientOpts {
        roots: vec![s.server_ca.cert_der.clone()],
        identity: Some(s.odd.client(&longest, 2020, 2090)),
        ..Default::default()
    });
    let (mut tls, _) = tls_connect(s.proxy.addr(0), client, "a.test").await.expect("handshake");
    tls.write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut tls, 2).await, b"ok");
    assert_eq!(backend.accepted().await.v2().ssl_cn().as_deref(), Some(longest.as_str()));
}
