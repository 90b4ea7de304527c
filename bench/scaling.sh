#!/usr/bin/env bash
# How snigate's cost grows (issue 5, item 4): RSS per idle connection at 1k / 5k / 20k idle
# connections, and proxy CPU per request at 1 / 50 / 200 concurrent clients. One report per
# step goes to bench/results/ (or $OUT_DIR); RESULTS.md quotes them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir=${OUT_DIR:-$here/results}
stamp=$(date -u +%Y%m%d-%H%M)
mkdir -p "$out_dir"
proxies=${SCALING_PROXIES:-custom}

S4_NS="1000 5000 20000" REPS=${REPS:-1} "$here/run.sh" S4 --proxies "$proxies" \
  --out "$out_dir/scaling-idle-$stamp.md"
for clients in 1 50 200; do
  # wrk needs at least one connection per thread.
  threads=$((clients < 2 ? 1 : 2))
  WRK_CONNS=$clients WRK_THREADS=$threads REPS=${REPS:-1} DURATION=${DURATION:-5} \
    "$here/run.sh" S1 S2 S3 --proxies "$proxies" --out "$out_dir/scaling-clients-$clients-$stamp.md"
done
