#!/usr/bin/env bash
# What each proxy does per new connection, side by side (issue 16, step 1): syscalls by name
# (`strace -c` attached to every thread and worker), context switches and the user/kernel split of
# its CPU, for
#   tcp          S3-style: wrk plain HTTP (`Connection: close`) → proxy → nginx origin that reads a
#                PROXY header (snigate and HAProxy send v2, nginx stream v1; sniproxy cannot)
#   passthrough  S2-style: wrk HTTPS (TLS 1.3, SNI a.test) → proxy reads the SNI → nginx HTTPS origin
# snigate, HAProxy 2.6 (nbthread 2), nginx 1.22 stream (2 workers), sniproxy 0.6 (one thread, passthrough only).
# Two runs per proxy and scenario: one plain (CPU and context switches from /proc), one under
# strace (counts only: strace slows the proxy, so its timings mean nothing). Prints Markdown tables.
# Knobs (env): DURATION (5s) STRACE_DURATION (3s) CONNS (16) PROXIES SCENARIOS.
# Loopback only; every run is bounded by its duration.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5s} STRACE_DURATION=${STRACE_DURATION:-3s} CONNS=${CONNS:-16}
PROXIES=${PROXIES:-"snigate haproxy nginx sniproxy"} SCENARIOS=${SCENARIOS:-"tcp passthrough"}
HTTP_PORT=28180 PP_PORT=28181 HTTPS_PORT=28182 PROXY_PORT=28183
grep -q 'a\.test' /etc/hosts || { echo "needs '127.0.0.1 a.test' in /etc/hosts (bench/run.sh adds it)" >&2; exit 1; }
work=$(mktemp -d /tmp/syscalls-bench.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; [[ -f $work/origin.pid ]] && kill "$(cat "$work/origin.pid")" 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
snigate=${SNIGATE:-${CARGO_TARGET_DIR:-$root/target}/release/snigate}
clk_tck=$(getconf CLK_TCK)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=a.test \
  -addext subjectAltName=DNS:a.test -keyout "$work/a.key" -out "$work/a.crt" 2>/dev/null
mkdir -p "$work/www" && : > "$work/www/empty"
cat > "$work/origin.conf" <<CONF
worker_processes 2;
pid $work/origin.pid;
error_log $work/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$HTTP_PORT; root $work/www; }
  server { listen 127.0.0.1:$PP_PORT proxy_protocol; root $work/www; }
  server { listen 127.0.0.1:$HTTPS_PORT ssl; ssl_certificate $work/a.crt; ssl_certificate_key $work/a.key;
           ssl_session_cache off; ssl_session_tickets off; root $work/www; }
}
CONF
nginx -c "$work/origin.conf"

