"""The operators of other shapes as PyTorch custom ops with autograd (re-exported by
attnkit.torch): Lightning Attention-2, SOFT and index-list attention.

    from attnkit.torch import lightning_attention, soft_attention, index_attention, knn
    out, state = lightning_attention(q, k, v, return_state=True)   # differentiable in both
    out = soft_attention(q, v, landmarks=conv(q))                   # dlandmarks reaches conv
    out = index_attention(q, k, v, knn(points, 16))

Ops (namespace "attnkit", CPU, each with register_fake and register_autograd): lightning,
lightning_backward, soft, soft_backward, index_attention, index_attention_backward. Outputs are
computed in float32 and returned in q's dtype; states and LSEs stay float32.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _ext, _layout, _scale
from .operators import _lists, _positive_int, _soft_options
from .operators import knn as _knn
from .torch import _bhsd, _views

__all__ = ["lightning_attention", "soft_attention", "index_attention", "knn"]


def _f32(shape, like):
    return like.new_empty(shape, dtype=torch.float32)


# ---- Lightning ----

def _slope_list(slopes: torch.Tensor | None) -> list[float]:
    return [] if slopes is None else [float(s) for s in slopes.detach().cpu().double()]


@torch.library.custom_op("attnkit::lightning", mutates_args=(), device_types="cpu")
def _lightning_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor | None,
                  state: torch.Tensor | None, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    out = torch.empty((b, h, n, v.shape[3]), dtype=torch.float32)
    state_out = torch.empty((b, h, d, v.shape[3]), dtype=torch.float32)
    _ext.lightning(*_views(q, k, v), _slope_list(slopes), *_views(state, out, state_out), block, 0)
    return out, state_out


@_lightning_op.register_fake
def _(q, k, v, slopes, state, block):
    b, h, n, d = q.shape
    return _f32((b, h, n, v.shape[3]), q), _f32((b, h, d, v.shape[3]), q)


@torch.library.custom_op("attnkit::lightning_backward", mutates_args=(), device_types="cpu")
def _lightning_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           slopes: torch.Tensor | None, state: torch.Tensor | None,
                           dout: torch.Tensor, dstate: torch.Tensor | None, block: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    dq = torch.empty(q.shape, dtype=torch.float32)
    dk = torch.empty(k.shape, dtype=torch.float32)
    dv = torch.empty(v.shape, dtype=torch.float32)
    dstate_in = torch.empty((b, h, d, v.shape[3]), dtype=torch.float32)
    _ext.lightning_backward(*_views(q, k, v), _slope_list(slopes),
                            *_views(state, dout.contiguous(), dstate, dq, dk, dv, dstate_in),
                            block, 0)
    return dq, dk, dv, dstate_in


@_lightning_backward_op.register_fake
def _(q, k, v, slopes, state, dout, dstate, block):
    b, h, n, d = q.shape
    return (_f32(q.shape, q), _f32(k.shape, k), _f32(v.shape, v),
            _f32((b, h, d, v.shape[3]), q))


def _lightning_setup(ctx, inputs, output):
    q, k, v, slopes, state, block = inputs
    ctx.save_for_backward(q, k, v, slopes, state)
    ctx.block = block


def _lightning_backward(ctx, dout, dstate):
    q, k, v, slopes, state = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros((*q.shape[:3], v.shape[3]), dtype=torch.float32)
    dstate = None if dstate is None else dstate.float().contiguous()  # sum()'s grad is expanded
    dq, dk, dv, dstate_in = _lightning_backward_op(q, k, v, slopes, state, dout, dstate,
                                                   ctx.block)
    return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None,
            None if state is None else dstate_in, None)


_lightning_op.register_autograd(_lightning_backward, setup_context=_lightning_setup)


def lightning_attention(q, k, v, slopes=None, *, state=None, return_state=False, block=64,
                        layout="bhsd"):
    """Differentiable Lightning Attention-2 (see attnkit.lightning_attention for the rule):
    q, k [B, H, N, D], v [B, H, N, E] (layout="bshd": [B, N, H, D]); slopes [H] (default the
    official rule; no gradient); state [B, H, D, E] carried from earlier tokens. Returns out in
    q's dtype and, with return_state, the float32 state after the last token; gradients flow to
    q, k, v and the state."""
    layout = _layout(layout)
    q, k, v = _bhsd(layout, (q, "q"), (k, "k"), (v, "v"))
    b, h, _, d = q.shape
    if slopes is not None:
        slopes = torch.as_tensor(slopes, dtype=torch.float32)
        if slopes.shape != (h,):
            raise ValueError(f"slopes: must have one entry per head ({h}), got shape "
                             f"{list(slopes.shape)}")
    if state is not None:
        want = (b, h, d, v.shape[3])
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != want:
            raise ValueError(f"state: must be a tensor [B, H, D, E] = {list(want)}")
        state = state.float().contiguous()
    out, state_out = _lightning_op(q, k, v, slopes, state, _positive_int(block, "block"))
    out = out.to(q.dtype)
    if layout == "bshd":
        out = out.transpose(1, 2)
    return (out, state_out) if return_state else out


# ---- SOFT ----

@torch.library.custom_op("attnkit::soft", mutates_args=(), device_types="cpu")
def _soft_op(q: torch.Tensor, v: torch.Tensor, landmarks: torch.Tensor | None, grid_h: int,
             grid_w: int, stride: int, scale: float, iterations: int,
             exact: bool) -> torch.Tensor:
    out = torch.empty((*q.shape[:3], v.shape[3]), dtype=torch.float32)
    _ext.soft(*_views(q, v, landmarks), grid_h, grid_w, stride, scale, iterations, exact,
              *_views(out), 0)
    return out


@_soft_op.register_fake
def _(q, v, landmarks, grid_h, grid_w, stride, scale, iterations, exact):
    return _f32((*q.shape[:3], v.shape[3]), q)


@torch.library.custom_op("attnkit::soft_backward", mutates_args=(), device_types="cpu")
def _soft_backward_op(q: torch.Tensor, v: torch.Tensor, landmarks: torch.Tensor | None,
                      grid_h: int, grid_w: int, stride: int, scale: float, iterations: int,
                      exact: bool, dout: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = torch.empty(q.shape, dtype=torch.float32)
    dv = torch.empty(v.shape, dtype=torch.float32)
    dl = torch.empty(landmarks.shape if landmarks is not None else (0,), dtype=torch.float32)
    _ext.soft_backward(*_views(q, v, landmarks), grid_h, grid_w, stride, scale, iterations, exact,
                       *_views(dout.contiguous(), dq, dv, dl if landmarks is not None else None),
                       0)
    return dq, dv, dl


@_soft_backward_op.register_fake
def _(q, v, landmarks, grid_h, grid_w, stride, scale, iterations, exact, dout):
    return (_f32(q.shape, q), _f32(v.shape, v),
            _f32(landmarks.shape if landmarks is not None else (0,), q))


def _soft_setup(ctx, inputs, output):
    q, v, landmarks, *options = inputs
    ctx.save_for_backward(q, v, landmarks)
    ctx.options = options


def _soft_backward(ctx, dout):
    q, v, landmarks = ctx.saved_tensors
    dq, dv, dl = _soft_backward_op(q, v, landmarks, *ctx.options, dout)
    return (dq.to(q.dtype), dv.to(v.dtype),
            None if landmarks is None else dl.to(landmarks.dtype), *([None] * 6))


_soft_op.register_autograd(_soft_backward, setup_context=_soft_setup)


def soft_attention(q, v, *, landmarks=None, grid=None, stride=None, scale=None,
                   inverse="newton", newton_iterations=20, layout="bhsd"):
    """Differentiable SOFT (see attnkit.soft_attention for the rule): q [B, H, N, D],
    v [B, H, N, E]; landmarks [B, H, m, D] in Q' units (e.g. a convolution's output: it gets its
    gradient) or pooled with grid=(height, width) and stride. Returns out in q's dtype."""
    layout = _layout(layout)
    q, v = _bhsd(layout, (q, "q"), (v, "v"))
    if landmarks is not None:
        (landmarks,) = _bhsd(layout, (landmarks, "landmarks"))
    grid_h, grid_w, stride, iterations, exact = _soft_options(grid, stride, inverse,
                                                              newton_iterations)
    out = _soft_op(q, v, landmarks, grid_h, grid_w, stride,
                   0.0 if scale is None else _scale(scale), iterations, exact).to(q.dtype)
    return out.transpose(1, 2) if layout == "bshd" else out


