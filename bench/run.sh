#!/usr/bin/env bash
# Runs the side-by-side harness (../shared/bench/run.sh) with snigate plugged in; every argument
# goes to the harness. Examples:
#   bench/run.sh --quick S1 --proxies haproxy,custom
#   bench/run.sh --proxies direct,haproxy,nginx,sniproxy,custom --out bench/results/full.md
# RUST_LOG defaults to warn: the anchors log nothing per connection, and neither does snigate then
# (its access-log line is at info).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
harness=${BENCH_HARNESS:-$root/../shared/bench}
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
export BENCH_WORK=${BENCH_WORK:-/tmp/tls-bench}   # never write into the shared harness
export RUST_LOG=${RUST_LOG:-warn}
export PROXY_CMD="$target/release/snigate run --config {config}"
export PROXY_NAME=snigate
export PROXY_REUSEPORT=1                            # S4 at 20,000: one process per 20,000-fd cap
export PROXY_CONF_TEMPLATE=$root/bench/routes.yaml.tmpl
exec "$harness/run.sh" "$@"
