//! `RouteTable::resolve` on tables of 2, 100 and 10,000 routes, built the way the server builds
//! them: `config::parse` of a routes file. Route 0 is a `tcp` route named as `default`; each other
//! route `tI` is a passthrough tenant with `sni: [tI.example.test, "*.tI.example.test"]` (the
//! exact + wildcard pair of routes.example.yaml), so a table of N routes holds N-1 exact names
//! and N-1 wildcards. Names are looked up in canonical form, as `hello::parse` returns them.
//!
//! - `exact`: `tM.example.test`, M the middle tenant (a hash-map hit);
//! - `wildcard`: `dev.tM.example.test` (misses the map, then scans the wildcards, longest first);
//! - `miss_default`: `device-0042.unknown-tenant.example.test` (misses the map and every wildcard
//!   → default route; longer than every suffix, so each wildcard costs a suffix comparison).
//!
//!     cargo bench --bench routes

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use snigate::config;

fn routes_file(routes: usize) -> String {
    let mut yaml = String::from(
        "listen: [\"127.0.0.1:0\"]\ndefault: fallback\nroutes:\n  - name: fallback\n    mode: tcp\n    backend: {servers: [\"127.0.0.1:1\"]}\n",
    );
    for i in 1..routes {
        let _ = write!(
            yaml,
            "  - name: t{i}\n    sni: [t{i}.example.test, \"*.t{i}.example.test\"]\n    mode: passthrough\n    backend: {{servers: [\"10.0.{}.{}:8883\"]}}\n",
            i / 250,
            i % 250 + 1,
        );
    }
    yaml
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("routes/resolve");
    for routes in [2, 100, 10_000] {
        let config = config::parse(&routes_file(routes), Path::new("bench-routes.yaml"))
            .unwrap_or_else(|errors| panic!("routes file for {routes}: {errors}"));
        let table = config.routes;
        assert_eq!(table.routes().len(), routes);
        let middle = routes / 2;
        let lookups = [
            ("exact", format!("t{middle}.example.test"), format!("t{middle}")),
            ("wildcard", format!("dev.t{middle}.example.test"), format!("t{middle}")),
            ("miss_default", "device-0042.unknown-tenant.example.test".to_string(), "fallback".to_string()),
        ];
        for (kind, name, expected) in &lookups {
            let route = table.resolve(Some(name)).expect("a route or the default");
            assert_eq!(&route.name, expected, "{name} in a table of {routes}");
            group.bench_with_input(BenchmarkId::new(*kind, routes), name.as_str(), |b, name| {
                b.iter(|| table.resolve(black_box(Some(name))).map(|route| route.mode))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
