"""Per-call overhead of the Python layers on a tiny shape (1 head, N = 64, d = 64), in one run.

Medians over many calls, in microseconds:
  cpp       `attnkit bench` of the same shape (the C++ call alone, from the CLI's own timer)
  ext       attnkit._ext.attention with preallocated outputs (the binding's floor)
  numpy     attnkit.attention (allocation, argument checks, NaN scan, the call)
  torch_op  attnkit.torch.attention (the custom op through the dispatcher, no grad)
  torch_fwd_bwd  the same with requires_grad, forward + backward
  sdpa      torch's scaled_dot_product_attention, for scale

Usage: .venv/bin/python bench/python_overhead.py [--threads T] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import attnkit
import attnkit.torch as at
from attnkit import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_us(fn, reps=3000, warmup=200):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 64, 64)).astype(np.float32) for _ in range(3))
    out, lse = np.empty_like(q), np.empty((1, 1, 64), np.float32)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    gq, gk, gv = (x.clone().requires_grad_() for x in (tq, tk, tv))

    cli = json.loads(subprocess.run(
        [os.path.join(ROOT, "build", "attnkit"), "bench", "--n", "64", "--d", "64", "--heads",
         "1", "--non-causal", "--threads", str(a.threads), "--reps", "3000", "--json"],
        check=True, capture_output=True, text=True).stdout)

    def fwd_bwd():
        at.attention(gq, gk, gv).sum().backward()

    with torch.no_grad():
        rows = {
            "cpp": cli["seconds"] * 1e6,
            "ext": median_us(lambda: _ext.attention(q, k, v, out, lse, 0.0, False, a.threads,
                                                    0.0, 0, None, False)),
            "numpy": median_us(lambda: attnkit.attention(q, k, v, threads=a.threads)),
            "torch_op": median_us(lambda: at.attention(tq, tk, tv)),
            "sdpa": median_us(lambda: F.scaled_dot_product_attention(tq, tk, tv)),
        }
    rows["torch_fwd_bwd"] = median_us(fwd_bwd, reps=1000)
    rows["numpy_overhead"] = rows["numpy"] - rows["cpp"]
    rows["torch_op_overhead"] = rows["torch_op"] - rows["cpp"]
    if a.json:
        print(json.dumps(rows))
    else:
        for name, us in rows.items():
            print(f"{name:18s} {us:8.1f} us")


if __name__ == "__main__":
    sys.exit(main())
