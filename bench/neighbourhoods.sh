#!/usr/bin/env bash
# Issue 16, 2-D / 3-D neighbourhoods at tile density: dense bidirectional and the grid patterns
# in one run, interleaved rounds (BENCHMARKS.md, "neighbourhoods at tile density", and "the
# walk's memory stalls").
#   bash bench/neighbourhoods.sh [build-dir] [rounds (default 3)]
# Prints each run's `bench --json` line, then per pattern, over the rounds ('#' lines):
#   overall  = seconds / (element density x dense seconds of the same round)  (target <= 2.5)
#   visited  = seconds / (tile density x dense seconds of the same round)     (target <= 1.25)
set -euo pipefail
BIN=${1:-build}/attnkit
ROUNDS=${2:-3}
PATTERNS=(halo2d:height=128,width=128
          natten2d:height=128,width=128,kernel=13
          natten2d:height=128,width=128,kernel=33
          natten3d:depth=16,height=32,width=32,kernel=13
          natten3d:depth=16,height=32,width=32,kernel=9)
LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  "$BIN" bench --n 16384 --d 64 --heads 4 --reps 3 --json | tee -a "$LINES"
  for p in "${PATTERNS[@]}"; do
    "$BIN" bench --n 16384 --d 64 --heads 4 --reps 10 --pattern "$p" --json | tee -a "$LINES"
  done
done
python3 - "$LINES" <<'EOF'
import json, statistics, sys

dense, rows = None, {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    if "pattern" not in run:
        dense = run["seconds"]
        continue
    overall = run["seconds"] / (run["density"] * dense)
    visited = run["seconds"] / (run["tile_density"] * dense)
    rows.setdefault(run["pattern"], []).append(
        (overall, visited, run["tile_density"] / run["density"]))
for pattern, runs in rows.items():
    overall, visited, ratio = zip(*runs)
    print(f"# {pattern}: visited/pairs {ratio[0]:.2f}x  overall {min(overall):.2f}-"
          f"{max(overall):.2f}x (median {statistics.median(overall):.2f})  time/visited "
          f"{min(visited):.2f}-{max(visited):.2f} (median {statistics.median(visited):.2f})")
EOF