config() { # config PROXY SCENARIO -> the command line that runs the proxy in the foreground
  local proxy=$1 scenario=$2
  case $proxy-$scenario in
    snigate-tcp) printf 'listen: ["127.0.0.1:%s"]\ndefault: t\nroutes:\n  - {name: t, mode: tcp, backend: {servers: ["127.0.0.1:%s"], proxy_protocol: v2}}\n' \
        "$PROXY_PORT" "$PP_PORT" > "$work/routes.yaml" ;;
    snigate-passthrough) printf 'listen: ["127.0.0.1:%s"]\nroutes:\n  - {name: a, sni: [a.test], mode: passthrough, backend: {servers: ["127.0.0.1:%s"], proxy_protocol: none}}\n' \
        "$PROXY_PORT" "$HTTPS_PORT" > "$work/routes.yaml" ;;
    haproxy-tcp) printf 'global\n  maxconn 9000\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:%s\n  default_backend o\nbackend o\n  server o 127.0.0.1:%s send-proxy-v2\n' \
        "$PROXY_PORT" "$PP_PORT" > "$work/haproxy.cfg" ;;
    haproxy-passthrough) printf 'global\n  maxconn 9000\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:%s\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  use_backend o if { req_ssl_sni -i a.test }\nbackend o\n  server o 127.0.0.1:%s\n' \
        "$PROXY_PORT" "$HTTPS_PORT" > "$work/haproxy.cfg" ;;
    nginx-tcp) printf 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes 2;\npid %s/nginx.pid;\nerror_log %s/nginx.err warn;\nevents { worker_connections 8000; }\nstream { server { listen 127.0.0.1:%s; proxy_pass 127.0.0.1:%s; proxy_protocol on; } }\n' \
        "$work" "$work" "$PROXY_PORT" "$PP_PORT" > "$work/nginx.conf" ;;
    nginx-passthrough) printf 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes 2;\npid %s/nginx.pid;\nerror_log %s/nginx.err warn;\nevents { worker_connections 8000; }\nstream { map $ssl_preread_server_name $be { default 127.0.0.1:%s; }\n  server { listen 127.0.0.1:%s; ssl_preread on; proxy_pass $be; } }\n' \
        "$work" "$work" "$HTTPS_PORT" "$PROXY_PORT" > "$work/nginx.conf" ;;
    sniproxy-passthrough) printf 'user root\npidfile %s/sniproxy.pid\nlistener 127.0.0.1:%s {\n  protocol tls\n  table routes\n}\ntable routes {\n  ^a\\.test$ 127.0.0.1:%s\n}\n' \
        "$work" "$PROXY_PORT" "$HTTPS_PORT" > "$work/sniproxy.conf" ;;
    *) return 1 ;;
  esac
}
start() { # start PROXY -> the pid of its main process
  case $1 in
    snigate) RUST_LOG=warn "$snigate" run --config "$work/routes.yaml" >/dev/null 2>&1 & ;;
    haproxy) haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
    nginx) nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & ;;
    sniproxy) sniproxy -f -c "$work/sniproxy.conf" >/dev/null 2>&1 & ;;
  esac
  local pid=$! i
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.05; done
  sleep 0.3
  echo "$pid"
}
# Every thread of the proxy's processes (nginx: master and workers).
threads() { local p; for p in $1 $(pgrep -P "$1"); do ls "/proc/$p/task"; done | tr '\n' ' '; }
sum_stat() { # sum_stat FIELD PIDS… : utime (14) or stime (15) of processes, in ticks
  local field=$1 t=0 p; shift
  for p in "$@"; do t=$((t + $(awk -v f="$field" '{ sub(/^.*\) /, ""); print $(f - 2) }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo $t
}
switches() { # voluntary + involuntary context switches of every thread of the processes
  local p t=0
  for p in "$@"; do t=$((t + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'))); done
  echo $t
}
url() { [[ $1 == tcp ]] && echo "http://127.0.0.1:$PROXY_PORT/empty" || echo "https://a.test:$PROXY_PORT/empty"; }
requests_of() { awk '/requests in/ { print $1 }' <<< "$1"; }

printf 'scenario\tproxy\tuser_us\tsys_us\tswitches\tsyscalls\ttop\n' > "$work/raw.tsv"
for scenario in $SCENARIOS; do
  for proxy in $PROXIES; do
    config "$proxy" "$scenario" || continue
    pid=$(start "$proxy")
    read -r -a procs <<< "$pid $(pgrep -P "$pid" | tr '\n' ' ')"
    wrk -t1 -c"$CONNS" -d1s -H 'Connection: close' "$(url "$scenario")" >/dev/null 2>&1 || true
    u0=$(sum_stat 14 "${procs[@]}") s0=$(sum_stat 15 "${procs[@]}") x0=$(switches "${procs[@]}")
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -H 'Connection: close' "$(url "$scenario")" 2>&1 || true)
    u1=$(sum_stat 14 "${procs[@]}") s1=$(sum_stat 15 "${procs[@]}") x1=$(switches "${procs[@]}")
    n=$(requests_of "$out")
    # Counts under strace, from every thread that exists now (the runtime's and workers' threads).
    tids=$(threads "$pid")
    # shellcheck disable=SC2086
    strace -c -f -q $(printf -- '-p %s ' $tids) -o "$work/strace.txt" & spid=$!
    sleep 1
    out=$(wrk -t1 -c"$CONNS" -d"$STRACE_DURATION" -H 'Connection: close' "$(url "$scenario")" 2>&1 || true)
    kill -INT $spid; wait $spid 2>/dev/null || true
    ns=$(requests_of "$out")
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    python3 - "$work/strace.txt" "${ns:-0}" "$scenario" "$proxy" "$n" "$((u1 - u0))" "$((s1 - s0))" "$((x1 - x0))" "$clk_tck" >> "$work/raw.tsv" <<'PY'
import sys
path, traced, scenario, proxy, n, user, system, switches, hz = sys.argv[1:]
traced, n, hz = int(traced), int(n or 0), int(hz)
calls = {}
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        calls[parts[-1]] = int(parts[3])
total = sum(calls.values())
per = lambda v, m: v / m if m else 0
top = " ".join(f"{name}:{per(count, traced):.1f}" for name, count in sorted(calls.items(), key=lambda kv: -kv[1])[:10])
print(f"{scenario}\t{proxy}\t{per(int(user) / hz * 1e6, n):.1f}\t{per(int(system) / hz * 1e6, n):.1f}\t{per(int(switches), n):.2f}\t{per(total, traced):.1f}\t{top}")
PY
    sleep 1
  done
done
cp "$work/raw.tsv" "${OUT_RAW:-/tmp/syscalls-raw.tsv}"
python3 - "$work/raw.tsv" "$DURATION" "$CONNS" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"wrk -t1 -c{sys.argv[3]} -d{sys.argv[2]}, Connection: close; per new connection (one request each)\n")
print("| scenario | proxy | user µs | kernel µs | context switches | syscalls (strace) | most frequent, per connection |")
print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
for r in rows:
    print(f"| {r['scenario']} | {r['proxy']} | {r['user_us']} | {r['sys_us']} | {r['switches']} | {r['syscalls']} | {r['top']} |")
PY