# ---- Index lists ----

@torch.library.custom_op("attnkit::index_attention", mutates_args=(), device_types="cpu")
def _index_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padded: torch.Tensor | None,
              offsets: torch.Tensor | None, columns: torch.Tensor | None,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty((*q.shape[:3], v.shape[3]), dtype=torch.float32)
    lse = torch.empty(q.shape[:3], dtype=torch.float32)
    _ext.index_attention(*_views(q, k, v), *_list_views(padded, offsets, columns),
                         *_views(out, lse), scale, 0)
    return out, lse


@_index_op.register_fake
def _(q, k, v, padded, offsets, columns, scale):
    return _f32((*q.shape[:3], v.shape[3]), q), _f32(q.shape[:3], q)


@torch.library.custom_op("attnkit::index_attention_backward", mutates_args=(),
                         device_types="cpu")
def _index_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       padded: torch.Tensor | None, offsets: torch.Tensor | None,
                       columns: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
                       dout: torch.Tensor, dlse: torch.Tensor | None,
                       scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = torch.empty(q.shape, dtype=torch.float32)
    dk = torch.empty(k.shape, dtype=torch.float32)
    dv = torch.empty(v.shape, dtype=torch.float32)
    _ext.index_attention_backward(*_views(q, k, v), *_list_views(padded, offsets, columns),
                                  *_views(out, lse, dout.contiguous(), dlse, dq, dk, dv), scale, 0)
    return dq, dk, dv


