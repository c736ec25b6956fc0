"""python -m attnkit.report --out DIR [--quick] [--no-model]: PNGs and an index.html.

The page shows: the masks of a set of patterns (block and element views), speedup and recall
against density for every pattern of `attnkit compare` (the structured synthetic input, each
pattern in its paper's direction), and the real-model table (perplexity change and passkey per
pattern on SmolLM2). It runs the checkout's CLI (build/attnkit, from `make build`) for the
comparison and attnkit.Model for the table; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time

from . import Pattern
from . import plot
from .model import _REPO, Model, default_model_path

MASK_PATTERNS = ["window:size=512", "streaming:sinks=4,window=512", "power:block=256,window=5",
                 "dilated:size=256,dilation=2", "natten2d:height=64,width=64,kernel=17",
                 "s2attn:groups=4"]
MODEL_PATTERNS = ["window:size=512", "streaming:sinks=4,window=512", "power:block=256,window=5",
                  "infllm_v2", "hip"]


def _progress(message: str):
    if sys.stderr.isatty() or os.environ.get("ATTNKIT_PROGRESS"):
        print(f"report: {message}", file=sys.stderr, flush=True)


def cli_path() -> str:
    path = os.path.join(_REPO, "build", "attnkit")
    if not os.path.exists(path):
        raise ValueError(f"cli: {path} not found; run `make build` in the checkout first")
    return path


def compare(n: int = 4096) -> dict:
    """`attnkit compare --json` on the structured synthetic input of n tokens."""
    out = subprocess.run([cli_path(), "compare", "--n", str(n), "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def model_rows(patterns, ctx: int, windows: int, passkey_length: int, trials: int) -> list[dict]:
    """Dense and each pattern on the real model: perplexity over `windows` windows of ctx tokens
    of the essays (GPL-3 when they are absent), and passkey accuracy."""
    essays = os.path.join(_REPO, "data", "paul_graham_essays.txt")
    text = open(essays if os.path.exists(essays) else "/usr/share/common-licenses/GPL-3").read()
    model = Model()
    rows = []
    for spec in [None] + list(patterns):
        name = spec or "dense"
        _progress(f"model: {name}")
        ppl = model.ppl(text, ctx, spec, max_windows=windows)["ppl"]
        passkey = model.passkey(passkey_length, trials, spec)["accuracy"]
        rows.append({"pattern": name, "ppl": ppl, "passkey": passkey})
    for r in rows:
        r["ppl_change"] = r["ppl"] / rows[0]["ppl"] - 1.0
    return rows


def _number(row, key, fmt) -> str:
    value = row.get(key)
    return "n/a" if value is None else fmt.format(value)  # e.g. no LSE recall for Routing


def _table(rows, columns) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r))}</td>" for _, fmt in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir: str, *, quick: bool = False, with_model: bool = True) -> str:
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()
    sections = []

    n = 1024 if quick else 4096
    masks = MASK_PATTERNS[:2] if quick else MASK_PATTERNS
    figures = []
    for spec in masks:
        _progress(f"mask: {spec}")
        if spec.startswith("natten2d") and n != 4096:
            spec = "natten2d:height=32,width=32,kernel=9"
        m = Pattern(spec).plan(nq=n, nk=n)
        stem = spec.split(":")[0]
        for view in ("block", "element"):
            path = f"mask_{stem}_{view}.png"
            plot.save(plot.mask(m, view=view), os.path.join(out_dir, path))
            figures.append((f"{spec} ({view})", path))
    sections.append("<h2>Masks</h2><p>Block view: dark FULL, light PARTIAL (a per-element "
                    "test), white skipped. Element view: allowed pairs in token order.</p>"
                    + "".join(f'<figure><img src="{p}" alt="{html.escape(t)}"><figcaption>'
                              f"{html.escape(t)}</figcaption></figure>" for t, p in figures))

    _progress(f"compare at N = {n}")
    result = compare(n)
    results = result["results"]
    plot.save(plot.speedup_vs_density(results), os.path.join(out_dir, "speedup.png"))
    plot.save(plot.recall_vs_density(results), os.path.join(out_dir, "recall.png"))
    sections.append(
        f"<h2>Cost and loss against exact attention (N = {n}, synthetic input)</h2>"
        '<figure><img src="speedup.png"></figure><figure><img src="recall.png"></figure>'
        + _table(results, [("pattern", lambda r: r["pattern"]),
                           ("direction", lambda r: r["direction"]),
                           ("density", lambda r: _number(r, "density", "{:.4f}")),
                           ("speedup", lambda r: _number(r, "speedup", "{:.2f}x")),
                           ("recall (mean)", lambda r: _number(r, "recall_mean", "{:.3f}")),
                           ("rel. L2 error", lambda r: _number(r, "rel_l2_error", "{:.4f}"))]))

    if with_model and default_model_path():
        ctx = 512 if quick else 2048
        rows = model_rows(MODEL_PATTERNS[:1] if quick else MODEL_PATTERNS, ctx, 1 if quick else 2,
                          ctx, 1 if quick else 4)
        plot.save(plot.model_table(rows), os.path.join(out_dir, "model.png"))
        sections.append(
            f"<h2>The real model (SmolLM2-135M, ctx {ctx})</h2>"
            '<figure><img src="model.png"></figure>'
            + _table(rows, [("pattern", lambda r: r["pattern"]),
                            ("perplexity", lambda r: f"{r['ppl']:.3f}"),
                            ("change", lambda r: f"{r['ppl_change'] * 100:+.1f}%"),
                            ("passkey", lambda r: f"{r['passkey']:.2f}")]))

    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>attnkit report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:480px}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:2px 8px}}
figcaption{{font-size:12px;text-align:center}}</style></head><body>
<h1>attnkit: dense vs sparse attention</h1>
<p>Generated by <code>python -m attnkit.report</code> in {time.time() - started:.0f} s.</p>
{"".join(sections)}
</body></html>
"""
    index = os.path.join(out_dir, "index.html")
    with open(index, "w") as f:
        f.write(page)
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnkit.report", description=__doc__)
    parser.add_argument("--out", required=True, help="directory for the PNGs and index.html")
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute)")
    parser.add_argument("--no-model", action="store_true", help="skip the real-model table")
    a = parser.parse_args(argv)
    try:
        index = write_report(a.out, quick=a.quick, with_model=not a.no_model)
    except ValueError as e:
        print(f"attnkit.report: {e}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
