#!/usr/bin/env bash
# What an idle MQTT-over-WebSocket session costs next to an idle terminate session (issue 18,
# item 4), S4-style: N sessions through one snigate, each a full TLS 1.3 handshake (ECDSA P-256)
# to a terminate route — one plain, one with `websocket:` (the client completes the upgrade) —
# then idle; RSS of the snigate process before and after, per session. The backend is
# bench/stormload's echo server (holds every connection). Loopback only; the client exits after
# the measurement. Knobs (env): N (3000), REPS (3), SNIGATE (target/release/snigate).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-3000} REPS=${REPS:-3}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
cargo build --release --quiet --manifest-path "$root/bench/stormload/Cargo.toml"
snigate=${SNIGATE:-${CARGO_TARGET_DIR:-$root/target}/release/snigate}
echo_server=$root/bench/stormload/target/release/stormload
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/ws-idle.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=ws.test \
  -addext subjectAltName=DNS:plain.test,DNS:ws.test -keyout "$work/k.pem" -out "$work/c.pem" 2>/dev/null
"$echo_server" echo --listen 127.0.0.1:29180 --lifetime-s 600 >/dev/null 2>&1 & pids+=($!)
cat > "$work/routes.yaml" <<CONF
listen: ["127.0.0.1:29543"]
limits: {max_handshakes: 256}
routes:
  - {name: plain, sni: [plain.test], mode: terminate, tls: {cert: $work/c.pem, key: $work/k.pem, session_resumption: false}, backend: {servers: ["127.0.0.1:29180"]}}
  - {name: ws, sni: [ws.test], mode: terminate, tls: {cert: $work/c.pem, key: $work/k.pem, session_resumption: false}, websocket: {path: /mqtt}, backend: {servers: ["127.0.0.1:29180"]}}
CONF
cat > "$work/client.py" <<'PY'
import socket, ssl, sys, time
sni, n, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
held = []
for i in range(n):
    raw = socket.create_connection(("127.0.0.1", 29543), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    if sni == "ws.test":
        tls.sendall(b"GET /mqtt HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(1024)
        assert head.startswith(b"HTTP/1.1 101"), head
    held.append(tls)
print("ready", flush=True)
sys.stdin.readline()
PY
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
printf '| route | rep | sessions | RSS before KiB | RSS loaded KiB | KiB per session |\n| --- | ---: | ---: | ---: | ---: | ---: |\n'
for rep in $(seq "$REPS"); do
  for sni in plain.test ws.test; do
    RUST_LOG=warn "$snigate" run --config "$work/routes.yaml" 2>/dev/null & proxy=$!; pids+=($proxy)
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/29543) 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    before=$(rss_kib "$proxy")
    coproc client { python3 "$work/client.py" "$sni" "$N" "$work/c.pem"; }
    read -r -t 300 line <&"${client[0]}"
    sleep 1
    loaded=$(rss_kib "$proxy")
    echo >&"${client[1]}"; wait "$client_PID" 2>/dev/null || true
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
    awk -v r="${sni%.test}" -v rep="$rep" -v n="$N" -v b="$before" -v l="$loaded" \
      'BEGIN { printf "| %s | %d | %d | %d | %d | %.1f |\n", r, rep, n, b, l, (l - b) / n }'
  done
done