@_index_backward_op.register_fake
def _(q, k, v, padded, offsets, columns, out, lse, dout, dlse, scale):
    return _f32(q.shape, q), _f32(k.shape, k), _f32(v.shape, v)


def _list_views(padded, offsets, columns):
    return [None if t is None else t.numpy() for t in (padded, offsets, columns)]


def _index_setup(ctx, inputs, output):
    q, k, v, padded, offsets, columns, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, padded, offsets, columns, out, lse)
    ctx.scale = scale


def _index_backward(ctx, dout, dlse):
    q, k, v, padded, offsets, columns, out, lse = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dlse = None if dlse is None else dlse.contiguous()
    dq, dk, dv = _index_backward_op(q, k, v, padded, offsets, columns, out, lse, dout, dlse,
                                    ctx.scale)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


_index_op.register_autograd(_index_backward, setup_context=_index_setup)


def index_attention(q, k, v, indices, *, scale=None, return_lse=False, layout="bhsd"):
    """Differentiable index-list attention (see attnkit.index_attention): q [B, Hq, Nq, D],
    k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]; indices an integer array or tensor [Nq, K],
    [Hq|1, Nq, K] or [B|1, Hq|1, Nq, K] (-1 = padding), or a CSR pair (offsets, columns).
    Returns out in q's dtype (and with return_lse the float32 LSE [B, Hq, Nq], itself
    differentiable)."""
    layout = _layout(layout)
    q, k, v = _bhsd(layout, (q, "q"), (k, "k"), (v, "v"))
    padded, offsets, columns = (None if a is None else torch.from_numpy(a)
                                for a in _lists(indices))
    out, lse = _index_op(q, k, v, padded, offsets, columns, _scale(scale))
    out = out.to(q.dtype)
    if layout == "bshd":
        out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, lse) if return_lse else out


def knn(points, k: int) -> torch.Tensor:
    """attnkit.knn on a tensor (no gradient: the lists are discrete): [n, 3] -> int32 [n, k],
    [B, n, 3] -> [B, 1, n, k]."""
    return torch.from_numpy(np.asarray(_knn(points, k)))
