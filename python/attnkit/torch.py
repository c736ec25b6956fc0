"""attnkit.torch: attnkit's kernels as PyTorch custom ops, with autograd and torch.compile.

    from attnkit.torch import attention
    out = attention(q, k, v, causal=True)                      # like F.scaled_dot_product_attention
    out = attention(q, k, v, pattern="window:size=128")        # a sparse pattern, trainable
    out.sum().backward()                                       # attnkit's C++ backward
    out = attention(q, k, v, causal=True, dropout_p=0.1)       # attention dropout (training)

Ops (namespace "attnkit", CPU): attnkit::attention(q, k, v, causal, scale, pattern, mask_id,
dropout_p, dropout_seed) -> (out, lse)
and attnkit::attention_backward(...) -> (dq, dk, dv), with register_fake (torch.compile traces
them without a graph break) and register_autograd. Outputs and gradients are computed in float32
and returned in the inputs' dtype. A pattern travels into the op as its spec string and is planned there:
static and grid patterns from the shapes alone (cached per shape), content-based ones from q and
k (again in the backward: the plan is a function of q and k, so the selection is the forward's).
A BlockMask travels as an integer id; the autograd context keeps it alive until the backward.
Dropout's mask is a function of a seed and the indices; the seed is drawn from torch's generator
(so torch.manual_seed reproduces it) unless given, and the backward redraws the same mask from it.

The operators of other shapes (lightning_attention, soft_attention, index_attention, knn) are
custom ops with autograd too: attnkit/torch_operators.py.
"""

from __future__ import annotations

import itertools
import weakref
from functools import lru_cache

import torch

from . import BlockMask, Pattern, _dropout, _ext, _layout, _scale, _seed

__all__ = ["attention", "register_transformers", "lightning_attention", "soft_attention",
           "index_attention", "knn", "context_parallel_attention", "context_ranges",
           "context_shard", "context_gather"]

# id -> BlockMask for the masks of calls in flight (weak: the caller and the autograd context
# hold them).
_masks: "weakref.WeakValueDictionary[int, BlockMask]" = weakref.WeakValueDictionary()
_next_id = itertools.count(1)
_ids: "weakref.WeakKeyDictionary[BlockMask, int]" = weakref.WeakKeyDictionary()


def _mask_id(mask: BlockMask | None) -> int:
    if mask is None:
        return 0
    found = _ids.get(mask)
    if found is None:
        found = next(_next_id)
        _ids[mask] = found
        _masks[found] = mask
    return found


def _mask_of(mask_id: int) -> BlockMask | None:
    if mask_id == 0:
        return None
    mask = _masks.get(mask_id)
    if mask is None:
        raise ValueError(f"block_mask: the mask of id {mask_id} no longer exists")
    return mask


def _views(*tensors):
    """The tensors as the extension takes them: numpy views (no copy; about 1 us each, against
    3 us for a DLPack import) except bfloat16, which numpy lacks and which goes through DLPack."""
    return [t if t is None or t.dtype == torch.bfloat16 else t.detach().numpy() for t in tensors]


@torch.library.custom_op("attnkit::attention", mutates_args=(), device_types="cpu")
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
                  pattern: str, mask_id: int, dropout_p: float,
                  dropout_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n, _ = q.shape
    out = torch.empty((b, h, n, v.shape[3]), dtype=torch.float32)
    lse = torch.empty((b, h, n), dtype=torch.float32)
    _ext.attention(*_views(q, k, v, out, lse), scale, causal, 0, dropout_p, dropout_seed % 2**64,
                   _mask(pattern, mask_id, q, k, causal), True)
    return out, lse


@_attention_op.register_fake
def _(q, k, v, causal, scale, pattern, mask_id, dropout_p, dropout_seed):
    b, h, n, _ = q.shape
    return (q.new_empty((b, h, n, v.shape[3]), dtype=torch.float32),
            q.new_empty((b, h, n), dtype=torch.float32))


@torch.library.custom_op("attnkit::attention_backward", mutates_args=(), device_types="cpu")
def _attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                           lse: torch.Tensor, dout: torch.Tensor, dlse: torch.Tensor | None,
                           causal: bool, scale: float, pattern: str, mask_id: int,
                           dropout_p: float,
                           dropout_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = torch.empty(q.shape, dtype=torch.float32)
    dk = torch.empty(k.shape, dtype=torch.float32)
    dv = torch.empty(v.shape, dtype=torch.float32)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    _ext.attention_backward(*_views(q, k, v, out, lse, dout, dlse, dq, dk, dv), scale, causal, 0,
                            dropout_p, dropout_seed % 2**64, _mask(pattern, mask_id, q, k, causal), False)
    return dq, dk, dv


