#!/usr/bin/env bash
# What a resumed TLS handshake costs next to a full one (issue 15): S1-style new connections
# (wrk, TLS 1.3, SNI a.test, `Connection: close`, so one handshake per request) through a terminate
# proxy to a plain-HTTP nginx origin serving an empty file, with resumption off and on, for
# snigate, HAProxy 2.6 and nginx 1.22 stream. wrk (OpenSSL) offers the session it got last, so
# with resumption on most handshakes after the first are resumed. The share that was is read from
# snigate's snigate_tls_handshakes_total{resumed} and HAProxy's SslFrontendSessionReuse_pct (nginx
# has no such counter); an `openssl s_client -sess_in` probe checks each setup.
# Prints a Markdown table: proxy CPU per handshake and handshakes/s, median [min–max] over REPS.
# Knobs (env): REPS (3) DURATION (5s) CONNS (16) WRK_THREADS (1) PROXIES.
# Loopback only; wrk runs are bounded by DURATION.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3} DURATION=${DURATION:-5s} CONNS=${CONNS:-16} WRK_THREADS=${WRK_THREADS:-1}
PROXIES=${PROXIES:-"snigate haproxy nginx"}
ORIGIN_PORT=${ORIGIN_PORT:-28080} PROXY_PORT=${PROXY_PORT:-28443} ADMIN_PORT=${ADMIN_PORT:-28444}
grep -q 'a\.test' /etc/hosts || { echo "needs '127.0.0.1 a.test' in /etc/hosts (bench/run.sh adds it)" >&2; exit 1; }
work=$(mktemp -d /tmp/resumption-bench.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; [[ -f $work/origin.pid ]] && kill "$(cat "$work/origin.pid")" 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
snigate=${SNIGATE:-${CARGO_TARGET_DIR:-$root/target}/release/snigate}
clk_tck=$(getconf CLK_TCK)

# Throwaway ECDSA P-256 certificate for a.test (the anchors' bench uses the same kind).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=a.test \
  -addext subjectAltName=DNS:a.test -keyout "$work/a.key" -out "$work/a.crt" 2>/dev/null
cat "$work/a.crt" "$work/a.key" > "$work/a.pem"
mkdir -p "$work/www" && : > "$work/www/empty"
cat > "$work/origin.conf" <<CONF
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$ORIGIN_PORT; root $work/www; } }
CONF
nginx -c "$work/origin.conf"

config() { # config PROXY on|off
  local on=$2
  case $1 in
    snigate) cat > "$work/routes.yaml" <<CONF
listen: ["127.0.0.1:$PROXY_PORT"]
admin: "127.0.0.1:$ADMIN_PORT"
default: a
routes:
  - name: a
    sni: [a.test]
    mode: terminate
    tls: {cert: $work/a.crt, key: $work/a.key, session_resumption: $([[ $on == on ]] && echo true || echo false)}
    backend: {servers: ["127.0.0.1:$ORIGIN_PORT"], proxy_protocol: none}
CONF
    ;;
    haproxy) cat > "$work/haproxy.cfg" <<CONF
global
  maxconn 9000
  stats socket $work/haproxy.sock
  $([[ $on == on ]] && echo "tune.ssl.cachesize 20000" || echo "tune.ssl.cachesize 0")
  ssl-default-bind-options ssl-min-ver TLSv1.2 $([[ $on == off ]] && echo no-tls-tickets)
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$PROXY_PORT ssl crt $work/a.pem
  default_backend origin
backend origin
  server o 127.0.0.1:$ORIGIN_PORT
CONF
    ;;
    nginx) cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 8000; }
