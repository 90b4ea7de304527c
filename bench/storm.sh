#!/usr/bin/env bash
# A storm benchmark (issue 17, item 5): does one tenant's reconnect storm hurt another tenant's new
# connections and the live sessions? Through a TLS-terminating proxy on loopback to a plain TCP
# echo backend (bench/stormload's `echo`):
#   setup  LIVE live sessions (half tenant A `a.storm.test`, half tenant B `b.storm.test`) open and
#          echo 64 B every 100 ms;
#   quiet  QUIET_S seconds of tenant B opening B_RATE new connections per second (full TLS 1.3
#          handshake, then close) beside the echoes;
#   storm  tenant A's STORM_CONNS connections start at once, STORM_INFLIGHT connecting at a time; a
#          refused attempt (alert, close, reset, timeout) is retried after 1 s, up to 20 attempts;
#          B and the echoes go on; it ends when every A connection is connected or given up, or
#          after STORM_CAP_S;
# then one report per proxy: B's handshake latency and the echo RTT quiet vs storm, A's time to
# connect all, A's refusals by kind, the proxy's CPU (utime+stime of its processes) per phase, and
# the live sessions lost (any echo error, EOF or 10 s stall).
# Proxies (PROXIES), each configured with its nearest equivalent of per-tenant storm limits:
#   snigate              limits.max_handshakes GLOBAL_MAX_HANDSHAKES, and tenant A's route limits
#                        {max_handshakes: A_MAX_HANDSHAKES, handshakes_per_second: A_RATE,
#                        handshake_burst: A_BURST}
#   snigate-global-only  the same without routes[].limits
#   haproxy              a TCP frontend that reads the ClientHello, tracks req.ssl_sni in a
#                        stick-table and rejects tenant A above HAPROXY_A_RATE new connections per
#                        second (sc0_gpc0_rate over 1 s), chained over an abstract socket to the
#                        SSL frontend (HAProxy has no per-SNI handshake concurrency limit)
#   haproxy-plain        one SSL frontend, no limit (maxsslrate/rate-limit sessions are global:
#                        they would slow tenant B as much as A)
#   nginx                stream, one TLS server, no limit: stream has no limit_req, and limit_conn
#                        runs before the TLS phase (no SNI yet) and counts whole sessions
# Prints the knobs and two Markdown tables, one row per proxy and repetition.
# Knobs (env): STORM_CONNS (3000) STORM_INFLIGHT (500) B_RATE (20) LIVE (200) QUIET_S (10)
#   STORM_CAP_S (60) REPS (1) PROXIES ("snigate snigate-global-only haproxy nginx")
#   GLOBAL_MAX_HANDSHAKES (64) A_MAX_HANDSHAKES (16) A_RATE (300) A_BURST (300)
#   HAPROXY_A_RATE (A_RATE) SNIGATE (binary; default target/release/snigate, built if missing)
#   ECHO_PORT PROXY_PORT ADMIN_PORT (29080 29443 29444) OUT_RAW (/tmp/storm-raw.jsonl) KEEP.
# Loopback only; every phase is bounded in time, every connection in attempts and time.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STORM_CONNS=${STORM_CONNS:-3000} STORM_INFLIGHT=${STORM_INFLIGHT:-500} B_RATE=${B_RATE:-20}
LIVE=${LIVE:-200} QUIET_S=${QUIET_S:-10} STORM_CAP_S=${STORM_CAP_S:-60} REPS=${REPS:-1}
PROXIES=${PROXIES:-"snigate snigate-global-only haproxy nginx"}
GLOBAL_MAX_HANDSHAKES=${GLOBAL_MAX_HANDSHAKES:-64}
A_MAX_HANDSHAKES=${A_MAX_HANDSHAKES:-16} A_RATE=${A_RATE:-300} A_BURST=${A_BURST:-300}
HAPROXY_A_RATE=${HAPROXY_A_RATE:-$A_RATE}
ECHO_PORT=${ECHO_PORT:-29080} PROXY_PORT=${PROXY_PORT:-29443} ADMIN_PORT=${ADMIN_PORT:-29444}
OUT_RAW=${OUT_RAW:-/tmp/storm-raw.jsonl}

work=$(mktemp -d /tmp/storm-bench.XXXXXX)
pids=() # every process this script started, ended by pid at exit
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" # 3,000+ sessions: two descriptors each in the proxy, more in HAProxy's chain
started=$(date +%s)

