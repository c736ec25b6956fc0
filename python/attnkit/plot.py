"""Pictures of masks and of what each pattern costs and loses against exact attention (matplotlib).

    attnkit.plot.mask(attnkit.Pattern("power").plan(nq=4096, nk=4096), view="block")
    attnkit.plot.speedup_vs_density(results)   # results: attnkit.report.compare(...)["results"]
    attnkit.plot.recall_vs_density(results)
    attnkit.plot.model_table(rows)             # rows: attnkit.report.model_rows(...)

Each function draws into `ax` (a new figure when None) and returns the axes.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # files, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

_BLOCK_COLOURS = ListedColormap(["#ffffff", "#1f4e99", "#9ec5ef"])  # empty, FULL, PARTIAL


def _axes(ax, size=(5, 5)):
    if ax is None:
        _, ax = plt.subplots(figsize=size, dpi=110)
    return ax


def mask(block_mask, ax=None, *, view="block", b=0, h=0, title=None):
    """The mask of list (b, h): view="block" shows each block's kind (dark FULL, light PARTIAL,
    white skipped) in kernel order; view="element" the allowed pairs in token order."""
    if view not in ("block", "element"):
        raise ValueError(f"view: must be 'block' or 'element', got {view!r}")
    ax = _axes(ax)
    if view == "block":
        ax.imshow(block_mask.blocks(b, h), cmap=_BLOCK_COLOURS, vmin=0, vmax=2,
                  interpolation="nearest")
        ax.set_xlabel(f"key block ({block_mask.kv_block} keys)")
        ax.set_ylabel(f"query block ({block_mask.q_block} rows)")
    else:
        ax.imshow(block_mask.to_dense(b, h), cmap="Blues", vmin=0, vmax=1.4,
                  interpolation="nearest")
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    name = textwrap.fill(block_mask.pattern or "block mask", 56)  # canonical specs run long
    ax.set_title(title or f"{name}\ndensity {block_mask.density:.3f}", fontsize=8)
    return ax


def _scatter(results, key, ax, ylabel, log=False):
    ax = _axes(ax, (7, 5))
    for r in results:
        if r.get(key) is None or not r.get("density"):
            continue  # not measured (e.g. a row the comparison could not time)
        ax.scatter(r["density"], r[key], s=28)
        ax.annotate(r["pattern"].split(":")[0], (r["density"], r[key]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("density (attended pairs / all pairs)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def speedup_vs_density(results, ax=None):
    """Speedup over dense attention of the same direction against density, one point per pattern."""
    ax = _scatter(results, "speedup", ax, "speedup over dense (planning included)", log=True)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_title("What each pattern saves", fontsize=10)
    return ax


def recall_vs_density(results, ax=None):
    """Mean attention recall exp(LSE_sparse - LSE_dense) against density."""
    ax = _scatter(results, "recall_mean", ax, "attention recall (mean over rows)")
    ax.set_ylim(0, 1.05)
    ax.set_title("What each pattern keeps", fontsize=10)
    return ax


def model_table(rows, ax=None):
    """The real-model table as bars: perplexity change against dense per pattern, each bar
    labelled with the perplexity and the passkey accuracy."""
    ax = _axes(ax, (7, 0.8 + 0.45 * len(rows)))
    names = [r["pattern"] for r in rows]
    change = [r["ppl_change"] * 100 for r in rows]
    y = list(range(len(rows)))
    ax.barh(y, change, color=["#888888"] + ["#1f4e99"] * (len(rows) - 1))
    for i, r in enumerate(rows):
        ax.annotate(f"ppl {r['ppl']:.2f}, passkey {r['passkey']:.2f}", (max(change[i], 0), i),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("perplexity change against dense (%)")
    ax.set_xlim(min(0, min(change)) * 1.1, max(max(change), 1) * 1.6)
    ax.set_title("The real model: what each pattern loses", fontsize=10)
    return ax


def save(ax, path):
    """Writes the axes' figure to path and closes it."""
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["mask", "speedup_vs_density", "recall_vs_density", "model_table", "save"]
