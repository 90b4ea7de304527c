//! `hello::parse` on real rustls ClientHellos (SNI "a.test"), taken from a `ClientConnection`'s
//! first `write_tls` output:
//!
//! - `small`: TLS 1.3 only, X25519 only (~230 B);
//! - `default`: rustls' default client as released, i.e. with its default `prefer-post-quantum`
//!   feature: X25519MLKEM768 + X25519 key shares, TLS 1.3 and 1.2 (~1.5 KB). snigate builds rustls
//!   without default features, so its own aws-lc-rs default puts X25519MLKEM768 last and would send
//!   a ~240 B X25519-only hello; the order is set here explicitly to get the hello that current
//!   rustls, Chrome and Firefox clients send;
//! - `large`: `default` plus 110 synthetic ALPN protocol IDs (`x-bench-proto-000`…, ~2 KB) (~3.5 KB),
//!   a stand-in for a big hello that also stresses the ALPN copy (one `Vec` per protocol);
//! - `default_512B_records`: `default` with rustls' `max_fragment_size = 512`, so the hello spans
//!   several TLS records and is reassembled into a buffer (the copying path).
//!
//! `split`: a hello arriving in two reads is parsed twice, once per read (`parse` is pure and
//! starts over): the first half alone (→ Incomplete) and the sum of both calls.
//!
//!     cargo bench --bench hello

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;
use snigate::config::DEFAULT_MAX_HELLO_BYTES;
use snigate::hello::{self, Progress};

const SERVER_NAME: &str = "a.test";

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
}

fn client(small: bool, alpn: Vec<Vec<u8>>, max_fragment_size: Option<usize>) -> Arc<ClientConfig> {
    let mut provider = aws_lc_rs::default_provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if small {
        provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
        &[&rustls::version::TLS13]
    } else {
        // rustls' DEFAULT_KX_GROUPS with its `prefer-post-quantum` feature.
        provider.kx_groups = vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
            aws_lc_rs::kx_group::SECP256R1,
            aws_lc_rs::kx_group::SECP384R1,
        ];
        rustls::DEFAULT_VERSIONS
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config.max_fragment_size = max_fragment_size;
    Arc::new(config)
}

/// The client's first flight: its ClientHello record(s).
fn first_flight(config: Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let mut connection = ClientConnection::new(config, name).expect("client connection");
    let mut bytes = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut bytes).expect("write_tls into a Vec");
    }
    bytes
}

fn cases() -> Vec<Case> {
    let many_alpn: Vec<Vec<u8>> = (0..110).map(|i| format!("x-bench-proto-{i:03}").into_bytes()).collect();
    let cases = vec![
        Case { name: "small", bytes: first_flight(client(true, Vec::new(), None)) },
        Case { name: "default", bytes: first_flight(client(false, Vec::new(), None)) },
        Case { name: "large", bytes: first_flight(client(false, many_alpn, None)) },
        Case { name: "default_512B_records", bytes: first_flight(client(false, Vec::new(), Some(512))) },
    ];
    for case in &cases {
        match hello::parse(&case.bytes, DEFAULT_MAX_HELLO_BYTES) {
            Ok(Progress::Complete(parsed)) => {
                assert_eq!(parsed.server_name.as_deref(), Some(SERVER_NAME), "{}", case.name);
                assert_eq!(parsed.records_len, case.bytes.len(), "{}", case.name);
            }
            other => panic!("{}: {other:?}", case.name),
        }
        eprintln!("hello {}: {} bytes", case.name, case.bytes.len());
    }
    cases
}

fn parse(c: &mut Criterion) {
    let cases = cases();
    let mut group = c.benchmark_group("hello/parse");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new(case.name, case.bytes.len()), &case.bytes, |b, bytes| {
            b.iter(|| hello::parse(black_box(bytes), DEFAULT_MAX_HELLO_BYTES))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hello/split");
    for case in cases.iter().filter(|case| matches!(case.name, "default" | "large")) {
        let bytes = &case.bytes;
        let half = &bytes[..bytes.len() / 2];
        assert_eq!(hello::parse(half, DEFAULT_MAX_HELLO_BYTES), Ok(Progress::Incomplete));
        group.bench_function(BenchmarkId::new("first_half", case.name), |b| {
            b.iter(|| hello::parse(black_box(half), DEFAULT_MAX_HELLO_BYTES))
        });
        group.bench_function(BenchmarkId::new("half_then_whole", case.name), |b| {
            b.iter(|| {
                let first = hello::parse(black_box(half), DEFAULT_MAX_HELLO_BYTES);
                let second = hello::parse(black_box(bytes), DEFAULT_MAX_HELLO_BYTES);
                (first, second)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
