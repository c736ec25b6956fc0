#!/usr/bin/env bash
# Backward targets (BENCHMARKS.md, "Backward"): dense f32 forward and backward at N = 4096
# (d = 64, 128; 8 heads; causal or not); block-sparse backward of window and power at N = 32768,
# d = 64, causal, against the dense causal backward; peak memory of `attnkit grad` on a dense
# N = 65536, d = 128, 8-head problem (its inputs written by numpy, in the git-ignored out/).
# PyTorch's SDPA backward side by side: bench/backward_vs_torch.py. Run on a quiet machine:
#   bash bench/backward.sh [build-dir]
set -euo pipefail
build=${1:-build}
ak="$build/attnkit"
run() { echo "\$ $*"; "$@"; echo; }

for d in 64 128; do
  run "$ak" bench --n 4096 --d $d --heads 8 --reps 5 --backward --json
  run "$ak" bench --n 4096 --d $d --heads 8 --reps 5 --backward --causal --json
done
run "$ak" bench --n 32768 --d 64 --heads 4 --reps 3 --backward --causal --json
for p in window:size=1024 power:block=256,window=5; do
  run "$ak" bench --n 32768 --d 64 --heads 4 --reps 3 --backward --causal --pattern "$p" --json
done

python=.venv/bin/python
[ -x "$python" ] || python=python3
mkdir -p out/backward_memory
"$python" - <<'PY'
import numpy as np
rng = np.random.default_rng(1)
for name in ("q", "k", "v", "do"):
    np.save(f"out/backward_memory/{name}.npy",
            rng.standard_normal((1, 8, 65536, 128), dtype=np.float32))
PY
m=out/backward_memory
run /usr/bin/time -v "$ak" grad --q $m/q.npy --k $m/k.npy --v $m/v.npy --do $m/do.npy \
  --dq $m/dq.npy --dk $m/dk.npy --dv $m/dv.npy
echo "bytes of Q, K, V, O, dO, dQ, dK, dV: $((8 * 65536 * 128 * 8 * 4))"
rm -rf out/backward_memory
