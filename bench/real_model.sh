#!/usr/bin/env bash
# Real-model figures (BENCHMARKS.md): SmolLM2-135M-Instruct Q4_1 (scripts/setup-model.sh) on the
# Paul Graham essays: speed, dense perplexity and passkey, then every pattern at ctx 2048 and a
# set at ctx 4096 (perplexity on 2 windows, passkey 10 trials, seed 0). 2 threads.
#   bash bench/real_model.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
text=data/paul_graham_essays.txt
run() { echo "\$ $*"; "$@"; echo; }

run "$ak" model bench --ctx 2048 --decode 64 --threads 2 --json
for ctx in 512 1024 2048 4096 8192; do
  run "$ak" model ppl --text "$text" --ctx "$ctx" --max-windows $((16384 / ctx)) --json
done
for len in 1024 2048 4096 8192; do
  run "$ak" model passkey --len "$len" --trials 20 --json
done
for p in causal infllm_v2:dense_len=512 power:block=256,window=5 hip topk_oracle:budget=8 \
         streaming:sinks=4,window=512 sf_attn hyper:min_seq=1024 window:size=512 ssa:ratio=4 \
         s2attn:groups=4 dilated:size=256,dilation=2 routing:window=512,local_heads=0 routing \
         routing:logits=raw; do
  run "$ak" model ppl --text "$text" --ctx 2048 --max-windows 2 --pattern "$p" --json
  run "$ak" model passkey --len 2048 --trials 10 --pattern "$p" --json
done
for p in causal topk_oracle:budget=16 power:block=256,window=5 infllm_v2:dense_len=0,topk=16,local=8 \
         streaming:sinks=4,window=1024 hyper:min_seq=1024; do
  run "$ak" model ppl --text "$text" --ctx 4096 --max-windows 2 --pattern "$p" --json
  run "$ak" model passkey --len 4096 --trials 10 --pattern "$p" --json
done
