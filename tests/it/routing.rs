//! Routing by SNI: exact and wildcard names, canonicalisation (case, trailing dot), invalid SNI
//! (IP literal, NUL, non-LDH) treated as none, unknown / missing SNI rejected with the TLS alert
//! `unrecognized_name`, and non-TLS first bytes.

use std::time::Duration;

use crate::support::hello::{raw_client_hello, rustls_hello};
use crate::support::proxy::*;
use crate::support::tls::{simple_client, tls_connect};
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A backend that reads the PROXY v2 header and the raw hello, then echoes.
async fn capturing_backend() -> TestBackend {
    TestBackend::start(BackendOpts::plain(ProxyExpect::V2).capture_hello()).await
}

fn passthrough(name: &str, sni: &[&str], backend: &TestBackend) -> RouteYaml {
    RouteYaml::new(name, "passthrough").sni(sni).server(backend.addr)
}

/// Sends `hello` and expects exactly the unrecognized_name alert, then EOF.
async fn assert_rejected_with_alert(proxy: &RunningProxy, hello: &[u8]) {
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert_eq!(closed, Closed::Eof(UNRECOGNIZED_NAME_ALERT.to_vec()), "expected alert 15 03 03 00 02 02 70 then EOF");
}

/// Sends a raw hello for `sni` and returns what the backend that got it saw.
async fn route_raw(proxy: &RunningProxy, backend: &mut TestBackend, sni: &[u8]) -> Accepted {
    let hello = raw_client_hello(Some(sni), &[]);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let accepted = backend.accepted().await;
    assert_eq!(accepted.hello(), &hello[..], "hello replayed byte for byte");
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_gets_unrecognized_name_alert_without_backend_connect() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test", "*.a.test"], &backend)])).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "Any CA");
    // A real rustls hello for a name no route has.
    let (_conn, hello) = rustls_hello(simple_client(&ca.cert_der, None), "unknown.test");
    assert_rejected_with_alert(&proxy, &hello).await;
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_real_client_sees_unrecognized_name() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test"], &backend)])).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "Any CA");
    let Err(error) = tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "nobody.test").await else {
        panic!("the handshake for an unknown name must fail");
    };
    assert!(error.to_lowercase().contains("unrecogni"), "expected an unrecognised_name alert: {error}");
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sni_gets_unrecognized_name_alert_without_backend_connect() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test"], &backend)])).await;
    let pki = Pki::new();
    let ca = pki.ca("ca", "Any CA");
    let config = client_config(ClientOpts { roots: vec![ca.cert_der.clone()], no_sni: true, ..Default::default() });
    let (_conn, hello) = rustls_hello(config, "a.test");
    assert!(!hello.windows(6).any(|w| w == b"a.test"), "the hello must carry no SNI");
    assert_rejected_with_alert(&proxy, &hello).await;
    // The same with a hand-built hello that has no server_name extension at all.
    assert_rejected_with_alert(&proxy, &raw_client_hello(None, &[])).await;
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_mixed_case_and_trailing_dot_routes_to_the_same_route() {
    let mut backend = capturing_backend().await;
    let other = capturing_backend().await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[passthrough("a", &["a.test"], &backend), passthrough("other", &["other.test"], &other)],
    ))
    .await;
    for sni in [&b"a.test"[..], b"A.TeSt", b"a.test.", b"A.TEST."] {
        let accepted = route_raw(&proxy, &mut backend, sni).await;
        assert_eq!(
            accepted.v2().authority().as_deref(),
            Some("a.test"),
            "AUTHORITY is lowercased without the trailing dot for {:?}",
            String::from_utf8_lossy(sni)
        );
    }
    assert_eq!(other.accept_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_route_matches_one_or_more_labels() {
    let mut wild = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("wild", &["*.w.test"], &wild)])).await;
    for sni in ["sub.w.test", "deep.sub.w.test", "SUB.W.TEST."] {
        let accepted = route_raw(&proxy, &mut wild, sni.as_bytes()).await;
        let expected = sni.to_lowercase();
        assert_eq!(accepted.v2().authority().as_deref(), Some(expected.trim_end_matches('.')));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_does_not_match_the_bare_suffix_or_lookalikes() {
    let wild = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("wild", &["*.w.test"], &wild)])).await;
    for sni in ["w.test", "xw.test", "sub.w.test.evil", "w.test.sub"] {
        assert_rejected_with_alert(&proxy, &raw_client_hello(Some(sni.as_bytes()), &[])).await;
    }
    wild.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_name_beats_wildcard() {
    let mut wild = capturing_backend().await;
    let mut exact = capturing_backend().await;
    // The wildcard route is listed first: order must not matter.
    let proxy = start_proxy(&config_v4(
        "reject",
        &[passthrough("wild", &["*.w.test"], &wild), passthrough("exact", &["exact.w.test"], &exact)],
    ))
    .await;
    let accepted = route_raw(&proxy, &mut exact, b"exact.w.test").await;
    assert_eq!(accepted.v2().authority().as_deref(), Some("exact.w.test"));
    let accepted = route_raw(&proxy, &mut wild, b"other.w.test").await;
    assert_eq!(accepted.v2().authority().as_deref(), Some("other.w.test"));
    assert_eq!(exact.accept_count(), 1);
    assert_eq!(wild.accept_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_sni_is_treated_as_no_sni() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test"], &backend)])).await;
    for sni in [&b"127.0.0.1"[..], b"::1", b"[::1]"] {
        assert_rejected_with_alert(&proxy, &raw_client_hello(Some(sni), &[])).await;
    }
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_sni_goes_to_default_route_without_authority() {
    let mut backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("fallback", &[passthrough("fallback", &["fallback.test"], &backend)])).await;
    let accepted = route_raw(&proxy, &mut backend, b"127.0.0.1").await;
    assert_eq!(accepted.v2().authority(), None, "an invalid SNI is no SNI: no AUTHORITY TLV");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_with_nul_or_non_ldh_bytes_is_treated_as_no_sni() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test", "*.a.test"], &backend)])).await;
    for sni in [&b"a.test\0"[..], b"a.te\0st", b"evil\0.a.test", b"bad name.a.test", b"x/y.a.test", b"\xc3\xa9.a.test"]
    {
        assert_rejected_with_alert(&proxy, &raw_client_hello(Some(sni), &[])).await;
    }
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_goes_to_default_route_when_one_is_named() {
    let mut fallback = capturing_backend().await;
    let named = capturing_backend().await;
    let proxy = start_proxy(&config_v4(
        "fallback",
        &[passthrough("named", &["named.test"], &named), passthrough("fallback", &["fallback.test"], &fallback)],
    ))
    .await;
    let accepted = route_raw(&proxy, &mut fallback, b"Unknown.Test").await;
    assert_eq!(accepted.v2().authority().as_deref(), Some("unknown.test"));
    let no_sni = raw_client_hello(None, &[]);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&no_sni).await.unwrap();
    let accepted = fallback.accepted().await;
    assert_eq!(accepted.hello(), &no_sni[..]);
    assert_eq!(accepted.v2().authority(), None, "no SNI, no AUTHORITY");
    assert_eq!(named.accept_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_terminate_route_serves_subdomain() {
    let pki = Pki::new();
    let ca = pki.ca("ca", "Tenant CA");
    let server = ca.server_cert("wild-server", &["*.a.test"]);
    let mut backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "reject",
        &[RouteYaml::new("wild", "terminate").sni(&["*.a.test"]).cert(&server).server(backend.addr)],
    ))
    .await;
    let (mut tls, _) =
        tls_connect(proxy.addr(0), simple_client(&ca.cert_der, None), "Device7.A.Test").await.expect("handshake");
    tls.write_all(b"hi").await.unwrap();
    read_n(&mut tls, 2).await;
    assert_eq!(backend.accepted().await.v2().authority().as_deref(), Some("device7.a.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_bytes_are_closed_when_default_is_reject() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough("a", &["a.test"], &backend)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert!(closed.bytes().is_empty(), "nothing is written back to a non-TLS client: {closed:?}");
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_bytes_are_closed_when_default_is_not_tcp() {
    let backend = capturing_backend().await;
    let proxy = start_proxy(&config_v4("a", &[passthrough("a", &["a.test"], &backend)])).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(b"CONNECT mqtt\r\n").await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert!(closed.bytes().is_empty(), "nothing is written back to a non-TLS client: {closed:?}");
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_bytes_go_to_default_tcp_route_with_header() {
    let tls_backend = capturing_backend().await;
    let mut plain = TestBackend::start(BackendOpts::plain(ProxyExpect::V2)).await;
    let proxy = start_proxy(&config_v4(
        "plain",
        &[passthrough("a", &["a.test"], &tls_backend), RouteYaml::new("plain", "tcp").server(plain.addr)],
    ))
    .await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    // MQTT CONNECT starts with 0x10: clearly not a TLS handshake record.
    let payload = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    tcp.write_all(payload).await.unwrap();
    assert_eq!(read_n(&mut tcp, payload.len()).await, payload);
    let accepted = plain.accepted().await;
    let header = accepted.v2();
    assert_eq!(header.family, FAM_TCP4);
    assert_eq!(header.src, Some(local));
    assert_eq!(header.dst, Some(proxy.addr(0)));
    assert_eq!(header.authority(), None, "tcp mode has no AUTHORITY");
    assert_eq!(header.tlv(PP2_TYPE_SSL), None, "tcp mode has no SSL TLV");
    assert_eq!(tls_backend.accept_count(), 0);
}
