"""Attention of other shapes on numpy (or DLPack) arrays: Lightning Attention-2, SOFT and
index-list (kNN) attention, each with its backward, and kNN lists for 3-D points.

Layouts, dtypes and errors are those of attnkit.attention: [B, H, N, D] arrays (layout="bshd"
for [B, N, H, D]), float32 / float16 / bfloat16 inputs, float32 outputs, ValueError or TypeError
naming the argument. The rules, defaults and the choices made where the papers are unclear are
stated in the C++ headers (include/attnkit/lightning.h, soft.h, index_attention.h).

    out, state = attnkit.lightning_attention(q, k, v, return_state=True)   # causal, decayed
    out = attnkit.lightning_attention(q_next, k_next, v_next, state=state)  # carried on
    out = attnkit.soft_attention(q, v, grid=(56, 56), stride=8)             # 49 pooled landmarks
    idx = attnkit.knn(points, 16)                                           # [n, 16] int32
    out = attnkit.index_attention(q, k, v, idx)                             # softmax over lists
"""

from __future__ import annotations

import numpy as np

from . import _array, _ext, _layout, _scale, _shape, _threads, _to_layout

__all__ = [
    "lightning_slopes",
    "lightning_attention",
    "lightning_attention_backward",
    "soft_attention",
    "soft_attention_backward",
    "index_attention",
    "index_attention_backward",
    "knn",
]


