"""attnkit: fast exact and sparse attention on the CPU, forward and backward.

Arrays are [batch, heads, seq, dim] (layout="bhsd") or [batch, seq, heads, dim] (layout="bshd",
viewed through strides). Inputs may be numpy arrays or anything with DLPack (torch tensors
included) in float32, float16 or bfloat16 (bfloat16 through DLPack only: numpy has no such
dtype); they are viewed in place, never copied, unless the head dim is strided (then copied
once). Outputs are float32 numpy arrays; the LSE is the natural-log log-sum-exp per row, -inf for
a row that sees no key. Errors are ValueError or TypeError naming the argument.

    import attnkit
    out = attnkit.attention(q, k, v, causal=True)
    out, lse = attnkit.attention(q, k, v, pattern="window:size=128", return_lse=True)
    dq, dk, dv = attnkit.attention_backward(q, k, v, out, lse, dout)
"""

from __future__ import annotations

import numpy as np

from . import _ext

__all__ = [
    "attention",
    "attention_backward",
    "attention_column_sums",
    "merge",
    "reference",
    "patterns",
    "Pattern",
    "BlockMask",
    "Model",
    "lightning_slopes",
    "lightning_attention",
    "lightning_attention_backward",
    "soft_attention",
    "soft_attention_backward",
    "index_attention",
    "index_attention_backward",
    "knn",
]

BlockMask = _ext.Mask
BlockMask.__doc__ = """Which key blocks each query block attends (FULL or PARTIAL), plus, for
patterns that reorder tokens, their token order: exactly what one attention call runs.

Built by Pattern.plan(), BlockMask.from_dense(array, q_block, kv_block) (bool/uint8
[nq, nk], [heads, nq, nk] or [batch, heads, nq, nk]) or BlockMask.from_indices(...).
.density and .block_density, .to_dense(b=0, h=0) (uint8 [nq, nk], token order, causality
included), a & b, a | b, repr() (the CLI's ASCII view), .save_png(path)."""


def _from_indices(indices, *, nq, nk, q_block=64, kv_block=64):
    """A mask whose query block qb attends the kv blocks listed for it (every block FULL).
    indices: [q_blocks] lists (one list for every head), [heads][q_blocks] or
    [batch][heads][q_blocks]; or an integer array [..., q_blocks, max] padded with -1."""
    if isinstance(indices, np.ndarray) or hasattr(indices, "__dlpack__"):
        a = np.asarray(indices)
        if a.ndim < 2 or a.ndim > 4 or a.dtype.kind not in "iu":
            raise ValueError(f"indices: must be an integer array [..., q_blocks, max], got "
                             f"{a.dtype} {list(a.shape)}")
        lead = a.shape[:-2]
        nested = [[int(j) for j in row if j >= 0] for row in a.reshape(-1, a.shape[-1])]
    else:
        depth, probe = 0, indices
        while isinstance(probe, (list, tuple)) and probe and isinstance(probe[0], (list, tuple)):
            depth, probe = depth + 1, probe[0]
        if depth < 1 or depth > 3:
            raise ValueError("indices: must be nested lists [q_blocks][kv], [heads][q_blocks][kv] "
                             "or [batch][heads][q_blocks][kv]")
        lead, nested = [], list(indices)
        for _ in range(depth - 1):
            sizes = {len(group) for group in nested}
            if len(sizes) != 1:
                raise ValueError("indices: the outer lists must all have one length")
            lead.append(len(nested[0]))
            nested = [row for group in nested for row in group]
        lead = [len(indices)] + lead[:-1] if depth > 1 else []
        nested = [[int(j) for j in row] for row in nested]
    batch = int(lead[0]) if len(lead) == 2 else 1
    heads = int(lead[-1]) if len(lead) >= 1 else 1
    return _ext.Mask._from_index_lists(nested, int(nq), int(nk), batch, heads, int(q_block),
                                       int(kv_block))


BlockMask.from_indices = staticmethod(_from_indices)


