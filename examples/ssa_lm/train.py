#!/usr/bin/env python3
"""Trains a byte-level causal LM on the Paul Graham essays with dense attention or with SSA
(ratio 4, resampled every step and layer) and evaluates it with dense attention; an SSA-trained
model is also evaluated by the self-ensemble (the mean of the predicted probabilities of
--ensemble subsampled passes).

    .venv/bin/python examples/ssa_lm/train.py --attention dense|ssa [--steps S] [--json]

The essays (data/paul_graham_essays.txt, fetched by `make setup`): the first 90% train, the last
10% are held out. --json prints {"attention", "steps", "val_bpb", "val_bpb_ensemble",
"attention_gflops_per_step", "seconds_per_step"} (val_bpb_ensemble null for dense). Progress goes
to stderr when it is a terminal (or ATTNKIT_PROGRESS is set).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from example_cli import positive_int, run_program, show_progress  # noqa: E402
from byte_lm import ByteLM, attention_gflops, attention_pairs, ssa_spec  # noqa: E402

ESSAYS = Path(__file__).resolve().parents[2] / "data" / "paul_graham_essays.txt"
SEED_STRIDE = 1 << 20  # ensemble passes draw seeds above every training step's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attention", choices=["dense", "ssa"], required=True)
    p.add_argument("--steps", type=positive_int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--data", type=Path, default=ESSAYS)
    p.add_argument("--context", type=positive_int, default=1024)
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--layers", type=positive_int, default=4)
    p.add_argument("--d", type=positive_int, default=128)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ratio", type=positive_int, default=4)
    p.add_argument("--ensemble", type=positive_int, default=4)
    return p.parse_args(argv)


def load_bytes(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"data: no such file: {path} (run `make setup`)")
    data = torch.from_numpy(np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.int64))
    cut = int(len(data) * 0.9)
    return data[:cut], data[cut:]


def layer_patterns(args, step: int, layers: int) -> list[str | None]:
    """Training-time attention of one step: dense, or one SSA sample per layer."""
    if args.attention == "dense":
        return [None] * layers
    return [ssa_spec(step * layers + layer, args.ratio) for layer in range(layers)]


@torch.no_grad()
def bits_per_byte(model: ByteLM, data: torch.Tensor, context: int,
                  passes: list[list[str | None]] | None = None) -> float:
    """Validation bits per byte over non-overlapping windows of `context` bytes; with several
    passes, of the mean of their predicted probabilities (the self-ensemble)."""
    passes = passes or [None]
    windows = (len(data) - 1) // context
    total = 0.0
    for w in range(windows):
        chunk = data[w * context:(w + 1) * context + 1]
        x, y = chunk[:-1].unsqueeze(0), chunk[1:]
        log_p = torch.stack([F.log_softmax(model(x, p)[0], -1) for p in passes])
        log_mean = torch.logsumexp(log_p, 0) - math.log(len(passes))
        total -= float(log_mean.gather(1, y.unsqueeze(1)).sum())
    return total / (windows * context) / math.log(2)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train_data, val_data = load_bytes(args.data)
    model = ByteLM(args.layers, args.d, args.heads, args.context)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                                  weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    generator = torch.Generator().manual_seed(args.seed + 1)
    progress = show_progress()
    pairs = [attention_pairs(p, args.context) for p in layer_patterns(args, 0, args.layers)]
    start = time.perf_counter()
    for step in range(args.steps):
        starts = torch.randint(0, len(train_data) - args.context - 1, (args.batch,),
                               generator=generator)
        chunk = torch.stack([train_data[s:s + args.context + 1] for s in starts.tolist()])
        logits = model(chunk[:, :-1], layer_patterns(args, step, args.layers))
        loss = F.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if progress and (step + 1) % 50 == 0:
            print(f"ssa_lm: {args.attention} step {step + 1}/{args.steps}: train "
                  f"{float(loss.detach()) / math.log(2):.3f} bits/byte, "
                  f"{(time.perf_counter() - start) / (step + 1):.2f} s/step",
                  file=sys.stderr, flush=True)
    seconds_per_step = (time.perf_counter() - start) / args.steps
    model.eval()
    ensemble = None
    if args.attention == "ssa":
        passes = [[ssa_spec(SEED_STRIDE + r * args.layers + layer, args.ratio)
                   for layer in range(args.layers)] for r in range(args.ensemble)]
        ensemble = bits_per_byte(model, val_data, args.context, passes)
    result = {"attention": args.attention, "steps": args.steps,
              "val_bpb": bits_per_byte(model, val_data, args.context),
              "val_bpb_ensemble": ensemble,
              "attention_gflops_per_step": attention_gflops(model, pairs, args.batch),
              "seconds_per_step": seconds_per_step,
              "tokens_per_step": args.batch * args.context}
    if args.json:
        print(json.dumps(result))
    else:
        extra = f", ensemble of {args.ensemble}: {ensemble:.4f}" if ensemble is not None else ""
        print(f"{args.attention}, {args.steps} steps ({seconds_per_step:.2f} s/step, "
              f"{result['attention_gflops_per_step']:.1f} attention GFLOP/step): validation "
              f"{result['val_bpb']:.4f} bits/byte with dense attention{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
