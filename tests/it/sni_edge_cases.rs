//! Hostile server names: several names in one hello, two SNI extensions, over-long names and
//! labels, GREASE extensions and an ECH outer hello. None may reach a route it does not name,
//! and none falls through to a permissive default unless one is configured.
//!
//! ECH: snigate cannot decrypt the inner hello (it holds no ECH keys), so it routes on the outer
//! SNI, which is the client-facing name the ECH config publishes — as a TLS server without ECH
//! support would see it.

use std::time::Duration;

use crate::support::hello::{client_hello_with_extensions, extension, sni_extension_body};
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const GREASE_EXTENSION: u16 = 0x0a0a;
const ECH_EXTENSION: u16 = 0xfe0d;

fn sni_with_names(names: &[&[u8]]) -> Vec<u8> {
    let mut entries = Vec::new();
    for name in names {
        entries.push(0x00);
        entries.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entries.extend_from_slice(name);
    }
    let mut body = (entries.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&entries);
    body
}

fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for (kind, body) in extensions {
        extension(&mut encoded, *kind, body);
    }
    client_hello_with_extensions(&encoded)
}

async fn setup(default: &str) -> (TestBackend, TestBackend, RunningProxy) {
    let tenant = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).capture_hello()).await;
    let fallback = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).capture_hello()).await;
    let routes = [
        RouteYaml::new("tenant", "passthrough").sni(&["a.test", "*.a.test"]).server(tenant.addr),
        RouteYaml::new("fallback", "passthrough").sni(&["fallback.test"]).server(fallback.addr),
    ];
    let proxy = start_proxy(&config_v4(default, &routes)).await;
    (tenant, fallback, proxy)
}

async fn assert_alert(proxy: &RunningProxy, bytes: &[u8], what: &str) {
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert_eq!(closed, Closed::Eof(UNRECOGNIZED_NAME_ALERT.to_vec()), "{what}: expected the unrecognized_name alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_names_or_two_sni_extensions_reach_no_route() {
    let (tenant, fallback, proxy) = setup("reject").await;
    let two_names = hello(&[(0, sni_with_names(&[b"fallback.test", b"a.test"]))]);
    assert_alert(&proxy, &two_names, "two host_name entries").await;
    let two_extensions = hello(&[(0, sni_extension_body(b"fallback.test")), (0, sni_extension_body(b"a.test"))]);
    assert_alert(&proxy, &two_extensions, "two server_name extensions").await;
    tenant.assert_untouched(Duration::from_millis(100)).await;
    fallback.assert_untouched(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_sni_goes_to_the_configured_default_and_nowhere_else() {
    let (tenant, mut fallback, proxy) = setup("fallback").await;
    let two_names = hello(&[(0, sni_with_names(&[b"a.test", b"b.a.test"]))]);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&two_names).await.unwrap();
    let accepted = fallback.accepted().await;
    assert_eq!(accepted.v2().authority(), None, "an ambiguous SNI is no SNI");
    tenant.assert_untouched(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_names_and_labels_reach_no_route() {
    let (tenant, _fallback, proxy) = setup("reject").await;
    let long_label = format!("{}.a.test", "x".repeat(64));
    let long_name = format!("{}a.test", "abcdefghi.".repeat(25));
    assert!(long_name.len() > 253);
    for name in [long_label.as_bytes(), long_name.as_bytes()] {
        assert_alert(&proxy, &hello(&[(0, sni_extension_body(name))]), "over-long name").await;
    }
    // The longest legal name under the wildcard still routes.
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let legal = format!("{}.a.test", "x".repeat(63));
    tcp.write_all(&hello(&[(0, sni_extension_body(legal.as_bytes()))])).await.unwrap();
    let mut tenant = tenant;
    assert_eq!(tenant.accepted().await.v2().authority().as_deref(), Some(legal.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grease_extensions_do_not_disturb_routing() {
    let (mut tenant, _fallback, proxy) = setup("reject").await;
    let greased = hello(&[
        (GREASE_EXTENSION, vec![]),
        (0, sni_extension_body(b"x.a.test")),
        (0x1a1a, vec![0]),
        (0x002b, vec![0x04, 0x7a, 0x7a, 0x03, 0x04]),
    ]);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&greased).await.unwrap();
    let accepted = tenant.accepted().await;
    assert_eq!(accepted.v2().authority().as_deref(), Some("x.a.test"));
    assert_eq!(accepted.hello(), &greased[..], "replayed byte-exact, GREASE included");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_outer_hello_is_routed_on_the_outer_sni() {
    let (mut tenant, fallback, proxy) = setup("reject").await;
    // An outer ClientHello: public name in SNI, the encrypted inner hello opaque in 0xfe0d.
    let mut ech = vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a, 0x00, 0x20];
    ech.extend_from_slice(&[0x11; 32]);
    ech.extend_from_slice(&[0x00, 0x40]);
    ech.extend_from_slice(&[0x22; 64]);
    let outer = hello(&[(0, sni_extension_body(b"public.a.test")), (ECH_EXTENSION, ech)]);
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(&outer).await.unwrap();
    let accepted = tenant.accepted().await;
    assert_eq!(accepted.v2().authority().as_deref(), Some("public.a.test"));
    assert_eq!(accepted.hello(), &outer[..], "the encrypted inner hello reaches the backend untouched");
    fallback.assert_untouched(Duration::from_millis(100)).await;
}
