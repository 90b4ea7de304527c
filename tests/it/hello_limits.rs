//! ClientHello limits: a hello bigger than `max_hello_bytes`, one that never completes, one that
//! trickles in slower than `hello_timeout`, and a malformed one are all closed without ever
//! connecting a backend.

use std::time::{Duration, Instant};

use crate::support::hello::{raw_client_hello, wrap_records};
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn limits(hello_timeout: &str, max_hello_bytes: usize) -> String {
    format!(
        "limits: {{ hello_timeout: {hello_timeout}, max_hello_bytes: {max_hello_bytes}, max_connections: 100, max_handshakes: 16, idle_timeout: 1m, handshake_timeout: 3s, drain_timeout: 1s }}"
    )
}

/// A passthrough route for `big.test` (so a hello that got through would reach the backend)
/// and, as default, the same route: a size or time violation must not fall back to routing.
async fn setup(hello_timeout: &str, max_hello_bytes: usize) -> (TestBackend, RunningProxy) {
    let backend = TestBackend::start(BackendOpts::plain(ProxyExpect::V2).capture_hello()).await;
    let route = RouteYaml::new("big", "passthrough").sni(&["big.test"]).server(backend.addr);
    let proxy =
        start_proxy(&config_with_limits(&["127.0.0.1:0"], "big", &limits(hello_timeout, max_hello_bytes), &[route]))
            .await;
    (backend, proxy)
}

fn assert_closed_without_payload(closed: &Closed) {
    println!("connection ended with {closed:?}");
    let bytes = closed.bytes();
    assert!(
        bytes.is_empty() || bytes[0] == 0x15,
        "nothing but (at most) an alert may be written back, got {bytes:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_hello_record_length_is_closed_without_backend_connect() {
    // A long hello_timeout: the close must come from the size check, not the deadline.
    let (backend, proxy) = setup("30s", 1024).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    // A handshake record claiming 16000 bytes (cap is 1024), holding a ClientHello header that
    // claims 15996 bytes, then only 100 bytes of it.
    let mut bytes = vec![0x16, 0x03, 0x01, 0x3E, 0x80, 0x01, 0x00, 0x3E, 0x7C, 0x03, 0x03];
    bytes.extend_from_slice(&[0x11; 98]);
    tcp.write_all(&bytes).await.unwrap();
    let closed = read_until_closed(&mut tcp).await;
    assert_closed_without_payload(&closed);
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_hello_spread_over_records_is_closed_without_backend_connect() {
    let (backend, proxy) = setup("30s", 1024).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    // A ClientHello claiming 3000 bytes, actually sent, in 512-byte records: the buffered hello
    // passes the 1024-byte cap part-way through.
    let mut handshake = vec![0x01, 0x00, 0x0B, 0xB8, 0x03, 0x03];
    handshake.resize(4 + 3000, 0x22);
    let sizes: Vec<usize> = handshake.chunks(512).map(<[u8]>::len).collect();
    let records = wrap_records(&handshake, &sizes, [0x03, 0x01]);
    // The proxy may close (even reset) while we are still writing: that is fine.
    let _ = tcp.write_all(&records).await;
    let closed = read_until_closed(&mut tcp).await;
    assert_closed_without_payload(&closed);
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_within_max_hello_bytes_is_still_routed() {
    // Control for the two tests above: the same setup passes a normal hello through.
    let (mut backend, proxy) = setup("30s", 1024).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let hello = raw_client_hello(Some(b"big.test"), &[]);
    assert!(hello.len() < 1024);
    tcp.write_all(&hello).await.unwrap();
    let accepted = backend.accepted().await;
    assert_eq!(accepted.hello(), &hello[..]);
    assert_eq!(accepted.v2().authority().as_deref(), Some("big.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_that_never_ends_is_closed_at_hello_timeout() {
    let (backend, proxy) = setup("1s", 16384).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    let start = Instant::now();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let closed = within_for(Duration::from_secs(4), "close at hello_timeout (1s)", read_until_closed(&mut tcp)).await;
    let elapsed = start.elapsed();
    println!("closed after {elapsed:?}: {closed:?}");
    assert!(elapsed >= Duration::from_millis(500), "closed after {elapsed:?}, before the 1s hello_timeout");
    assert_closed_without_payload(&closed);
    assert_eq!(backend.accept_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_trickling_in_slower_than_hello_timeout_is_closed() {
    // hello_timeout bounds the whole hello, not each read: a byte every 150 ms keeps the
    // connection busy but must not keep it open past the deadline.
    let (backend, proxy) = setup("1s", 16384).await;
    let tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let hello = raw_client_hello(Some(b"big.test"), &[]);
    let start = Instant::now();
    let (mut read_half, mut write_half) = tcp.into_split();
    let writer = tokio::spawn(async move {
        for byte in hello.iter().take(hello.len() - 1) {
            if write_half.write_all(std::slice::from_ref(byte)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let closed =
        within_for(Duration::from_secs(5), "close at hello_timeout (1s)", read_until_closed(&mut read_half)).await;
    let elapsed = start.elapsed();
    writer.abort();
    println!("closed after {elapsed:?}: {closed:?}");
    assert!(elapsed >= Duration::from_millis(500), "closed after {elapsed:?}");
    assert_closed_without_payload(&closed);
    assert_eq!(backend.accept_count(), 0);
}

/// Sends `bytes`, then expects the proxy to close the connection without connecting the
/// backend (which, being the default route, is where a hello mistaken for "no SNI" would go).
async fn assert_malformed_is_closed(bytes: &[u8], what: &str) {
    let (backend, proxy) = setup("30s", 16384).await;
    let mut tcp = TcpStream::connect(proxy.addr(0)).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut tcp)).await;
    assert_eq!(
        backend.accept_count(),
        0,
        "{what}: the malformed hello was forwarded to the default route's backend instead of being closed"
    );
    let closed = closed.unwrap_or_else(|_| panic!("{what}: the connection was not closed"));
    assert_closed_without_payload(&closed);
    backend.assert_untouched(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hello_wrong_handshake_type_is_closed_without_backend_connect() {
    // A complete handshake record whose message is a ServerHello (type 2), not a ClientHello.
    let mut bad = raw_client_hello(Some(b"big.test"), &[]);
    bad[5] = 0x02;
    assert_malformed_is_closed(&bad, "handshake type 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hello_extensions_overrunning_the_message_is_closed_without_backend_connect() {
    // A ClientHello whose extensions block claims more bytes than the message holds.
    let mut overrun = raw_client_hello(Some(b"big.test"), &[]);
    // The extensions length sits after version(2) random(32) sid(1+32) suites(2+6) comp(2).
    let ext_len_at = 5 + 4 + 2 + 32 + 33 + 8 + 2;
    overrun[ext_len_at] = 0x7F;
    assert_malformed_is_closed(&overrun, "extensions length overrun").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hello_truncated_cipher_suites_is_closed_without_backend_connect() {
    // The cipher-suite list claims 0x7000 bytes inside a ~200-byte message.
    let mut bad = raw_client_hello(Some(b"big.test"), &[]);
    let suites_len_at = 5 + 4 + 2 + 32 + 33;
    bad[suites_len_at] = 0x70;
    assert_malformed_is_closed(&bad, "cipher suites overrun").await;
}
