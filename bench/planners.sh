#!/usr/bin/env bash
# Content-based planner targets (BENCHMARKS.md): planning share at N = 32768, end-to-end speedup
# over dense causal at N = 65536, recall on planted keys at 10% density.
#   bash bench/planners.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

# Planning vs attention at N = 32768, about 10% of all pairs (55 of 512 key blocks).
for p in infllm_v2:dense_len=0,topk=55 hip topk_oracle:budget=55 dhsa:budget=3520 hyper routing; do
  run "$ak" bench --n 32768 --d 64 --heads 4 --kv-heads 2 --causal --reps 3 --pattern "$p" --json
done
# End to end at N = 65536, d = 64, causal, density <= 10% (of N^2; topk = 53 and hip's defaults
# are <= 10% of the causal pairs, issue 16's condition).
run "$ak" bench --n 65536 --d 64 --heads 4 --kv-heads 2 --causal --reps 3 --json
# InfLLM-V2 scores in bf16 by default (its official arithmetic); score_dtype=f32 for comparison.
for p in infllm_v2:dense_len=0,topk=109 infllm_v2:dense_len=0,topk=55 infllm_v2:dense_len=0,topk=53 \
         infllm_v2:dense_len=0,topk=53,score_dtype=f32 hip hyper; do
  run "$ak" bench --n 65536 --d 64 --heads 4 --kv-heads 2 --causal --reps 3 --pattern "$p" --json
done
# Recall on planted keys at 10% density.
run "$ak" recall --n 16384 --heads 4 --kv-heads 2
run "$ak" recall --n 32768 --heads 4 --kv-heads 2
