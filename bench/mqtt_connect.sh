#!/usr/bin/env bash
# What reading the MQTT CONNECT costs on new connections (issue 13): S3-style plain-TCP sessions,
# each a new connection that sends a CONNECT, reads the CONNACK of a real Mosquitto and ends with
# DISCONNECT, through
#   snigate-tcp     a `tcp` route without `mqtt:` (bytes are spliced, never looked at)
#   snigate-mqtt    the same route with `mqtt: {}` (the CONNECT is read and parsed first)
#   haproxy-tcp     HAProxy `mode tcp`
#   haproxy-mqtt    HAProxy waiting for a valid CONNECT: `tcp-request content reject unless
#                   { req.payload(0,0),mqtt_is_valid }` (its documented MQTT inspection)
#   direct          the load generator straight to Mosquitto
# No PROXY header (Debian's Mosquitto 2.0 reads none). Per configuration and repetition: COUNT
# sessions from THREADS client threads; the proxy's CPU (utime+stime of its processes) per session
# and the sessions per second. Prints a Markdown table: median [min–max] over REPS.
# Knobs (env): REPS (5) COUNT (20000) THREADS (4) VERSION (4 = 3.1.1, 5) CONFIGS.
# Loopback only; every run is bounded in count (and each I/O by a 5 s timeout).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-5} COUNT=${COUNT:-20000} THREADS=${THREADS:-4} VERSION=${VERSION:-4}
CONFIGS=${CONFIGS:-"direct snigate-tcp snigate-mqtt haproxy-tcp haproxy-mqtt"}
BROKER_PORT=${BROKER_PORT:-28831} PROXY_PORT=${PROXY_PORT:-28832}
work=$(mktemp -d /tmp/mqtt-connect-bench.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
cargo build --release --quiet --manifest-path "$root/bench/mqttload/Cargo.toml"
snigate=${SNIGATE:-${CARGO_TARGET_DIR:-$root/target}/release/snigate}
load=$root/bench/mqttload/target/release/mqttload
clk_tck=$(getconf CLK_TCK)

cat > "$work/mosquitto.conf" <<CONF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
log_type none
max_keepalive 600
CONF
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &

snigate_config() { # snigate_config MQTT_LINE
  cat <<CONF
listen: ["127.0.0.1:$PROXY_PORT"]
default: mq
routes:
  - name: mq
    mode: tcp
$1
    backend:
      servers: ["127.0.0.1:$BROKER_PORT"]
      proxy_protocol: none
CONF
}
haproxy_config() { # haproxy_config INSPECTION_LINES
  cat <<CONF
global
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend mq
  bind 127.0.0.1:$PROXY_PORT
$1
  default_backend broker
backend broker
  server mosquitto 127.0.0.1:$BROKER_PORT
CONF
}

start() { # start CONFIG -> prints the proxy's pid (none for direct)
  case $1 in
    direct) return 0 ;;
    snigate-tcp) snigate_config "" > "$work/routes.yaml" ;;
    snigate-mqtt) snigate_config "    mqtt: {}" > "$work/routes.yaml" ;;
    haproxy-tcp) haproxy_config "" > "$work/haproxy.cfg" ;;
    haproxy-mqtt) haproxy_config "  tcp-request inspect-delay 10s
  tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }" > "$work/haproxy.cfg" ;;
  esac
  case $1 in
    snigate-*) RUST_LOG=warn "$snigate" run --config "$work/routes.yaml" >/dev/null 2>"$work/$1.log" & ;;
    haproxy-*) haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>"$work/$1.log" & ;;
  esac
  local pid=$! i
  for i in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break
    sleep 0.05
  done
  echo "$pid"
}
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

sleep 0.5
printf 'config\trep\tsessions\terrors\tcpu_us_per_session\tsessions_per_s\n' > "$work/raw.tsv"
for rep in $(seq "$REPS"); do
  for config in $CONFIGS; do
    pid=$(start "$config")
    port=$PROXY_PORT; [[ $config == direct ]] && port=$BROKER_PORT
    "$load" "127.0.0.1:$port" "$THREADS" 1000 "$VERSION" >/dev/null   # warm-up
    c0=0; [[ -n $pid ]] && c0=$(ticks "$pid")
    line=$("$load" "127.0.0.1:$port" "$THREADS" "$COUNT" "$VERSION")
    c1=0; [[ -n $pid ]] && c1=$(ticks "$pid")
    [[ -n $pid ]] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
    declare -A r=()
    for kv in ${line#MQTTLOAD }; do r[${kv%%=*}]=${kv#*=}; done
    awk -v c="$config" -v rep="$rep" -v n="${r[sessions]}" -v e="$((r[refused] + r[errors]))" \
        -v d="${r[duration_us]}" -v t0="$c0" -v t1="$c1" -v hz="$clk_tck" 'BEGIN {
      printf "%s\t%d\t%d\t%d\t%.1f\t%.0f\n", c, rep, n, e, (n > 0 ? (t1 - t0) / hz * 1e6 / n : 0), n * 1e6 / d }' \
      >> "$work/raw.tsv"
    sleep 1
  done
done

cp "$work/raw.tsv" "${OUT_RAW:-/tmp/mqtt-connect-raw.tsv}"
python3 - "$work/raw.tsv" "$COUNT" "$THREADS" "$VERSION" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
configs = list(dict.fromkeys(r["config"] for r in rows))
def cell(values):
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"
print(f"{len(rows) // len(configs)} reps × {sys.argv[2]} sessions, {sys.argv[3]} client threads, MQTT level {sys.argv[4]}\n")
print("| config | proxy CPU µs/session | sessions/s | errors |")
print("| --- | --- | --- | --- |")
for c in configs:
    mine = [r for r in rows if r["config"] == c]
    cpu = [float(r["cpu_us_per_session"]) for r in mine]
    rate = [float(r["sessions_per_s"]) for r in mine]
    errors = sum(int(r["errors"]) for r in mine)
    print(f"| {c} | {cell(cpu) if c != 'direct' else '—'} | {cell(rate)} | {errors} |")
PY
