#!/usr/bin/env bash
# Foundation targets (BENCHMARKS.md): dense, dtype, causal, decode and memory figures on this
# machine, each printed with the command that produced it. Run on a quiet machine:
#   bash bench/foundation.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

run "$ak" peak --json
for n in 4096 16384; do
  for d in 128 64; do
    run "$ak" bench --n $n --d $d --heads 8 --reps 3 --json
  done
  run "$ak" bench --n $n --d 128 --heads 8 --reps 3 --dtype f16 --json
  run "$ak" bench --n $n --d 128 --heads 8 --reps 3 --dtype bf16 --json
  run "$ak" bench --n $n --d 128 --heads 8 --reps 3 --causal --json
done
for nk in 16384 65536 131072; do
  run "$ak" bench --n $nk --nq 1 --d 128 --heads 32 --kv-heads 8 --dtype f16 --reps 20 --json
done
# Peak resident memory of a dense N = 65536, d = 128, 8-head f32 run (Q, K, V, O = 1 GiB).
echo "\$ /usr/bin/time -v $ak bench --n 65536 --d 128 --heads 8 --reps 1 --json"
/usr/bin/time -v "$ak" bench --n 65536 --d 128 --heads 8 --reps 1 --json 2>&1 |
  grep -E '^\{|Maximum resident'