stream {
  server {
    listen 127.0.0.1:$PROXY_PORT ssl;
    ssl_certificate $work/a.crt;
    ssl_certificate_key $work/a.key;
    ssl_session_cache $([[ $on == on ]] && echo "shared:SSL:10m" || echo off);
    ssl_session_tickets $on;
    proxy_pass 127.0.0.1:$ORIGIN_PORT;
  }
}
CONF
    ;;
  esac
}
start() { # start PROXY -> pids of its processes (space separated)
  case $1 in
    snigate) RUST_LOG=warn "$snigate" run --config "$work/routes.yaml" >/dev/null 2>"$work/snigate.err" & ;;
    haproxy) haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>"$work/haproxy.err" & ;;
    nginx) nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & ;;
  esac
  local pid=$! i
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.05; done
  echo "$pid $(pgrep -P "$pid" | tr '\n' ' ')"
}
ticks() { local p t=0; for p in "$@"; do t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
reused_of_3() { # an OpenSSL client offering its saved session three times
  local n=0 i
  sleep 1 | openssl s_client -connect 127.0.0.1:$PROXY_PORT -servername a.test -sess_out "$work/sess" >/dev/null 2>&1 || true
  for i in 1 2 3; do
    sleep 1 | openssl s_client -connect 127.0.0.1:$PROXY_PORT -servername a.test -sess_in "$work/sess" 2>/dev/null | grep -q '^Reused' && n=$((n + 1))
  done
  echo $n
}

resumed_pct() { # the share of the run's handshakes that were resumed, where the proxy counts it
  case $1 in
    snigate) curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
      /^snigate_tls_handshakes_total/ { if ($0 ~ /resumed="true"/) r += $NF; else f += $NF }
      END { if (r + f > 0) printf "%.0f", 100 * r / (r + f); else print "-" }' ;;
    haproxy) python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show info\n")
info = b"".join(iter(lambda: s.recv(65536), b"")).decode()
print(next((l.split(":")[1].strip() for l in info.splitlines() if l.startswith("SslFrontendSessionReuse_pct")), "-"))' "$work/haproxy.sock" ;;
    *) echo "-" ;;
  esac
}

printf 'proxy\tresumption\trep\trequests\tcpu_us_per_handshake\thandshakes_per_s\treused_of_3\tresumed_pct\n' > "$work/raw.tsv"
for rep in $(seq "$REPS"); do
  for proxy in $PROXIES; do
    for on in off on; do
      config "$proxy" "$on"
      read -r -a pids <<< "$(start "$proxy")"
      wrk -t"$WRK_THREADS" -c"$CONNS" -d1s -H 'Connection: close' "https://a.test:$PROXY_PORT/empty" >/dev/null 2>&1 || true
      c0=$(ticks "${pids[@]}")
      out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" -H 'Connection: close' "https://a.test:$PROXY_PORT/empty" 2>&1 || true)
      c1=$(ticks "${pids[@]}")
      pct=$(resumed_pct "$proxy")
      reused=$(reused_of_3)
      kill "${pids[0]}" 2>/dev/null; wait "${pids[0]}" 2>/dev/null || true
      requests=$(awk '/requests in/ { print $1 }' <<< "$out")
      seconds=$(awk '/requests in/ { sub(/s,$/, "", $5); print $5 }' <<< "$out")
      awk -v p="$proxy" -v on="$on" -v rep="$rep" -v n="${requests:-0}" -v d="${seconds:-1}" -v t0="$c0" -v t1="$c1" \
          -v hz="$clk_tck" -v r="$reused" -v pct="$pct" 'BEGIN {
        printf "%s\t%s\t%d\t%d\t%.1f\t%.0f\t%d\t%s\n", p, on, rep, n, (n > 0 ? (t1 - t0) / hz * 1e6 / n : 0), n / d, r, pct }' >> "$work/raw.tsv"
      sleep 1
    done
  done
done

cp "$work/raw.tsv" "${OUT_RAW:-/tmp/resumption-raw.tsv}"
python3 - "$work/raw.tsv" "$REPS" "$DURATION" "$CONNS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def cell(values):
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"
print(f"{sys.argv[2]} reps × {sys.argv[3]} wrk, {sys.argv[4]} connections, TLS 1.3, Connection: close\n")
print("| proxy | resumption | proxy CPU µs/handshake | handshakes/s | resumed share (proxy's count) | OpenSSL probe resumed (of 3) |")
print("| --- | --- | --- | --- | --- | --- |")
for proxy in dict.fromkeys(r["proxy"] for r in rows):
    for on in ("off", "on"):
        mine = [r for r in rows if r["proxy"] == proxy and r["resumption"] == on]
        cpu = [float(r["cpu_us_per_handshake"]) for r in mine]
        rate = [float(r["handshakes_per_s"]) for r in mine]
        reused = sorted({r["reused_of_3"] for r in mine})
        pct = "/".join(sorted({r["resumed_pct"] + ("%" if r["resumed_pct"] != "-" else "") for r in mine}))
        print(f"| {proxy} | {on} | {cell(cpu)} | {cell(rate)} | {pct} | {'/'.join(reused)} |")
PY
