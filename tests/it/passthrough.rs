//! Passthrough routes: the proxy reads the ClientHello only to route it, then replays those exact
//! bytes (after the PROXY header) to the backend, which does the TLS handshake itself.

use crate::support::hello::{
    drive_handshake, read_hello_records, read_plaintext, reframe_into_two_records, rustls_hello, send_byte_by_byte,
    send_plaintext, RecordingStream,
};
use crate::support::proxy::*;
use crate::support::tls::{server_config, simple_client, tls_connect};
use crate::support::*;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A backend with its own CA and certificate for `b.test`, which the proxy knows nothing about.
struct BackendPki {
    _pki: Pki,
    ca: Ca,
    leaf: Leaf,
}

fn backend_pki() -> BackendPki {
    let pki = Pki::new();
    let ca = pki.ca("backend-ca", "Backend Only CA");
    let leaf = ca.server_cert("b-backend", &["b.test"]);
    BackendPki { _pki: pki, ca, leaf }
}

fn passthrough_route(backend: &TestBackend) -> RouteYaml {
    RouteYaml::new("tenant-b", "passthrough").sni(&["b.test"]).server(backend.addr)
}

fn assert_passthrough_header(header: &V2Header, src: std::net::SocketAddr, dst: std::net::SocketAddr) {
    assert_eq!(header.command, CMD_PROXY);
    assert_eq!(header.family, FAM_TCP4);
    assert_eq!(header.src, Some(src), "src is the client's address");
    assert_eq!(header.dst, Some(dst), "dst is the proxy listener");
    assert_eq!(header.authority().as_deref(), Some("b.test"));
    assert_eq!(header.tlv(PP2_TYPE_SSL), None, "no SSL TLV: the proxy did not terminate TLS");
    assert!(header.total_len <= 500);
    let types = header.tlv_types();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(types, sorted, "TLVs in ascending type order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_client_sees_backend_certificate_and_backend_gets_header() {
    let b = backend_pki();
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    // The client trusts only the backend's private CA: the handshake succeeding proves it
    // talked to the backend, not to the proxy.
    let (mut tls, local) =
        tls_connect(proxy.addr(0), simple_client(&b.ca.cert_der, None), "b.test").await.expect("handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], b.leaf.cert_der);
    tls.write_all(b"end to end").await.unwrap();
    assert_eq!(read_n(&mut tls, 10).await, b"end to end");

    let accepted = backend.accepted().await;
    assert_passthrough_header(accepted.v2(), local, proxy.addr(0));
    assert_eq!(accepted.v2().alpn(), None, "client offered no ALPN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_replays_hello_byte_exact() {
    let b = backend_pki();
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    let tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (recording, written) = RecordingStream::new(tcp);
    let connector = tokio_rustls::TlsConnector::from(simple_client(&b.ca.cert_der, None));
    let mut tls = within("handshake", connector.connect(ServerName::try_from("b.test").unwrap(), recording))
        .await
        .expect("handshake through passthrough");
    tls.write_all(b"exact").await.unwrap();
    assert_eq!(read_n(&mut tls, 5).await, b"exact");

    let accepted = backend.accepted().await;
    assert_passthrough_header(accepted.v2(), local, proxy.addr(0));
    let sent = written.lock().unwrap().clone();
    let mut reader = &sent[..];
    let client_hello = read_hello_records(&mut reader, 1 << 16).await.expect("client's first flight is a hello");
    assert_eq!(accepted.hello(), &client_hello[..], "backend must get the client's hello byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_alpn_tlv_is_first_offered_protocol() {
    let b = backend_pki();
    let mut backend =
        TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[b"h2", b"mqtt"]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    let config = client_config(ClientOpts {
        roots: vec![b.ca.cert_der.clone()],
        alpn: vec![b"mqtt".to_vec(), b"h2".to_vec()],
        ..Default::default()
    });
    let (mut tls, _) = tls_connect(proxy.addr(0), config, "b.test").await.expect("handshake");
    tls.write_all(b"a").await.unwrap();
    read_n(&mut tls, 1).await;
    let accepted = backend.accepted().await;
    assert_eq!(accepted.v2().alpn().as_deref(), Some(&b"mqtt"[..]), "passthrough sends the first offered protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_split_one_byte_per_segment_is_routed() {
    let b = backend_pki();
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    let config =
        client_config(ClientOpts { roots: vec![b.ca.cert_der.clone()], small_hello: true, ..Default::default() });
    let (mut conn, hello) = rustls_hello(config, "b.test");
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    within("sending the hello byte by byte", send_byte_by_byte(&mut tcp, &hello)).await;
    within("handshake", drive_handshake(&mut tcp, &mut conn)).await.expect("handshake with the backend");
    assert_eq!(conn.peer_certificates().unwrap()[0], b.leaf.cert_der);
    send_plaintext(&mut tcp, &mut conn, b"split").await.unwrap();
    assert_eq!(within("echo", read_plaintext(&mut tcp, &mut conn, 5)).await.unwrap(), b"split");

    let accepted = backend.accepted().await;
    assert_passthrough_header(accepted.v2(), local, proxy.addr(0));
    assert_eq!(accepted.hello(), &hello[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_spanning_two_tls_records_is_routed_and_replayed_byte_exact() {
    let b = backend_pki();
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    // A real (post-quantum sized) rustls hello, re-framed so the SNI's bytes are split between
    // the two records ("b." in the first, "test" in the second).
    let (mut conn, hello) = rustls_hello(simple_client(&b.ca.cert_der, None), "b.test");
    let payload = &hello[5..];
    let name_at = payload.windows(6).position(|w| w == b"b.test").expect("SNI in the hello");
    let two_records = reframe_into_two_records(&hello, name_at + 2);
    assert_eq!(two_records.len(), hello.len() + 5);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(&two_records).await.unwrap();
    within("handshake", drive_handshake(&mut tcp, &mut conn)).await.expect("handshake with the backend");
    assert_eq!(conn.peer_certificates().unwrap()[0], b.leaf.cert_der);
    send_plaintext(&mut tcp, &mut conn, b"two records").await.unwrap();
    assert_eq!(within("echo", read_plaintext(&mut tcp, &mut conn, 11)).await.unwrap(), b"two records");

    let accepted = backend.accepted().await;
    assert_passthrough_header(accepted.v2(), local, proxy.addr(0));
    assert_eq!(accepted.hello(), &two_records[..], "both records replayed exactly as sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_records_arriving_in_separate_segments_are_reassembled() {
    let b = backend_pki();
    let mut backend = TestBackend::start(BackendOpts::tls(ProxyExpect::V2, server_config(&b.leaf, &[]))).await;
    let proxy = start_proxy(&config_v4("reject", &[passthrough_route(&backend)])).await;

    let (mut conn, hello) = rustls_hello(simple_client(&b.ca.cert_der, None), "b.test");
    let payload_len = hello.len() - 5;
    let first = payload_len / 2;
    let two_records = reframe_into_two_records(&hello, first);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    // First record plus 3 bytes of the second record's header, a pause, then the rest.
    let cut = 5 + first + 3;
    tcp.write_all(&two_records[..cut]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tcp.write_all(&two_records[cut..]).await.unwrap();
    within("handshake", drive_handshake(&mut tcp, &mut conn)).await.expect("handshake with the backend");
    send_plaintext(&mut tcp, &mut conn, b"ok").await.unwrap();
    assert_eq!(within("echo", read_plaintext(&mut tcp, &mut conn, 2)).await.unwrap(), b"ok");
    assert_eq!(backend.accepted().await.hello(), &two_records[..]);
}
