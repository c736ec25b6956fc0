#!/usr/bin/env bash
# Issue 16, 2-D / 3-D neighbourhoods at tile density: dense bidirectional and the grid patterns
# in one run, three interleaved rounds (BENCHMARKS.md, "neighbourhoods at tile density").
#   bash bench/neighbourhoods.sh [build-dir]
set -euo pipefail
BIN=${1:-build}/attnkit
PATTERNS=(halo2d:height=128,width=128
          natten2d:height=128,width=128,kernel=13
          natten2d:height=128,width=128,kernel=33
          natten3d:depth=16,height=32,width=32,kernel=13
          natten3d:depth=16,height=32,width=32,kernel=9)
for round in 1 2 3; do
  echo "round $round" >&2
  "$BIN" bench --n 16384 --d 64 --heads 4 --reps 3 --json
  for p in "${PATTERNS[@]}"; do
    "$BIN" bench --n 16384 --d 64 --heads 4 --reps 10 --pattern "$p" --json
  done
done