snigate=${SNIGATE:-${CARGO_TARGET_DIR:-$root/target}/release/snigate}
if [[ " $PROXIES " == *" snigate"* && -z ${SNIGATE:-} && ! -x $snigate ]]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
cargo build --release --quiet --manifest-path "$root/bench/stormload/Cargo.toml"
load=${CARGO_TARGET_DIR:-$root/bench/stormload/target}/release/stormload
clk_tck=$(getconf CLK_TCK)

# Throwaway ECDSA P-256 CA and server certificates (the client trusts only this CA). nginx 1.22
# stream picks no certificate by SNI, so it serves one naming both tenants.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=storm-bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
leaf() { # leaf NAME SUBJECT_ALT_NAMES
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$2" > "$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
    -extfile "$work/$1.ext" -out "$work/$1.crt" 2>/dev/null
  cat "$work/$1.crt" "$work/$1.key" > "$work/$1.pem"
}
leaf a DNS:a.storm.test
leaf b DNS:b.storm.test
leaf ab DNS:a.storm.test,DNS:b.storm.test

describe() { # the knobs of one proxy, for the report
  case $1 in
    snigate) echo "snigate: limits {max_handshakes: $GLOBAL_MAX_HANDSHAKES}; tenant-a limits {max_handshakes: $A_MAX_HANDSHAKES, handshakes_per_second: $A_RATE, handshake_burst: $A_BURST}; tenant-b none; session_resumption false; 2 runtime threads (default)" ;;
    snigate-global-only) echo "snigate-global-only: limits {max_handshakes: $GLOBAL_MAX_HANDSHAKES}; no routes[].limits; session_resumption false" ;;
    haproxy) echo "haproxy: TCP frontend, inspect-delay 5s, stick-table on req.ssl_sni storing gpc0_rate(1s); tenant A rejected (tcp-request content reject: the client sees a close) when sc0_gpc0_rate > $HAPROXY_A_RATE/s; chained over abns@ to the SSL frontend (crt a, crt b); global maxconn 9000, tune.ssl.cachesize 0, no-tls-tickets, nbthread 2 (default). Cannot: a per-tenant handshake concurrency limit (sc conn_cur counts whole sessions), a burst distinct from the rate" ;;
    haproxy-plain) echo "haproxy-plain: one SSL frontend (crt a, crt b), global maxconn 9000, no rate limit (maxsslrate and rate-limit sessions are per process/frontend: they would throttle tenant B alike)" ;;
    nginx) echo "nginx: stream, worker_processes 2, one TLS server (one certificate for both names), ssl_session_cache off, tickets off, ssl_handshake_timeout 10s; no limit. Cannot: stream has no limit_req (no rate limit at all), and limit_conn runs before the TLS phase (\$ssl_server_name is empty then) and counts whole sessions, so no per-tenant handshake limit" ;;
  esac
}

config() { # config PROXY: writes its configuration; fails when this build or version refuses it
  case $1 in
    snigate | snigate-global-only)
      local a_limits=""
      [[ $1 == snigate ]] && a_limits="    limits: {max_handshakes: $A_MAX_HANDSHAKES, handshakes_per_second: $A_RATE, handshake_burst: $A_BURST}"
      cat > "$work/routes.yaml" <<CONF
listen: ["127.0.0.1:$PROXY_PORT"]
admin: "127.0.0.1:$ADMIN_PORT"
limits:
  max_handshakes: $GLOBAL_MAX_HANDSHAKES
  drain_timeout: 1s
routes:
  - name: tenant-a
    sni: ["a.storm.test"]
    mode: terminate
    tls: {cert: $work/a.crt, key: $work/a.key, session_resumption: false}
$a_limits
    backend: {servers: ["127.0.0.1:$ECHO_PORT"], proxy_protocol: none}
  - name: tenant-b
    sni: ["b.storm.test"]
    mode: terminate
    tls: {cert: $work/b.crt, key: $work/b.key, session_resumption: false}
    backend: {servers: ["127.0.0.1:$ECHO_PORT"], proxy_protocol: none}