_LAYOUTS = ("bhsd", "bshd")


def _array(x, name: str, layout: str = "bhsd", rows: bool = False):
    """x as an array attnkit can view: [B, H, N, D] (or [B, H, N] with rows), head dim unit-stride."""
    if x is None:
        raise TypeError(f"{name}: is required, got None")
    if hasattr(x, "requires_grad") and hasattr(x, "detach"):  # a torch tensor
        if x.device.type != "cpu":
            raise ValueError(f"{name}: must be on the CPU, got device {x.device}")
        x = x.detach()
    elif not isinstance(x, np.ndarray):
        if not hasattr(x, "__dlpack__"):
            raise TypeError(f"{name}: expected an array (numpy or DLPack), got {type(x).__name__}")
        x = np.from_dlpack(x)
    want = 3 if rows else 4
    if len(x.shape) != want:
        raise ValueError(f"{name}: must have rank {want}, got shape {list(x.shape)}")
    if layout == "bshd":
        axes = (0, 2, 1) if rows else (0, 2, 1, 3)
        x = x.transpose(*axes) if isinstance(x, np.ndarray) else x.permute(*axes)
    if isinstance(x, np.ndarray) and any(s < 0 for s in x.strides):
        x = np.ascontiguousarray(x)  # reversed views: the kernels walk rows forwards
    if not rows and x.shape[-1] > 1:
        stride = x.strides[-1] // x.itemsize if isinstance(x, np.ndarray) else x.stride(-1)
        if stride != 1:
            x = np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()
    return x


def _layout(layout: str) -> str:
    if layout not in _LAYOUTS:
        raise ValueError(f"layout: must be 'bhsd' or 'bshd', got {layout!r}")
    return layout


def _scale(scale) -> float:
    if scale is None:
        return 0.0
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale: expected a number, got {type(scale).__name__}") from None
    if value == 0.0 or not np.isfinite(value):
        raise ValueError(f"scale: must be finite and non-zero, got {scale!r}")
    return value


def _dropout(dropout_p) -> float:
    try:
        value = float(dropout_p)
    except (TypeError, ValueError):
        raise TypeError(f"dropout_p: expected a number, got {type(dropout_p).__name__}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout_p: must be in [0, 1), got {dropout_p!r}")
    return value


