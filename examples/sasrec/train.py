#!/usr/bin/env python3
"""Trains SASRec on the paper's Amazon Games data with attnkit.torch as the attention, and reports
the test HR@10 and NDCG@10 at the evaluation with the best validation NDCG@10.

    .venv/bin/python examples/sasrec/train.py [--data PATH] [--epochs N] [--seed S] [--json]

Defaults are the paper's run: d = 50, 2 blocks, 1 head, dropout 0.5, the last 50 items, Adam
(lr 1e-3, beta2 0.98), batch 128, up to 200 epochs, 100 negatives per ranked item over 10,000
sampled users. Validation and test every --eval-every epochs; training stops early after
--patience evaluations without a better validation NDCG@10. Progress goes to stderr when it is
a terminal (or ATTNKIT_PROGRESS is set); --json prints one object on stdout:
{"epochs", "hr10", "ndcg10", "valid_hr10", "seconds"} (plus the best epoch and the curve).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from example_cli import positive_int, run_program, show_progress  # noqa: E402
from sasrec import DATA, SASRec, Split, eval_sets, hr_ndcg, read_interactions, training_batch, training_rows  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--epochs", type=positive_int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--attention", choices=["attnkit", "sdpa"], default="attnkit")
    p.add_argument("--attention-dropout", type=float, default=0.5,
                   help="dropout on the attention probabilities (the authors' 0.5)")
    p.add_argument("--eval-every", type=positive_int, default=5)
    p.add_argument("--patience", type=positive_int, default=4)
    p.add_argument("--eval-users", type=positive_int, default=10000)
    p.add_argument("--threads", type=positive_int, default=None)
    return p.parse_args(argv)


def train_epoch(model, optimiser, split, rows, rng, batch=128) -> float:
    order = rng.permutation(len(rows[0]))
    total, batches = 0.0, 0
    for start in range(0, len(order), batch):
        loss = model.loss(*training_batch(split, rows, order[start:start + batch], rng))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total, batches = total + float(loss.detach()), batches + 1
    return total / batches


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if not args.data.is_file():
        raise ValueError(f"data: no such file: {args.data}")
    split = Split.from_pairs(*read_interactions(args.data))
    rows = training_rows(split)
    valid, test = eval_sets(split, args.eval_users, 100, rng)
    model = SASRec(split.num_items, attention=args.attention,
                   attention_dropout=args.attention_dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    start = time.perf_counter()
    best, curve, since_best = None, [], 0
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, optimiser, split, rows, rng)
        if epoch % args.eval_every and epoch != args.epochs:
            continue
        v_hr, v_ndcg = hr_ndcg(model, valid)
        t_hr, t_ndcg = hr_ndcg(model, test)
        point = {"epoch": epoch, "loss": round(loss, 4), "valid_hr10": v_hr, "valid_ndcg10": v_ndcg,
                 "hr10": t_hr, "ndcg10": t_ndcg, "seconds": time.perf_counter() - start}
        curve.append(point)
        if show_progress():
            print(f"sasrec: epoch {epoch}: loss {loss:.4f}  valid HR@10 {v_hr:.4f} NDCG@10 "
                  f"{v_ndcg:.4f}  test HR@10 {t_hr:.4f} NDCG@10 {t_ndcg:.4f}  "
                  f"{point['seconds']:.0f} s", file=sys.stderr, flush=True)
        if best is None or v_ndcg > best["valid_ndcg10"]:
            best, since_best = point, 0
        else:
            since_best += 1
            if since_best >= args.patience:
                break
    seconds = time.perf_counter() - start
    return {"epochs": curve[-1]["epoch"], "best_epoch": best["epoch"], "hr10": best["hr10"],
            "ndcg10": best["ndcg10"], "valid_hr10": best["valid_hr10"],
            "valid_ndcg10": best["valid_ndcg10"], "seconds": seconds,
            "seconds_per_epoch": seconds / curve[-1]["epoch"], "attention": args.attention,
            "attention_dropout": args.attention_dropout,
            "curve": curve}


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test HR@10 {result['hr10']:.4f}  NDCG@10 {result['ndcg10']:.4f}  (best validation "
              f"at epoch {result['best_epoch']} of {result['epochs']}; {result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
