#!/usr/bin/env python3
"""attnkit.torch next to torch SDPA (CPU) and FlexAttention (CPU, torch.compile), in one run.

Rows: mask in {causal, window of W keys (query i sees keys i-W+1 .. i)} x N x {forward,
forward+backward}, B = 1, --heads heads, d = 64, f32. Each implementation gets the same inputs:
  attnkit  attnkit.torch.attention(q, k, v, causal=True[, pattern="window:size=W"])
  sdpa     F.scaled_dot_product_attention(is_causal=True), or with a boolean [N, N] window mask
  flex     torch.compile(flex_attention) with create_block_mask of the same rule (CPU: no
           backward, so its forward+backward rows say so)
and each mask-building time (attnkit's plan, Flex's create_block_mask, SDPA's boolean mask).
Medians of --reps runs after one warm-up. One JSON object per row on stdout, progress on stderr.

    .venv/bin/python bench/torch_side_by_side.py [--n 16384 32768] [--window 1024] [--reps 3]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import attnkit
import attnkit.torch as at


def progress(message):
    print(f"side-by-side: {message}", file=sys.stderr, flush=True)


def median_seconds(fn, reps):
    fn()  # warm-up (and compilation for Flex)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def flex_setup(n, window):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def rule(b, h, q_idx, kv_idx):
        allowed = q_idx >= kv_idx
        return allowed & (q_idx - kv_idx < window) if window else allowed

    # A fresh compiler state per configuration: after an earlier configuration's compiles (and
    # the failed backward one), dynamo ran Flex's window at N = 16384 at 24 s instead of 0.25 s.
    torch._dynamo.reset()
    mask, seconds = timed(lambda: create_block_mask(rule, None, None, n, n, device="cpu"))
    compiled = torch.compile(flex_attention)
    return (lambda q, k, v: compiled(q, k, v, block_mask=mask)), seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sdpa", "flex"])
    a = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    for n in a.n:
        q, k, v = (torch.randn(1, a.heads, n, 64, generator=gen) for _ in range(3))
        dout = torch.randn(1, a.heads, n, 64, generator=gen)
        for window in (0, a.window):
            kind = f"window:{window}" if window else "causal"
            spec = f"window:size={window}" if window else None
            impls = {}
            plan = attnkit.Pattern(spec) if spec else None
            _, attnkit_mask_s = timed(lambda: plan.plan(nq=n, nk=n, heads=a.heads) if plan else None)
            impls["attnkit"] = ((lambda q, k, v: at.attention(q, k, v, causal=True, pattern=spec)),
                                attnkit_mask_s)
            if "sdpa" not in a.skip:
                if window:
                    i = torch.arange(n)
                    bool_mask, seconds = timed(
                        lambda: (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window))
                    impls["sdpa"] = ((lambda q, k, v: F.scaled_dot_product_attention(
                        q, k, v, attn_mask=bool_mask)), seconds)
                else:
                    impls["sdpa"] = ((lambda q, k, v: F.scaled_dot_product_attention(
                        q, k, v, is_causal=True)), 0.0)
            if "flex" not in a.skip:
                progress(f"N={n} {kind}: flex create_block_mask")
                impls["flex"] = flex_setup(n, window)
            for name, (fn, mask_s) in impls.items():
                progress(f"N={n} {kind}: {name} forward")
                with torch.no_grad():
                    fwd = median_seconds(lambda: fn(q, k, v), a.reps)
                progress(f"N={n} {kind}: {name} forward+backward")
                qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
                try:
                    both = median_seconds(lambda: fn(qg, kg, vg).backward(dout), a.reps)
                    note = ""
                except Exception as e:  # noqa: BLE001 - a peer without a CPU backward
                    both, note = None, f"no backward: {str(e).splitlines()[0][:120]}"
                print(json.dumps({"n": n, "mask": kind, "impl": name, "mask_seconds": mask_s,
                                  "forward_seconds": fwd, "forward_backward_seconds": both,
                                  "note": note}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
