#!/usr/bin/env bash
# How `snigate check` time grows with the number of routes (issue 11, defect 3).
#
# Generates passthrough configs and terminate configs whose routes all share one certificate
# and key, at 1k / 10k / 50k routes (override with SIZES="..."), and times
# `target/release/snigate check` on each, RUNS times (default 3): min / median / max wall time
# and the largest resident set. Also times one deeply nested file, which must be refused fast.
# Usage: bench/config_load.sh [--no-build]   (SIZES="1000 10000" RUNS=5 bench/config_load.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES-"1000 10000 50000"}
RUNS=${RUNS:-3}
WORK=$(mktemp -d /tmp/snigate-config-load.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
[[ "${1:-}" == "--no-build" ]] || cargo build --release --quiet
BIN=${BIN:-target/release/snigate}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench \
    -addext "subjectAltName=DNS:*.bench.test" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

gen() { # gen MODE N FILE
    local mode=$1 n=$2 file=$3
    {
        echo 'listen: ["127.0.0.1:0"]'
        echo 'routes:'
        awk -v n="$n" -v mode="$mode" -v dir="$WORK" 'BEGIN {
            for (i = 0; i < n; i++) {
                printf "  - name: r%d\n    sni: [\"h%d.bench.test\"]\n    mode: %s\n", i, i, mode
                if (mode == "terminate")
                    printf "    tls:\n      cert: %s/cert.pem\n      key: %s/key.pem\n", dir, dir
                printf "    backend:\n      servers: [\"127.0.0.1:%d\"]\n", 1024 + i % 60000
            }
        }'
    } >"$file"
}

# time_runs LABEL FILE EXPECTED_EXIT: prints one Markdown table row.
time_runs() {
    local label=$1 file=$2 expected=$3 times=() rss=0 sorted min med max
    for _ in $(seq "$RUNS"); do
        local code=0
        /usr/bin/time -o "$WORK/time" -f "%e %M" "$BIN" check --config "$file" >/dev/null 2>"$WORK/err" || code=$?
        if [[ "$code" != "$expected" ]]; then
            echo "$label: exit $code, expected $expected" >&2; head -n3 "$WORK/err" >&2; exit 1
        fi
        local secs kib
        read -r secs kib < <(tail -n1 "$WORK/time")
        times+=("$secs")
        (( kib > rss )) && rss=$kib
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    min=$(echo "$sorted" | head -n1); max=$(echo "$sorted" | tail -n1)
    med=$(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")
    printf '| %s | %s | %s | %s | %s MiB |\n' "$label" "$min" "$med" "$max" "$(( rss / 1024 ))"
}

echo "snigate check, $RUNS runs each, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)"
echo
echo "| config | min s | median s | max s | max RSS |"
echo "| --- | ---: | ---: | ---: | ---: |"
for n in $SIZES; do
    for mode in passthrough terminate; do
        gen "$mode" "$n" "$WORK/$mode-$n.yaml"
        time_runs "$mode, $n routes" "$WORK/$mode-$n.yaml" 0
    done
done
DEPTH=${DEPTH:-200000}
{ printf 'listen: ["127.0.0.1:0"]\nroutes: [{name: a, mode: tcp, backend: {servers: ["127.0.0.1:1"]}}]\nx: '
  head -c "$DEPTH" /dev/zero | tr '\0' '['; echo; } >"$WORK/deep.yaml"
time_runs "nested $DEPTH levels (refused)" "$WORK/deep.yaml" 1
