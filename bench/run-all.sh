#!/usr/bin/env bash
# run-all.sh — every harness of bench/README.md in sequence, full size.
#
# Usage: bench/run-all.sh [results-dir]   (default: bench-results-<date>)
# Environment: ONLY="pages propose ..." to run a subset; STEADY (failover
#   steady window, default 10m); DONATIONS (catchup, default 1000000).
# Each report goes to <results-dir>/<name>.md, progress to <name>.log,
# CPU profiles to <name>.prof.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench-results-$(date -u +%Y%m%dT%H%M)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ONLY=${ONLY:-"pages propose writes journeys catchup failover"}
cd "$ROOT"
go build -o "$OUT/node" ./cmd/node
go build -o "$OUT/surgebench" ./bench/cmd/surgebench
SB="$OUT/surgebench"
want() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }
step() { echo "$(date -u +%H:%M:%S) == $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

if want pages; then
  step pages
  NODE_BIN="$OUT/node" OUT="$OUT/pages.md" bench/pages.sh 2>"$OUT/pages.log" >/dev/null
fi
if want propose; then
  step propose
  "$SB" propose --cpuprofile "$OUT/propose.prof" >"$OUT/propose.md" 2>"$OUT/propose.log"
fi
if want writes; then
  step writes
  "$SB" writes --node-bin "$OUT/node" >"$OUT/writes.md" 2>"$OUT/writes.log"
  "$SB" writes --inprocess --clients 128 --rounds 1 --duration 10s --cpuprofile "$OUT/writes.prof" --profile-clients 128 >"$OUT/writes-inprocess.md" 2>"$OUT/writes-inprocess.log"
fi
if want journeys; then
  step journeys
  "$SB" journeys --node-bin "$OUT/node" >"$OUT/journeys.md" 2>"$OUT/journeys.log"
fi
if want catchup; then
  step catchup
  "$SB" catchup --node-bin "$OUT/node" --memprofile "$OUT/catchup-heap.prof" --donations "${DONATIONS:-1000000}" >"$OUT/catchup.md" 2>"$OUT/catchup.log"
fi
if want failover; then
  step failover
  "$SB" failover --node-bin "$OUT/node" --steady "${STEADY:-10m}" >"$OUT/failover.md" 2>"$OUT/failover.log"
fi
step done
for p in "$OUT"/*.prof; do
  [ -e "$p" ] || continue
  go tool pprof -top -cum -nodecount=40 "$p" >"${p%.prof}.top.txt" 2>/dev/null || true
done
echo "$OUT"