def _seed(seed, name: str = "dropout_seed") -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ValueError(f"{name}: must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _threads(threads) -> int:
    if threads is None:
        return 0
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads: must be a positive integer, got {threads!r}")
    return int(threads)


def _shape(x):
    return tuple(int(s) for s in x.shape)


class Pattern:
    """A sparse-attention mechanism from its spec string, e.g. Pattern("window:size=128").

    .name, .spec (canonical, every parameter), .family ("static", "grid", "dynamic"),
    .direction ("causal", "bidirectional", "caller"); .plan(...) -> BlockMask; .run(...).
    """

    def __init__(self, spec: str):
        if not isinstance(spec, str):
            raise TypeError(f"pattern: expected a spec string, got {type(spec).__name__}")
        self._pattern = _ext.Pattern(spec)

    name = property(lambda self: self._pattern.name)
    spec = property(lambda self: self._pattern.spec)
    family = property(lambda self: self._pattern.family)
    direction = property(lambda self: self._pattern.direction)

    def __repr__(self) -> str:
        return f"Pattern({self.spec!r})"

    def plan(self, q=None, k=None, *, nq=None, nk=None, heads=1, kv_heads=None, batch=1,
             dim=64, causal=False, threads=None) -> BlockMask:
        """The plan for these inputs: from q and k ([B, H, N, D]) or from shapes alone (nq, nk,
        heads, kv_heads, batch, dim). Content-based patterns (family "dynamic") need q and k."""
        if q is not None:
            q = _array(q, "q")
            batch, heads, nq, dim = _shape(q)
        if k is not None:
            k = _array(k, "k")
            kv_heads, nk = int(k.shape[1]), int(k.shape[2])
        if nq is None or nk is None:
            raise ValueError("nq: give q and k, or nq and nk")
        kv_heads = heads if kv_heads is None else kv_heads
        for name, value in (("nq", nq), ("nk", nk), ("heads", heads), ("kv_heads", kv_heads),
                            ("batch", batch), ("dim", dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        return self._pattern.plan(q, k, int(batch), int(heads), int(kv_heads), int(nq), int(nk),
                                  int(dim), bool(causal), _threads(threads))

    def run(self, q, k, v, *, causal=False, scale=None, threads=None, layout="bhsd"):
        """Plans, then runs: returns (out, lse, mask), the mask being what ran."""
        mask = self.plan(_array(q, "q", _layout(layout)), _array(k, "k", layout), causal=causal,
                         threads=threads)
        out, lse = attention(q, k, v, causal=causal, scale=scale, block_mask=mask, layout=layout,
                             return_lse=True, threads=threads)
        return out, lse, mask


def patterns() -> list[dict]:
    """Every registered pattern: name, summary, paper, family, direction and parameters (each a
    dict with name, default, help, type and, where they apply, lo/hi or choices)."""
    return _ext.patterns()


def _as_pattern(pattern) -> Pattern:
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, str):
        return Pattern(pattern)
    raise TypeError(f"pattern: expected a spec string or a Pattern, got {type(pattern).__name__}")


def _resolve_mask(pattern, block_mask, q, k, causal, threads):
    if pattern is not None and block_mask is not None:
        raise ValueError("block_mask: give pattern or block_mask, not both")
    if pattern is not None:
        return _as_pattern(pattern).plan(q, k, causal=causal, threads=threads)
    if block_mask is not None and not isinstance(block_mask, BlockMask):
        raise TypeError(f"block_mask: expected a BlockMask, got {type(block_mask).__name__}")
    return block_mask


def _out_like(x, dv: int):
    b, h, n = _shape(x)[:3]
    return np.empty((b, h, n, dv), dtype=np.float32)


def _to_layout(x, layout: str, rows: bool = False):
    if layout == "bhsd":
        return x
    return x.transpose(0, 2, 1) if rows else x.transpose(0, 2, 1, 3)


def attention(q, k, v, *, causal=False, scale=None, pattern=None, block_mask=None,
              layout="bhsd", return_lse=False, threads=None, dropout_p=0.0, dropout_seed=0):
    """Softmax attention: out [B, Hq, Nq, Dv] (or [B, Nq, Hq, Dv] with layout="bshd"), float32.

    q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]; Hq a multiple of Hkv (GQA).
    causal: bottom-right aligned (query i sees key j iff j <= i + Nk - Nq). scale: default
    1/sqrt(D). pattern: a spec string or Pattern, planned for these inputs; block_mask: a
    BlockMask (ANDed with causal). With return_lse, returns (out, lse) with lse [B, Hq, Nq].
    dropout_p: attention dropout on the normalised probabilities (kept ones scaled by
    1 / (1 - p); the LSE is the undropped one), its mask a function of dropout_seed and the
    indices (b, h, i, j), so attention_backward with the same seed redraws it."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    threads = _threads(threads)
    mask = _resolve_mask(pattern, block_mask, q, k, causal, threads or None)
    out = _out_like(q, int(v.shape[3]))
    lse = np.empty(_shape(q)[:3], dtype=np.float32)
    _ext.attention(q, k, v, out, lse, _scale(scale), bool(causal), threads, _dropout(dropout_p),
                   _seed(dropout_seed), mask, True)
    out = _to_layout(out, layout)
    return (out, _to_layout(lse, layout, True)) if return_lse else out


def attention_backward(q, k, v, out, lse, dout, *, dlse=None, causal=False, scale=None,
                       pattern=None, block_mask=None, layout="bhsd", threads=None, dropout_p=0.0,
                       dropout_seed=0):
    """Gradients (dq, dk, dv), float32, of attention(q, k, v, ...) given its out and lse and the
    loss's gradients dout (and dlse, when the LSE was used). A pattern is planned again from q
    and k (the forward's selection); pass the forward's block_mask to reuse its plan, and its
    dropout_p and dropout_seed to redraw its dropout mask."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    out, dout = _array(out, "out", layout), _array(dout, "dout", layout)
    lse = _array(lse, "lse", layout, rows=True)
    dlse = None if dlse is None else _array(dlse, "dlse", layout, rows=True)
    threads = _threads(threads)
    mask = _resolve_mask(pattern, block_mask, q, k, causal, threads or None)
    dq = np.empty(_shape(q), dtype=np.float32)
    dk = np.empty(_shape(k), dtype=np.float32)
    dv = np.empty(_shape(v), dtype=np.float32)
    _ext.attention_backward(q, k, v, out, lse, dout, dlse, dq, dk, dv, _scale(scale),
                            bool(causal), threads, _dropout(dropout_p), _seed(dropout_seed), mask,
                            True)
    return tuple(_to_layout(g, layout) for g in (dq, dk, dv))


def attention_column_sums(q, k, lse, *, causal=False, scale=None, per_kv_head=False,
                          layout="bhsd", threads=None):
    """Column sums of the normalised attention probabilities, from the forward's lse (H2O's
    heavy-hitter statistic, ACT's sink test): [B, H, Nk] float32 with
    C[b, h, j] = sum_i exp(scale q_i . k_j - lse_i) over the pairs the forward saw (causal as
    there). H = Hq, or Hkv with per_kv_head (summed over each GQA group's query heads)."""
    layout = _layout(layout)
    q, k = _array(q, "q", layout), _array(k, "k", layout)
    lse = _array(lse, "lse", layout, rows=True)
    b, hq, _, _ = _shape(q)
    hkv, nk = _shape(k)[1], _shape(k)[2]
    sums = np.empty((b, hkv if per_kv_head else hq, nk), dtype=np.float32)
    _ext.attention_column_sums(q, k, lse, sums, _scale(scale), bool(causal), _threads(threads))
    return sums


def merge(out_a, lse_a, out_b, lse_b):
    """Exact merge of two partial results over disjoint key sets: (out, lse) with
    lse = logaddexp(lse_a, lse_b) and out the LSE-weighted sum ([B, H, N, Dv] and [B, H, N])."""
    out_a, out_b = _array(out_a, "out_a"), _array(out_b, "out_b")
    lse_a, lse_b = _array(lse_a, "lse_a", rows=True), _array(lse_b, "lse_b", rows=True)
    out = np.empty(_shape(out_a), dtype=np.float32)
    lse = np.empty(_shape(lse_a), dtype=np.float32)
    _ext.merge(out_a, lse_a, out_b, lse_b, out, lse)
    return out, lse


def reference(q, k, v, *, causal=False, scale=None, pattern=None, block_mask=None,
              layout="bhsd", dropout_p=0.0, dropout_seed=0):
    """The float64 oracle (scalar, slow; small sizes): (out, lse) as attention() defines them,
    with the same dropout mask for the same dropout_seed."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    mask = _resolve_mask(pattern, block_mask, q, k, causal, None)
    out = _out_like(q, int(v.shape[3]))
    lse = np.empty(_shape(q)[:3], dtype=np.float32)
    _ext.reference(q, k, v, out, lse, _scale(scale), bool(causal), _dropout(dropout_p),
                   _seed(dropout_seed), mask)
    return _to_layout(out, layout), _to_layout(lse, layout, True)


from .model import Model  # noqa: E402  (uses _ext only)
from .operators import (  # noqa: E402  (uses the helpers above)
    index_attention,
    index_attention_backward,
    knn,
    lightning_attention,
    lightning_attention_backward,
    lightning_slopes,
    soft_attention,
    soft_attention_backward,
)
