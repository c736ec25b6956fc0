#!/usr/bin/env bash
# The operators of other shapes (BENCHMARKS.md, "Attention of other shapes"):
#  - Lightning-2's constant speed: B = 1, 8 heads, D = E = 128, N from 1K to 32K (tokens/s
#    flat, time(32K) / time(1K) in [28, 36]), and attnkit's dense causal kernel on the same
#    shapes (--vs-dense, up to 16K) for the crossover; forward and backward.
#  - SOFT: linear in N at fixed m (64 given landmarks), and the grid-pooled ImageNet-stage shape
#    (56 x 56 tokens, sr = 8: 49 landmarks) against dense non-causal attention.
#  - Index lists: kNN lists of Morton-sorted 3-D points and uniform random lists, k = 16, 32, 64,
#    d = 64, from L2-resident to memory-resident sizes; time per listed pair, fraction of peak.
# Run on a quiet machine:  bash bench/operators.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

# 20 repetitions: a call at 1K lasts about 3 ms, where the first runs of a series are the slowest.
for n in 1024 2048 4096 8192 16384; do
  run "$ak" bench --op lightning --n $n --d 128 --heads 8 --reps 20 --backward --vs-dense --json
done
run "$ak" bench --op lightning --n 32768 --d 128 --heads 8 --reps 3 --backward --json
run "$ak" bench --op lightning --n 1024 --d 128 --heads 8 --reps 3 --decode 2000 --json
for n in 4096 32768; do  # dense decode over a cache of n keys, for comparison
  run "$ak" bench --n $n --nq 1 --d 128 --heads 8 --reps 50 --json
done

for n in 1024 4096 16384 65536; do
  run "$ak" bench --op soft --n $n --d 64 --heads 8 --landmarks 64 --reps 5 --backward --json
done
run "$ak" bench --op soft --n 3136 --d 64 --heads 8 --grid 56x56 --stride 8 --reps 5 --backward \
  --vs-dense --json

for lists in knn random; do
  for n in 1024 16384 131072; do
    for k in 16 32 64; do  # short calls at 1K: 50 repetitions
      run "$ak" bench --op index --lists $lists --n $n --d 64 --heads 8 --k $k \
        --reps $([ $n = 1024 ] && echo 50 || echo 5) --json
    done
  done
done
run "$ak" bench --op index --n 16384 --d 64 --heads 8 --k 32 --reps 5 --backward --vs-dense --json
run "$ak" bench --op index --n 1024 --d 64 --heads 8 --k 32 --reps 50 --threads 1 --json
