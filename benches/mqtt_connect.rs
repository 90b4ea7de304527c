//! The CONNECT step of `mqtt:` routes, once per new connection: parsing the first packet
//! (CONNECTs captured from paho-mqtt 2.2: 3.1.1 with username, password and will; 5.0 with
//! properties too) and, for `mqtt.username: identity`, rewriting its username.
//!
//!     cargo bench --bench mqtt_connect

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use snigate::mqtt::connect::{self, Progress};
use snigate::mqtt::rewrite;

/// `mqtt.max_connect_bytes`' default.
const MAX_CONNECT_BYTES: usize = 8192;

const V311: &[u8] = include_bytes!("../src/proxy/mqtt/testdata/paho-v311-user-will.bin");
const V5: &[u8] = include_bytes!("../src/proxy/mqtt/testdata/paho-v5-user-will-props.bin");

fn parsed(packet: &[u8]) -> connect::Connect {
    match connect::parse(packet, MAX_CONNECT_BYTES) {
        Ok(Progress::Complete(connect)) => connect,
        other => panic!("sample does not parse: {other:?}"),
    }
}

fn connect_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_connect");
    for (name, packet) in [("v311", V311), ("v5", V5)] {
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| connect::parse(black_box(packet), MAX_CONNECT_BYTES))
        });
        let connect = parsed(packet);
        group.bench_function(format!("rewrite_username/{name}"), |b| {
            b.iter(|| rewrite::with_username(black_box(packet), &connect, "device-000042.fleet.example"))
        });
    }
    group.finish();
}

criterion_group!(benches, connect_step);
criterion_main!(benches);
