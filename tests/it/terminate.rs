//! Terminate routes: the proxy runs the TLS handshake with the route's certificate, checks the
//! client certificate, and only then connects the backend with a PROXY v2 header carrying the
//! SSL TLV (client bits, verify, VERSION, CN, CIPHER, SIG_ALG, KEY_ALG).

use std::time::Duration;

use crate::support::proxy::*;
use crate::support::tls::{expect_refused, simple_client, tls_connect};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Tenant {
    _pki: Pki,
    ca: Ca,
    server: Leaf,
}

fn tenant() -> Tenant {
    let pki = Pki::new();
    let ca = pki.ca("tenant-a-ca", "Tenant A CA");
    let server = ca.server_cert("a-server", &["a.test", "*.a.test"]);
    Tenant { _pki: pki, ca, server }
}

fn route(t: &Tenant, backend: &TestBackend) -> RouteYaml {
    RouteYaml::new("tenant-a", "terminate").sni(&["a.test", "*.a.test"]).cert(&t.server).server(backend.addr)
}

fn assert_tlvs_ascending(header: &V2Header) {
    let types = header.tlv_types();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(types, sorted, "TLVs must be in ascending type order");
}

/// Checks the parts of the SSL TLV every terminate header has.
fn assert_common_ssl(header: &V2Header, version: &str) -> SslTlv {
    let ssl = header.ssl().expect("terminate routes send the SSL TLV");
    assert_eq!(ssl.client & PP2_CLIENT_SSL, PP2_CLIENT_SSL, "client bit SSL: {ssl:?}");
    assert_eq!(ssl.version().as_deref(), Some(version), "VERSION sub-TLV: {ssl:?}");
    let cipher = ssl.cipher().expect("CIPHER sub-TLV");
    // TLS 1.3 suites are named TLS_* by both IANA and OpenSSL; TLS 1.2 names differ between
    // the two (HAProxy sends OpenSSL's, e.g. ECDHE-ECDSA-AES256-GCM-SHA384), so only their shape
    // is checked.
    assert!(cipher.len() > 8 && cipher.bytes().all(|b| b.is_ascii_graphic()), "CIPHER {cipher:?}");
    if version == "TLSv1.3" {
        assert!(cipher.starts_with("TLS_"), "CIPHER {cipher:?}");
    }
    assert!(!ssl.sig_alg().expect("SIG_ALG sub-TLV").is_empty());
    assert!(!ssl.key_alg().expect("KEY_ALG sub-TLV").is_empty());
    let subs = ssl.sub_types();
    let mut sorted = subs.clone();
    sorted.sort();
    assert_eq!(subs, sorted, "SSL sub-TLVs must be in ascending type order");
    ssl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_required_client_cert_sends_cn_and_verify_zero() {
    let t = tenant();
    let client = t.ca.client_cert("device", &ClientSpec::cn("device-42"));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).client_auth("required", &t.ca)])).await;

    let (mut tls, local) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&client)), "a.test").await.expect("handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], t.server.cert_der, "proxy presents the route cert");
    tls.write_all(b"hello through the proxy").await.unwrap();
    assert_eq!(read_n(&mut tls, 23).await, b"hello through the proxy");

    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.command, CMD_PROXY);
    assert_eq!(header.family, FAM_TCP4);
    assert_eq!(header.src, Some(local), "src is the client's address as the proxy sees it");
    assert_eq!(header.dst, Some(proxy.addr(0)), "dst is the proxy listener's address");
    assert!(header.total_len <= 500, "header is {} bytes", header.total_len);
    assert_eq!(header.authority().as_deref(), Some("a.test"));
    assert_eq!(header.alpn(), None, "no ALPN was negotiated");
    assert_tlvs_ascending(header);
    let ssl = assert_common_ssl(header, "TLSv1.3");
    assert_eq!(ssl.client & 0x03, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, "client bits {:#04x}", ssl.client);
    assert_eq!(ssl.verify, 0, "a presented and verified certificate has verify = 0");
    assert_eq!(ssl.cn().as_deref(), Some("device-42"));
    assert_eq!(backend.accept_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_required_client_cert_missing_is_refused_without_backend_connect() {
    let t = tenant();
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).client_auth("required", &t.ca)])).await;

    let how = expect_refused(proxy.addr(0), simple_client(&t.ca.cert_der, None), "a.test").await;
    println!("refused: {how}");
    backend.assert_untouched(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_client_cert_from_another_ca_is_refused() {
    let t = tenant();
    let other_ca = t._pki.ca("other-ca", "Some Other CA");
    let stranger = other_ca.client_cert("stranger", &ClientSpec::cn("stranger"));
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).client_auth("required", &t.ca)])).await;

    let how = expect_refused(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&stranger)), "a.test").await;
    println!("refused: {how}");
    backend.assert_untouched(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_revoked_client_cert_is_refused() {
    let t = tenant();
    let revoked = t.ca.client_cert("revoked", &ClientSpec::cn("revoked-device"));
    let good = t.ca.client_cert("good", &ClientSpec::cn("good-device"));
    let crl = t.ca.crl("tenant-a", &[&revoked]);
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[route(&t, &backend).client_auth("required", &t.ca).tls(format!("crl: [{}]", q(crl.to_str().unwrap())))],
    ))
    .await;

    let how = expect_refused(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&revoked)), "a.test").await;
    println!("revoked cert refused: {how}");
    backend.assert_untouched(Duration::from_millis(300)).await;

    // The same route still serves a certificate the CRL does not list.
    let (mut tls, _) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&good)), "a.test").await.expect("good cert");
    tls.write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut tls, 2).await, b"ok");
    assert_eq!(backend.accepted().await.v2().ssl_cn().as_deref(), Some("good-device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_optional_client_auth_without_cert_has_no_cn_and_nonzero_verify() {
    let t = tenant();
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).client_auth("optional", &t.ca)])).await;

    let (mut tls, local) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, None), "a.test").await.expect("handshake");
    tls.write_all(b"anonymous").await.unwrap();
    assert_eq!(read_n(&mut tls, 9).await, b"anonymous");

    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.src, Some(local));
    let ssl = assert_common_ssl(header, "TLSv1.3");
    assert_eq!(ssl.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS), 0, "no certificate: {:#04x}", ssl.client);
    assert_ne!(ssl.verify, 0, "verify is non-zero without a client certificate");
    assert_eq!(ssl.cn(), None, "no CN without a verified certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_optional_client_auth_with_cert_sends_cn() {
    let t = tenant();
    let client = t.ca.client_cert("device", &ClientSpec::cn("optional-device"));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).client_auth("optional", &t.ca)])).await;

    let (mut tls, _) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&client)), "a.test").await.expect("handshake");
    tls.write_all(b"x").await.unwrap();
    read_n(&mut tls, 1).await;
    let accepted = backend.accepted().await;
    let ssl = assert_common_ssl(accepted.v2(), "TLSv1.3");
    assert_eq!(ssl.verify, 0);
    assert_eq!(ssl.cn().as_deref(), Some("optional-device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_alpn_negotiated_is_sent_in_alpn_tlv() {
    let t = tenant();
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).tls("alpn: [mqtt]")])).await;

    // The client offers an unknown protocol first: the TLV must carry the negotiated one.
    let config = client_config(ClientOpts {
        roots: vec![t.ca.cert_der.clone()],
        alpn: vec![b"x-unknown".to_vec(), b"mqtt".to_vec()],
        ..Default::default()
    });
    let (mut tls, _) = tls_connect(proxy.addr(0), config, "a.test").await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    tls.write_all(b"connect").await.unwrap();
    read_n(&mut tls, 7).await;

    let accepted = backend.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.alpn().as_deref(), Some(&b"mqtt"[..]));
    assert_eq!(header.tlv_count(PP2_TYPE_ALPN), 1);
    assert_tlvs_ascending(header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_min_version_1_3_refuses_tls12_only_client() {
    let t = tenant();
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4("reject", &[route(&t, &backend).tls("min_version: \"1.3\"")])).await;

    let config = client_config(ClientOpts {
        roots: vec![t.ca.cert_der.clone()],
        versions: Versions::Tls12Only,
        ..Default::default()
    });
    let result = tls_connect(proxy.addr(0), config, "a.test").await;
    assert!(result.is_err(), "a TLS 1.2-only client must not complete a handshake with min_version 1.3");
    println!("refused: {}", result.err().unwrap());
    backend.assert_untouched(Duration::from_millis(300)).await;

    // A TLS 1.3 client is fine on the same route.
    let (mut tls, _) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, None), "a.test").await.expect("TLS 1.3 client");
    tls.write_all(b"13").await.unwrap();
    assert_eq!(read_n(&mut tls, 2).await, b"13");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_tls12_client_works_with_min_version_1_2_and_reports_tlsv1_2() {
    let t = tenant();
    let client = t.ca.client_cert("device12", &ClientSpec::cn("tls12-device"));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[route(&t, &backend).tls("min_version: \"1.2\"").client_auth("required", &t.ca)],
    ))
    .await;

    let config = client_config(ClientOpts {
        roots: vec![t.ca.cert_der.clone()],
        identity: Some(client.identity()),
        versions: Versions::Tls12Only,
        ..Default::default()
    });
    let (mut tls, _) = tls_connect(proxy.addr(0), config, "a.test").await.expect("TLS 1.2 handshake");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    tls.write_all(b"twelve").await.unwrap();
    assert_eq!(read_n(&mut tls, 6).await, b"twelve");

    let accepted = backend.accepted().await;
    let ssl = assert_common_ssl(accepted.v2(), "TLSv1.2");
    assert_eq!(ssl.verify, 0);
    assert_eq!(ssl.cn().as_deref(), Some("tls12-device"));
}