CONF
      "$snigate" check --config "$work/routes.yaml" >"$work/check.log" 2>&1 || { cat "$work/check.log" >&2; return 1; }
      ;;
    haproxy | haproxy-plain)
      {
        cat <<CONF
global
  maxconn 9000
  stats socket $work/haproxy.sock
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
backend echo
  server echo 127.0.0.1:$ECHO_PORT
CONF
        if [[ $1 == haproxy ]]; then
          cat <<CONF
frontend storm_tcp
  bind 127.0.0.1:$PROXY_PORT
  tcp-request inspect-delay 5s
  stick-table type string len 64 size 1k expire 60s store gpc0,gpc0_rate(1s)
  tcp-request content reject if !{ req.ssl_hello_type 1 }
  tcp-request content track-sc0 req.ssl_sni
  tcp-request content reject if { req.ssl_sni -i a.storm.test } { sc0_gpc0_rate gt $HAPROXY_A_RATE }
  tcp-request content sc-inc-gpc0(0)
  default_backend storm_tls
backend storm_tls
  server tls abns@storm-bench-tls
frontend storm_tls_in
  bind abns@storm-bench-tls ssl crt $work/a.pem crt $work/b.pem
  default_backend echo
CONF
        else
          cat <<CONF
frontend storm
  bind 127.0.0.1:$PROXY_PORT ssl crt $work/a.pem crt $work/b.pem
  default_backend echo
CONF
        fi
      } > "$work/haproxy.cfg"
      haproxy -c -q -f "$work/haproxy.cfg" >&2
      ;;
    nginx)
      cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 9000; }
stream {
  proxy_timeout 600s;
  proxy_connect_timeout 5s;
  server {
    listen 127.0.0.1:$PROXY_PORT ssl;
    ssl_certificate $work/ab.crt;
    ssl_certificate_key $work/ab.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    ssl_handshake_timeout 10s;
    proxy_pass 127.0.0.1:$ECHO_PORT;
  }
}
CONF
      nginx -t -q -c "$work/nginx.conf" -p "$work" >&2
      ;;
    *) echo "unknown proxy $1 (snigate snigate-global-only haproxy haproxy-plain nginx)" >&2; return 1 ;;
  esac
}

start() { # start PROXY: runs it in the background; sets proxy_pid and proxy_pids (with workers)
  case $1 in
    snigate*) RUST_LOG=warn "$snigate" run --config "$work/routes.yaml" >/dev/null 2>>"$work/$1.log" & ;;
    haproxy*) haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>>"$work/$1.log" & ;;
    nginx) nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' >/dev/null 2>>"$work/$1.log" & ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
  local i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break; sleep 0.05; done
  sleep 0.3 # nginx's workers
  proxy_pids=$(echo "$proxy_pid" $(pgrep -P "$proxy_pid") | tr ' ' ',')
}
stop() { # stop PID: SIGTERM, then SIGKILL after 5 s
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
refusals() { # what the proxy counted of its refusals, where it counts them
  case $1 in
    snigate*) curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
      /^snigate_connection_closes_total\{/ && /reason="(handshake|route)_/ && $NF > 0 {
        match($0, /route="[^"]*"/); r = substr($0, RSTART + 7, RLENGTH - 8)
        match($0, /reason="[^"]*"/); c = substr($0, RSTART + 8, RLENGTH - 9)
        s = s (s ? ", " : "") r " " c " " $NF }
      END { print (s ? s : "none") }' ;;
    haproxy*) python3 -c '
import csv, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
text = b"".join(iter(lambda: s.recv(65536), b"")).decode().lstrip("# ")
out = ["%s denied_req %s denied_conn %s denied_sess %s" % (r["pxname"], r["dreq"], r["dcon"], r["dses"])
       for r in csv.DictReader(text.splitlines()) if r["svname"] == "FRONTEND"]
print(", ".join(out))' "$work/haproxy.sock" 2>/dev/null || echo "-" ;;
    *) echo "-" ;;
  esac
}

"$load" echo --listen "127.0.0.1:$ECHO_PORT" --lifetime-s 1800 2>>"$work/echo.log" &
pids+=("$!")
for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$ECHO_PORT") 2>/dev/null && break; sleep 0.05; done

: > "$work/raw.jsonl"
: > "$work/notes.txt"
for rep in $(seq "$REPS"); do
  for proxy in $PROXIES; do
    if ! config "$proxy"; then
      echo "- $proxy: skipped (its configuration was refused, see above)" >> "$work/notes.txt"
      continue
    fi
    ((rep == 1)) && describe "$proxy" | sed 's/^/- /' >> "$work/notes.txt"
    echo "storm.sh: rep $rep, $proxy" >&2
    start "$proxy"
    t0=$(date +%s)
    "$load" run --addr "127.0.0.1:$PROXY_PORT" --ca "$work/ca.pem" --label "$proxy" \
      --conns "$STORM_CONNS" --inflight "$STORM_INFLIGHT" --b-rate "$B_RATE" --live "$LIVE" \
      --quiet-s "$QUIET_S" --cap-s "$STORM_CAP_S" --proxy-pids "$proxy_pids" --clk-tck "$clk_tck" \
      > "$work/run.jsonl" || echo "storm.sh: stormload failed for $proxy (rep $rep)" >&2
    echo "- $proxy rep $rep: $(($(date +%s) - t0)) s; the proxy's own count of refusals: $(refusals "$proxy")" \
      >> "$work/notes.txt"
    sed "s/^{/{\"rep\":$rep,/" "$work/run.jsonl" >> "$work/raw.jsonl"
    stop "$proxy_pid"
    sleep 2
  done
