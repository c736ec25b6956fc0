#!/usr/bin/env bash
# Block-sparse targets (BENCHMARKS.md): every static and grid pattern at N = 32768 (d = 64 and
# 128), each in its paper's direction (bench's default: a rule of its own as the rule says,
# never ANDed with causality), against dense attention of the same direction (causal for rules
# that look back, bidirectional for NATTEN, HaloNet, Radial); mask-building share; natten2d on a
# 128 x 128 grid; and the cost of PARTIAL blocks. Run on a quiet machine:
#   bash bench/block_sparse.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

patterns=(
  window:size=1024 dilated:size=1024,dilation=2 streaming:sinks=4,window=1024
  document:lengths=2048 power:block=256,window=5 s2attn:groups=4 sf_attn:groups=4,sinks=4
  ssa:ratio=4 natten1d:kernel=2049 radial:frames=16 halo2d:height=128,width=256,block=8,halo=64
  natten2d:height=128,width=256,kernel=33 natten3d:depth=32,height=32,width=32,kernel=11
)
for d in 64 128; do
  run "$ak" bench --n 32768 --d $d --heads 4 --causal --reps 3 --json
  run "$ak" bench --n 32768 --d $d --heads 4 --reps 3 --json
  for p in "${patterns[@]}"; do
    run "$ak" bench --n 32768 --d $d --heads 4 --reps 3 --pattern "$p" --json
  done
done
# natten2d, 128 x 128 grid, kernel 13 (non-causal), against dense non-causal attention.
run "$ak" bench --n 16384 --d 64 --heads 4 --reps 3 --json
run "$ak" bench --n 16384 --d 64 --heads 4 --reps 5 --pattern natten2d:height=128,width=128,kernel=13 --json
run "$build/attnkit_tests" --gtest_filter='NattenTiling.VisitedDensity128Kernel13'
# All-PARTIAL masks that allow everything against all-FULL masks.
run "$build/partial_overhead" 8192 64 4
run "$build/partial_overhead" 8192 128 4