@_attention_backward_op.register_fake
def _(q, k, v, out, lse, dout, dlse, causal, scale, pattern, mask_id, dropout_p, dropout_seed):
    return (q.new_empty(q.shape, dtype=torch.float32), k.new_empty(k.shape, dtype=torch.float32),
            v.new_empty(v.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, pattern, mask_id, dropout_p, dropout_seed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.scale, ctx.pattern, ctx.mask_id = causal, scale, pattern, mask_id
    ctx.dropout_p, ctx.dropout_seed = dropout_p, dropout_seed
    ctx.mask = _masks.get(mask_id)  # keeps the plan alive until the backward


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = _attention_backward_op(q, k, v, out, lse, dout, dlse, ctx.causal, ctx.scale,
                                        ctx.pattern, ctx.mask_id, ctx.dropout_p, ctx.dropout_seed)
    return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None, None)


_attention_op.register_autograd(_backward, setup_context=_setup_context)


@lru_cache(maxsize=64)
def _pattern(spec: str) -> Pattern:
    return Pattern(spec)


@lru_cache(maxsize=256)
def _shape_plan(spec: str, batch: int, heads: int, kv_heads: int, nq: int, nk: int, dim: int,
                causal: bool) -> BlockMask:
    return _pattern(spec).plan(nq=nq, nk=nk, heads=heads, kv_heads=kv_heads, batch=batch,
                               dim=dim, causal=causal)


def _mask(pattern: str, mask_id: int, q, k, causal: bool) -> BlockMask | None:
    """What one op call runs (inside the op, on real tensors, so torch.compile sees none of it):
    the pattern's plan (cached per shape for patterns that plan from shapes; planned from q and
    k, and so again in the backward, for content-based ones) or the registered block mask."""
    if not pattern:
        return _mask_of(mask_id)
    p = _pattern(pattern)
    if p.family != "dynamic":
        b, h, nq, d = (int(s) for s in q.shape)
        return _shape_plan(pattern, b, h, int(k.shape[1]), nq, int(k.shape[2]), d, causal)
    return p.plan(q, k, causal=causal)


def _check(x, name: str):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: must have rank 4, got shape {list(x.shape)}")
    if x.device.type != "cpu":
        raise ValueError(f"{name}: must be on the CPU, got device {x.device}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{name}: dtype {x.dtype} is not supported (float32, float16, bfloat16)")


def _bhsd(layout: str, *named):
    """Each (tensor, name) checked (_check) and seen as [B, H, N, D] with a unit-stride head
    dim (transposed from layout "bshd", copied only when the head dim is strided)."""
    out = []
    for x, name in named:
        _check(x, name)
        if layout == "bshd":
            x = x.transpose(1, 2)
        out.append(x if x.stride(-1) == 1 else x.contiguous())
    return out


def attention(q, k, v, *, causal=False, scale=None, pattern=None, block_mask=None, layout="bhsd",
              return_lse=False, dropout_p=0.0, dropout_seed=None):
    """Differentiable attention, shaped like F.scaled_dot_product_attention's inputs:
    q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (layout="bshd": [B, N, H, D]);
    Hq a multiple of Hkv (GQA, no repeat needed). Returns out in q's dtype (and, with
    return_lse, the float32 LSE [B, Hq, Nq], itself differentiable). dropout_p: attention
    dropout as SDPA's (applied whenever it is non-zero: pass 0.0 in eval mode); dropout_seed:
    its mask's seed, drawn from torch's generator when None (give one to keep torch.compile
    from breaking the graph on the draw)."""
    layout = _layout(layout)
    q, k, v = _bhsd(layout, (q, "q"), (k, "k"), (v, "v"))
    if pattern is not None and block_mask is not None:
        raise ValueError("block_mask: give pattern or block_mask, not both")
    if block_mask is not None and not isinstance(block_mask, BlockMask):
        raise TypeError(f"block_mask: expected a BlockMask, got {type(block_mask).__name__}")
    if pattern is not None:
        spec = pattern.spec if isinstance(pattern, Pattern) else pattern
        if not isinstance(spec, str):
            raise TypeError(f"pattern: expected a spec string or a Pattern, "
                            f"got {type(pattern).__name__}")
        if not torch.compiler.is_compiling():
            _pattern(spec)  # an unknown name fails here, naming "pattern"
    else:
        spec = ""
    dropout_p = _dropout(dropout_p)
    if dropout_seed is None:
        dropout_seed = int(torch.randint(0, 2**62, ()).item()) if dropout_p > 0.0 else 0
    # The op's int is signed 64-bit: seeds from 2**63 up travel as their two's complement.
    seed = _seed(dropout_seed)
    seed = seed - 2**64 if seed >= 2**63 else seed
    out, lse = _attention_op(q, k, v, bool(causal), _scale(scale), spec, _mask_id(block_mask),
                             dropout_p, seed)
    out = out.to(q.dtype)
    if layout == "bshd":
        out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, lse) if return_lse else out


def register_transformers() -> str:
    """Makes attn_implementation="attnkit" available to every transformers model (see
    attnkit.hf). Returns the name."""
    from . import hf

    return hf.register()


# The operators of other shapes (they use _check and _views above).
from .torch_operators import index_attention, knn, lightning_attention, soft_attention  # noqa: E402,F401
# Context parallelism on torch.distributed (attnkit/distributed.py).
from .distributed import (  # noqa: E402,F401
    context_gather,
    context_parallel_attention,
    context_ranges,
    context_shard,
)
