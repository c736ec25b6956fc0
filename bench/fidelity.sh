#!/usr/bin/env bash
# Fidelity to the papers' official code (BENCHMARKS.md): what each aligned rule changes, in
# density or recall, next to the former rule where an option keeps it. Structured inputs are
# src/eval/planted_keys.h (recall --input planted | phrases); recall = mean exp(LSE_sparse -
# LSE_dense), causal.   bash bench/fidelity.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

# radial: HunyuanVideo without the frame-0 sink (official), against sink=1 (the former default);
# Wan (decay 0.2, sink) with its distance-1 band a whole frame.
for spec in radial radial:sink=1 radial:model=wan,decay=0.2; do
  run "$ak" mask --pattern "$spec" --nq 32768 --nk 32768
  run "$ak" mask --pattern "$spec" --nq 32768 --nk 32768 --causal
done | grep -E '^\$|density'

# routing: layer-normalised logits (official) against raw logits (the former rule), shared QK.
run "$ak" compare --reps 1 --pattern routing --pattern routing:logits=raw --pattern routing:share_qk=1

# hip: recall against N and k, official (aligned) and even initial chunks, and the top-k oracle
# at about the same keys per row (k + 16 sink + 256 window tokens, in blocks of 64).
for input in planted phrases; do
  for n in 4096 16384; do
    specs=()
    for k in 256 512 1024 2048; do
      specs+=(--pattern "hip:k=$k" --pattern "hip:k=$k,init=even"
              --pattern "topk_oracle:budget=$(( (k + 272 + 32) / 64 ))")
    done
    run "$ak" recall --input "$input" --n "$n" "${specs[@]}"
  done
done

# infllm_v2: one block set per query block (default) against one per query token (official), at
# the paper's budget (topk 96 = 34 forced + 62 free) and at a tight one (4 local, 16 in all).
for input in planted phrases; do
  for n in 16384 32768; do
    run "$ak" recall --input "$input" --n "$n" \
      --pattern infllm_v2:dense_len=0 --pattern infllm_v2:dense_len=0,granularity=token \
      --pattern infllm_v2:dense_len=0,local=4,topk=16 \
      --pattern infllm_v2:dense_len=0,local=4,topk=16,granularity=token
  done
done

# dhsa: official candidate rules against the former local-maximum rule, same budget.
run "$ak" recall --n 16384 --pattern dhsa:budget=1024 --pattern dhsa:budget=1024,rules=local_max \
  --pattern dhsa:budget=2048 --pattern dhsa:budget=2048,rules=local_max

# ssa: attnkit's sampler, one sample against the paper's self-ensemble inference.
run "$ak" compare --reps 1 --pattern ssa --pattern ssa:ensemble=2 --pattern ssa:ensemble=4 \
  --pattern ssa:ensemble=8