/// A client certificate carrying every kind of identity, and the value each `identity:`
/// setting must put into the CN sub-TLV.
async fn identity_case(identity: &str, expected: Option<&str>, spec: ClientSpec) {
    let t = tenant();
    let client = t.ca.client_cert("multi-id", &spec);
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[route(&t, &backend).client_auth("required", &t.ca).backend(format!("identity: {identity}"))],
    ))
    .await;
    let (mut tls, _) =
        tls_connect(proxy.addr(0), simple_client(&t.ca.cert_der, Some(&client)), "a.test").await.expect("handshake");
    tls.write_all(b"id").await.unwrap();
    read_n(&mut tls, 2).await;
    let accepted = backend.accepted().await;
    let ssl = assert_common_ssl(accepted.v2(), "TLSv1.3");
    assert_eq!(ssl.verify, 0);
    assert_eq!(ssl.cn().as_deref(), expected, "identity: {identity}");
}

fn full_identity() -> ClientSpec {
    ClientSpec {
        cn: Some("cn-user".into()),
        dns: vec!["device.example.net".into(), "second.example.net".into()],
        uri: vec!["spiffe://example.net/device/7".into(), "urn:example:second".into()],
        email: vec!["device7@example.net".into(), "second@example.net".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_cn_puts_subject_cn_in_cn_subtlv() {
    identity_case("cn", Some("cn-user"), full_identity()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_san_dns_puts_first_dns_san_in_cn_subtlv() {
    identity_case("san_dns", Some("device.example.net"), full_identity()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_san_uri_puts_first_uri_san_in_cn_subtlv() {
    identity_case("san_uri", Some("spiffe://example.net/device/7"), full_identity()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_san_email_puts_first_email_san_in_cn_subtlv() {
    identity_case("san_email", Some("device7@example.net"), full_identity()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_san_dns_without_dns_san_omits_cn_subtlv() {
    identity_case("san_dns", None, ClientSpec::cn("only-a-cn")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_resumed_session_keeps_identity_with_cert_sess_bit() {
    let t = tenant();
    let client = t.ca.client_cert("resumer", &ClientSpec::cn("resuming-device"));
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[route(&t, &backend).client_auth("required", &t.ca).tls("session_resumption: true")],
    ))
    .await;
    let config = simple_client(&t.ca.cert_der, Some(&client));

    for round in 0..2 {
        let (mut tls, _) = tls_connect(proxy.addr(0), config.clone(), "a.test").await.expect("handshake");
        tls.write_all(b"round").await.unwrap();
        assert_eq!(read_n(&mut tls, 5).await, b"round");
        let kind = tls.get_ref().1.handshake_kind();
        let accepted = backend.accepted().await;
        let ssl = assert_common_ssl(accepted.v2(), "TLSv1.3");
        println!("round {round}: handshake {kind:?}, client bits {:#04x}, verify {}", ssl.client, ssl.verify);
        assert_eq!(ssl.cn().as_deref(), Some("resuming-device"), "round {round}");
        if round == 1 {
            assert_eq!(kind, Some(rustls::HandshakeKind::Resumed), "second connection should resume");
            assert_eq!(ssl.client & PP2_CLIENT_CERT_SESS, PP2_CLIENT_CERT_SESS, "CERT_SESS on resumption");
        }
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = within("proxy close", tls.read_to_end(&mut rest)).await;
    }
}
