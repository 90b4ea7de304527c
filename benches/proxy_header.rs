//! PROXY header encoding, once per backend connection:
//!
//! - `passthrough`: addresses, AUTHORITY (the SNI) and ALPN (the first protocol offered);
//! - `terminate`: the same plus the SSL TLV of a TLS 1.3 session with a verified client
//!   certificate (client bits, verify, VERSION, CN, CIPHER, SIG_ALG, KEY_ALG sub-TLVs).
//!
//! v1 carries addresses only, so it is measured for IPv4 and IPv6 rather than per mode.
//!
//!     cargo bench --bench proxy_header

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use snigate::proxy_header::{self, Meta, Ssl};

fn address(text: &str) -> Option<SocketAddr> {
    Some(text.parse().expect("socket address"))
}

fn passthrough() -> Meta<'static> {
    Meta {
        source: address("203.0.113.57:51234"),
        destination: address("10.0.0.5:8883"),
        authority: Some("a.snigate.test"),
        alpn: Some(b"mqtt"),
        ssl: None,
    }
}

fn terminate() -> Meta<'static> {
    Meta {
        ssl: Some(Ssl {
            cert_in_session: true,
            cert_in_connection: true,
            version: "TLSv1.3",
            common_name: Some("device-000042.fleet.example"),
            cipher: "TLS_AES_128_GCM_SHA256",
            sig_alg: "ecdsa-with-SHA256",
            key_alg: "EC256",
        }),
        ..passthrough()
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_header");
    let v6 =
        Meta { source: address("[2001:db8::57]:51234"), destination: address("[2001:db8::5]:8883"), ..passthrough() };
    for (name, meta) in [("ipv4", passthrough()), ("ipv6", v6)] {
        let len = proxy_header::encode_v1(&meta).len();
        group.bench_with_input(BenchmarkId::new("v1", format!("{name}/{len}B")), &meta, |b, meta| {
            b.iter(|| proxy_header::encode_v1(black_box(meta)))
        });
    }
    for (name, meta) in [("passthrough", passthrough()), ("terminate", terminate())] {
        let header = proxy_header::encode_v2(&meta).expect("header fits");
        let decoded = proxy_header::decode_v2(&header).expect("header decodes");
        assert_eq!(decoded.authority.as_deref(), Some("a.snigate.test"));
        let len = header.len();
        group.bench_with_input(BenchmarkId::new("v2", format!("{name}/{len}B")), &meta, |b, meta| {
            b.iter(|| proxy_header::encode_v2(black_box(meta)))
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
