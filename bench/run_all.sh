#!/usr/bin/env bash
# Run every benchmark with defaults that finish in a few minutes, then list the ratios.
#
#   bench/run_all.sh                 # asyncio
#   BACKEND=trio bench/run_all.sh    # trio
#   PYTHON=/path/to/python bench/run_all.sh
#
# Not part of the pass/fail suite: it always exits 0 unless a benchmark crashes.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
BACKEND="${BACKEND:-asyncio}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

run() {
    local started=$SECONDS
    echo "\$ $PYTHON $* --backend $BACKEND"
    "$PYTHON" "$@" --backend "$BACKEND" | tee -a "$LOG"
    echo "($((SECONDS - started)) s)"
    echo
}

total=$SECONDS
run bench/bench_receive.py
run bench/bench_memory.py
run bench/bench_send.py
run bench/bench_roundtrips.py
run bench/bench_renewal.py
run bench/bench_scale.py
run bench/bench_keepalive.py

echo "== summary ($BACKEND, $((SECONDS - total)) s in all)"
grep '^RATIO ' "$LOG"