done

cp "$work/raw.jsonl" "$OUT_RAW"
header="Storm: $STORM_CONNS tenant-A connections ($STORM_INFLIGHT in flight, at most 20 attempts each, 1 s back-off, \
cap $STORM_CAP_S s); tenant B $B_RATE new connections/s; $LIVE live sessions (half A, half B) echoing 64 B every \
100 ms; quiet phase $QUIET_S s. TLS 1.3 full handshakes, ECDSA P-256, X25519. Loopback; the proxy, the client \
and the echo backend share the machine's $(nproc) CPUs."
python3 - "$work/raw.jsonl" "$work/notes.txt" "$(($(date +%s) - started))" "$header" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = {}
for r in rows:
    runs.setdefault((r["label"], r["rep"]), {})[r["phase"]] = r

def ms(summary, key):
    v = summary.get(key)
    return "—" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
def pair(quiet, storm, metric, key):
    return f"{ms(quiet[metric], key)} / {ms(storm[metric], key)}"
def kinds(counts):
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "0"

print(sys.argv[4] + "\n")
print("Configurations:\n")
print(open(sys.argv[2]).read())
print("Tenant B and the live sessions (quiet / storm; latencies in ms; B's handshake includes the TCP connect):\n")
print("| proxy | rep | B handshake p50 | B handshake p99 | B refused (of attempts) | echo RTT p50 | echo RTT p99 | echo RTT max | echo p99 storm ÷ quiet | echoes (n) | live lost |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (label, rep), p in runs.items():
    q, s, summary = p.get("quiet"), p.get("storm"), p.get("summary", {})
    if not q or not s:
        print(f"| {label} | {rep} | run incomplete | | | | | | | | |")
        continue
    qe, se = q["echo_ms"].get("p99"), s["echo_ms"].get("p99")
    ratio = f"{se / qe:.1f}×" if qe and se else "—"
    b_refused = f"{sum(q['b_refused'].values())} of {q['b_attempts']} / {sum(s['b_refused'].values())} of {s['b_attempts']}"
    if s["b_refused"]:
        b_refused += f" ({kinds(s['b_refused'])})"
    lost = summary.get("live_lost", "?")
    lost = f"{lost} of {summary.get('live_established', '?')}" + (f" ({kinds(summary['live_lost_by'])})" if lost else "")
    print(f"| {label} | {rep} | {pair(q, s, 'b_handshake_ms', 'p50')} | {pair(q, s, 'b_handshake_ms', 'p99')} | "
          f"{b_refused} | {pair(q, s, 'echo_ms', 'p50')} | {pair(q, s, 'echo_ms', 'p99')} | {pair(q, s, 'echo_ms', 'max')} | "
          f"{ratio} | {q['echo_ms']['n']} / {s['echo_ms']['n']} | {lost} |")
print("\nTenant A's storm and CPU (proxy CPU = utime+stime of its processes; % of one core over the phase):\n")
print("| proxy | rep | A connected | time to connect all | A attempts | A refused (by kind) | gave up / pending | A handshake p50 / p99 (ms) | proxy CPU quiet | proxy CPU storm | client CPU storm |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (label, rep), p in runs.items():
    q, s = p.get("quiet"), p.get("storm")
    if not q or not s:
        continue
    every = s.get("a_all_connected_s")
    every = f"{every:.1f} s" if every is not None else f"not all (storm ended at {s['storm_s']:.0f} s)"
    refused = kinds(s["a_refused"])
    if s["a_alerts"]:
        refused += f" [alerts: {kinds(s['a_alerts'])}]"
    print(f"| {label} | {rep} | {s['a_connected']} of {s['a_conns']} | {every} | {s['a_attempts']} | {refused} | "
          f"{s['a_gave_up']} / {s['a_pending']} | {ms(s['a_handshake_ms'], 'p50')} / {ms(s['a_handshake_ms'], 'p99')} | "
          f"{q['proxy_cpu_ms'] / 1000:.2f} s ({q['proxy_cpu_pct']:.0f} %) | {s['proxy_cpu_ms'] / 1000:.2f} s ({s['proxy_cpu_pct']:.0f} %) | "
          f"{s['client_cpu_ms'] / 1000:.2f} s |")
print(f"\nWhole run: {sys.argv[3]} s (build included).")
PY
