#!/usr/bin/env bash
# Bounded planning (BENCHMARKS.md): the largest accepted parameters of every pattern, planned and
# run on N tokens (default 4096; d = 64, 4 query heads over 2, causal), against dense causal
# attention of the same shape: plan seconds, total seconds, and both as multiples of the dense
# time. The same cases run (untimed) in tests/patterns/bounded_test.cc.
#   bash bench/bounded_planning.sh [build-dir] [N]
set -euo pipefail
build=${1:-build}
n=${2:-4096}
ak="$build/attnkit"
common=(--n "$n" --d 64 --heads 4 --kv-heads 2 --causal --reps 3 --json)
side=$(python3 -c "n = $n; print(1 << ((n.bit_length() - 1) // 2))")  # a power-of-two grid side
dense=$("$ak" bench "${common[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
echo "dense causal N=$n: $dense s"
printf '%-100s %10s %10s %8s %8s\n' pattern plan_s total_s plan/x total/x
while read -r spec; do
  [ -z "$spec" ] && continue
  "$ak" bench "${common[@]}" --pattern "$spec" | python3 -c "
import json, sys
r = json.load(sys.stdin); d = $dense
print('%-100s %10.5f %10.5f %8.2f %8.2f' % (r['pattern'][:100], r['plan_seconds'], r['seconds'],
      r['plan_seconds'] / d, r['seconds'] / d))"
done <<SPECS
window:size=1099511627776
streaming:sinks=1099511627776,window=1
dilated:size=1073741824,dilation=1048576
document:lengths=1
power:block=1,window=0
s2attn:groups=1073741824
sf_attn:groups=1073741824,sinks=1099511627776
ssa:ratio=1,block=16,ensemble=64
radial:frames=$((n / 4)),frame_tokens=4,min_width=1
natten1d:kernel=$n
natten1d:kernel=2,dilation=$((n / 2))
natten2d:height=$side,width=$((n / side)),kernel=1,dilation=$side
halo2d:height=$side,width=$((n / side)),block=1,halo=1073741824
topk_oracle:budget=16777216,block=16
infllm_v2:dense_len=0,kernel=1,stride=1,lse_kernel=1,lse_stride=1,block=16,init=16777216,local=16777216,topk=16777216,granularity=token
hip:k=1,block_q=16,stride_q=1,block_k=1,kv_block=16
hip:k=1073741824,block_q=16,stride_q=65536,block_k=1024,stride_k=1024
dhsa:block=16,budget=1,local=0,window=1048576,nms=0,beta=1048576
dhsa:block=16,budget=1099511627776,nms=1048576
hyper:projs=16,block=16,samples=16,min_seq=16
routing:clusters=$((n / 16)),window=1,iters=15
routing:clusters=1,window=$n,iters=100
SPECS