def _positive_int(value, name: str, low: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def _state(x, name: str, shape):
    """An optional state [B, H, D, E] as a contiguous float32 array (a copy when needed)."""
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().float().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != tuple(shape):
        raise ValueError(f"{name}: must be [B, H, D, E] = {list(shape)}, got {list(x.shape)}")
    return x


# ---- Lightning Attention-2 ----

def lightning_slopes(heads: int) -> np.ndarray:
    """The official per-head slopes (lambda_h = exp(-slope_h)): 2^(-8 (h + 1) / H) for H a power
    of two, the ALiBi-style interleaving otherwise. float32 [heads]."""
    return np.asarray(_ext.lightning_slopes(_positive_int(heads, "heads")), dtype=np.float32)


def _slopes(slopes, heads: int) -> list[float]:
    if slopes is None:
        return []
    values = np.asarray(slopes.detach() if hasattr(slopes, "detach") else slopes, dtype=np.float64)
    if values.shape != (heads,):
        raise ValueError(f"slopes: must have one entry per head ({heads}), got shape "
                         f"{list(values.shape)}")
    return [float(s) for s in values]


def lightning_attention(q, k, v, slopes=None, *, state=None, return_state=False, block=64,
                        layout="bhsd", threads=None):
    """Causal linear attention with per-head decay (Lightning Attention-2; no softmax, no scale):
    O[t] = sum_{s <= t} lambda_h^(t-s) (q_t . k_s) v_s + lambda_h^(t+1) q_t S0.

    q, k [B, H, N, D], v [B, H, N, E]; slopes [H] (default lightning_slopes(H)); state: the
    carried [B, H, D, E] state S0 (float32) of earlier tokens. Returns out [B, H, N, E] float32,
    and with return_state also the state after the last token (decode one token at a time by
    passing it back). block: tokens per block (the result does not depend on it)."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    b, h, n, d = _shape(q)
    e = int(v.shape[3])
    out = np.empty((b, h, n, e), dtype=np.float32)
    state_out = np.empty((b, h, d, e), dtype=np.float32) if return_state else None
    _ext.lightning(q, k, v, _slopes(slopes, h), _state(state, "state", (b, h, d, e)), out, state_out,
                   _positive_int(block, "block"), _threads(threads))
    out = _to_layout(out, layout)
    return (out, state_out) if return_state else out


def lightning_attention_backward(q, k, v, dout, slopes=None, *, state=None, dstate=None, block=64,
                                 layout="bhsd", threads=None):
    """Gradients of lightning_attention: (dq, dk, dv, dstate_in), float32, given dout (and dstate,
    the gradient of the returned state). dstate_in is None when no state was given. No gradient
    flows to the slopes (as in the official code)."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    dout = _array(dout, "dout", layout)
    b, h, n, d = _shape(q)
    e = int(v.shape[3])
    dq = np.empty((b, h, n, d), dtype=np.float32)
    dk = np.empty((b, h, n, d), dtype=np.float32)
    dv = np.empty((b, h, n, e), dtype=np.float32)
    state = _state(state, "state", (b, h, d, e))
    dstate_in = np.empty((b, h, d, e), dtype=np.float32) if state is not None else None
    _ext.lightning_backward(q, k, v, _slopes(slopes, h), state, dout,
                            _state(dstate, "dstate", (b, h, d, e)),
                            dq, dk, dv, dstate_in, _positive_int(block, "block"),
                            _threads(threads))
    dq, dk, dv = (_to_layout(g, layout) for g in (dq, dk, dv))
    return dq, dk, dv, dstate_in


# ---- SOFT ----

def _soft_options(grid, stride, inverse, newton_iterations):
    if grid is None:
        grid_h = grid_w = 0
    else:
        try:
            grid_h, grid_w = (int(x) for x in grid)
        except (TypeError, ValueError):
            raise ValueError(f"grid: must be (height, width), got {grid!r}") from None
    stride = 0 if stride is None else _positive_int(stride, "stride")
    if inverse not in ("newton", "exact"):
        raise ValueError(f"inverse: must be 'newton' or 'exact', got {inverse!r}")
    iterations = _positive_int(newton_iterations, "newton_iterations", 0)
    return grid_h, grid_w, stride, iterations, inverse == "exact"


def soft_attention(q, v, *, landmarks=None, grid=None, stride=None, scale=None,
                   inverse="newton", newton_iterations=20, layout="bhsd", threads=None):
    """SOFT's softmax-free attention (non-causal): K := Q, Q' = scale Q (default D^(-1/4)),
    Gaussian kernel G(a, b) = exp(-|a - b|^2 / 2), O = G(Q', L) Ninv(G(L, L)) G(L, Q') V, with
    Ninv the official 20-step Newton-Schulz iteration (inverse="exact" for K2^-1).

    q [B, H, N, D], v [B, H, N, E]. Landmarks L: given as [B, H, m, D] (in Q' units), or the mean
    of Q' over stride x stride windows of the grid=(height, width) token grid (or of `stride`
    consecutive tokens without grid). Returns out [B, H, N, E] float32."""
    layout = _layout(layout)
    q, v = _array(q, "q", layout), _array(v, "v", layout)
    lm = None if landmarks is None else _array(landmarks, "landmarks", layout)
    grid_h, grid_w, stride, iterations, exact = _soft_options(grid, stride, inverse,
                                                              newton_iterations)
    b, h, n, _ = _shape(q)
    out = np.empty((b, h, n, int(v.shape[3])), dtype=np.float32)
    _ext.soft(q, v, lm, grid_h, grid_w, stride, _soft_scale(scale), iterations, exact, out,
              _threads(threads))
    return _to_layout(out, layout)


def _soft_scale(scale) -> float:
    return 0.0 if scale is None else _scale(scale)


def soft_attention_backward(q, v, dout, *, landmarks=None, grid=None, stride=None, scale=None,
                            inverse="newton", newton_iterations=20, layout="bhsd", threads=None):
    """Gradients of soft_attention: (dq, dv, dlandmarks), float32 (dlandmarks None for pooled
    landmarks, whose gradient is part of dq). As the official code, the Newton result is taken
    as K2's exact inverse (no gradient through the iterations)."""
    layout = _layout(layout)
    q, v = _array(q, "q", layout), _array(v, "v", layout)
    dout = _array(dout, "dout", layout)
    lm = None if landmarks is None else _array(landmarks, "landmarks", layout)
    grid_h, grid_w, stride, iterations, exact = _soft_options(grid, stride, inverse,
                                                              newton_iterations)
    dq = np.empty(_shape(q), dtype=np.float32)
    dv = np.empty(_shape(v), dtype=np.float32)
    dl = None if lm is None else np.empty(_shape(lm), dtype=np.float32)
    _ext.soft_backward(q, v, lm, grid_h, grid_w, stride, _soft_scale(scale), iterations, exact,
                       dout, dq, dv, dl, _threads(threads))
    return (_to_layout(dq, layout), _to_layout(dv, layout),
            None if dl is None else _to_layout(dl, layout))


# ---- Index lists ----

def _int_array(x, name: str, dtype):
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: must hold integers, got {x.dtype}")
    if x.size and (x.min() < np.iinfo(dtype).min or x.max() > np.iinfo(dtype).max):
        raise ValueError(f"{name}: values must fit {np.dtype(dtype).name}, got range "
                         f"[{x.min()}, {x.max()}]")
    return np.ascontiguousarray(x, dtype=dtype)


def _lists(indices):
    """(padded, offsets, columns) for the extension: padded int32 [B|1, H|1, Nq, K] from an
    integer array of rank 2..4, or CSR (offsets int64, columns int32) from a pair."""
    if isinstance(indices, tuple):
        if len(indices) != 2:
            raise ValueError("indices: a CSR pair must be (offsets, columns)")
        offsets = _int_array(indices[0], "indices", np.int64)
        columns = _int_array(indices[1], "indices", np.int32)
        if offsets.ndim != 1 or columns.ndim != 1:
            raise ValueError("indices: CSR offsets and columns must be vectors")
        return None, offsets, columns
    padded = _int_array(indices, "indices", np.int32)
    if padded.ndim < 2 or padded.ndim > 4:
        raise ValueError(f"indices: must be [Nq, K], [H, Nq, K] or [B, H, Nq, K], got shape "
                         f"{list(padded.shape)}")
    return padded.reshape((1,) * (4 - padded.ndim) + padded.shape), None, None


def index_attention(q, k, v, indices, *, scale=None, return_lse=False, layout="bhsd",
                    threads=None):
    """Softmax attention of each query over its own list of keys (PointGS's kNN attention, or
    any token selection): O_i = sum_{j in L_i} softmax_j(scale q_i . k_j) v_j.

    q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (GQA as attention). indices: an
    integer array [Nq, K], [Hq or 1, Nq, K] or [B or 1, Hq or 1, Nq, K] with -1 as padding, or a
    CSR pair (offsets [Nq + 1], columns) shared by every batch and head. A key listed twice in a
    row is a ValueError; a row with no key gets O = 0 and LSE = -inf."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    padded, offsets, columns = _lists(indices)
    b, h, n, _ = _shape(q)
    out = np.empty((b, h, n, int(v.shape[3])), dtype=np.float32)
    lse = np.empty((b, h, n), dtype=np.float32)
    _ext.index_attention(q, k, v, padded, offsets, columns, out, lse, _scale(scale),
                         _threads(threads))
    out = _to_layout(out, layout)
    return (out, _to_layout(lse, layout, True)) if return_lse else out


def index_attention_backward(q, k, v, indices, out, lse, dout, *, dlse=None, scale=None,
                             layout="bhsd", threads=None):
    """Gradients (dq, dk, dv), float32, of index_attention given its out and lse and the loss's
    dout (and dlse); dk and dv summed over each GQA group."""
    layout = _layout(layout)
    q, k, v = _array(q, "q", layout), _array(k, "k", layout), _array(v, "v", layout)
    out, dout = _array(out, "out", layout), _array(dout, "dout", layout)
    lse = _array(lse, "lse", layout, rows=True)
    dlse = None if dlse is None else _array(dlse, "dlse", layout, rows=True)
    padded, offsets, columns = _lists(indices)
    dq = np.empty(_shape(q), dtype=np.float32)
    dk = np.empty(_shape(k), dtype=np.float32)
    dv = np.empty(_shape(v), dtype=np.float32)
    _ext.index_attention_backward(q, k, v, padded, offsets, columns, out, lse, dout, dlse, dq, dk,
                                  dv, _scale(scale), _threads(threads))
    return tuple(_to_layout(g, layout) for g in (dq, dk, dv))


def knn(points, k: int, *, threads=None) -> np.ndarray:
    """The k nearest neighbours of every 3-D point, nearest first, the point itself included
    (distance 0); ties go to the lower index; rows of clouds smaller than k are padded with -1.
    points [n, 3] -> int32 [n, k]; [B, n, 3] -> [B, 1, n, k], ready for index_attention."""
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    points = np.asarray(points)
    if points.dtype.kind != "f":
        raise TypeError(f"points: must hold floats, got {points.dtype}")
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"points: must be [n, 3] or [B, n, 3], got shape {list(points.shape)}")
    k = _positive_int(k, "k")
    clouds = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, points.shape[-2], 3)
    out = np.empty((clouds.shape[0], clouds.shape[1], k), dtype=np.int32)
    for c in range(clouds.shape[0]):
        _ext.knn(clouds[c], k, out[c], _threads(threads))
    return out[0] if points.ndim == 2 else out[:, None]
