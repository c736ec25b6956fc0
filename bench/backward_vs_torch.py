#!/usr/bin/env python3
"""attnkit's backward next to PyTorch's CPU SDPA backward, on the same shapes, in one run.

For each shape (B = 1, 8 heads, N = 4096, f32, d = 64 and 128, causal or not) it times, in turn:
  torch: out = scaled_dot_product_attention(q, k, v) with grad, then out.backward(dout)
         (forward and backward timed apart; the median of --reps runs after a warm-up);
  attnkit: `attnkit bench --backward --json` on the same shape and thread count.
Prints one JSON object per shape with both times and their ratio (stdout), progress on stderr.

    .venv/bin/python bench/backward_vs_torch.py [--build build] [--threads 2] [--reps 3]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch


def torch_times(n, d, heads, causal, reps):
    """Median forward and backward seconds of torch SDPA (CPU, f32) with autograd."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, heads, n, d, generator=gen, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, heads, n, d, generator=gen)
    forward, backward = [], []
    for rep in range(reps + 1):  # the first run warms up
        for t in (q, k, v):
            t.grad = None
        start = time.perf_counter()
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        mid = time.perf_counter()
        out.backward(dout)
        end = time.perf_counter()
        if rep:
            forward.append(mid - start)
            backward.append(end - mid)
    return statistics.median(forward), statistics.median(backward)


def attnkit_times(build, n, d, heads, causal, reps, threads):
    cmd = [f"{build}/attnkit", "bench", "--n", str(n), "--d", str(d), "--heads", str(heads),
           "--reps", str(reps), "--threads", str(threads), "--backward", "--json"]
    if causal:
        cmd.append("--causal")
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for d in (64, 128):
        for causal in (False, True):
            print(f"d={d} causal={causal}: torch ...", file=sys.stderr, flush=True)
            t_fwd, t_bwd = torch_times(args.n, d, args.heads, causal, args.reps)
            print(f"d={d} causal={causal}: attnkit ...", file=sys.stderr, flush=True)
            ak = attnkit_times(args.build, args.n, d, args.heads, causal, args.reps, args.threads)
            print(json.dumps({
                "n": args.n, "d": d, "heads": args.heads, "causal": causal,
                "threads": args.threads, "torch": torch.__version__,
                "torch_forward_seconds": t_fwd, "torch_backward_seconds": t_bwd,
                "attnkit_forward_seconds": ak["seconds"],
                "attnkit_backward_seconds": ak["backward_seconds"],
                "attnkit_backward_fraction_of_peak": ak["backward_fraction_of_peak"],
                "peak_gflops": ak["peak_gflops"],
                "backward_speedup": t_bwd / ak["backward_seconds"],
                "forward_speedup": t_fwd / ak["seconds"],
            }), flush=True)


if __name__ == "__main__":
    main()
