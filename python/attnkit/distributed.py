"""Context-parallel attention on torch.distributed (gloo on the CPU), with autograd.

The sequence is split across the ranks of a process group; each rank holds the queries, keys
and values of its positions (context_ranges) and gets the output rows of its queries, equal to
one process's attention over the whole sequence. The schemes, the shard layouts and the rules
are those of the C++ core (include/attnkit/distributed.h):

    ring       contiguous shards; K/V pass around the ring, each transfer (isend / irecv)
               in flight while the shard in hand is attended
    zigzag     2P chunks, rank r holding chunks r and 2P - 1 - r: equal causal work per rank
    allgather  one all-gather of K/V, then local attention

    import attnkit.torch as at
    q_local = at.context_shard(q, "zigzag")            # this rank's rows of a whole tensor
    out = at.context_parallel_attention(q_local, k_local, v_local, scheme="zigzag", causal=True)
    out.sum().backward()                               # the ring again, dK/dV travelling along

Causality is in global positions; a pattern (static family: window, document, power, ...) is in
global coordinates, each pair of shards running its part of the pattern's global mask. Every
partial attention is attnkit's kernel; partials merge exactly by LSE (attnkit.merge). The
backward recomputes from the merged O and LSE, dK/dV of each shard travelling with it around the
ring (one more pass brings them home); allgather sums them with an all_reduce.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.distributed as dist

from . import _ext, _layout, _scale

__all__ = ["context_parallel_attention", "context_ranges", "context_shard", "context_gather"]

_SCHEMES = ("ring", "zigzag", "allgather")


def _scheme(scheme: str) -> str:
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme: must be ring, zigzag or allgather, got {scheme!r}")
    return scheme


def _spec(pattern) -> str:
    if pattern is None:
        return ""
    spec = getattr(pattern, "spec", pattern)
    if not isinstance(spec, str):
        raise TypeError(f"pattern: expected a spec string or a Pattern, got {type(pattern).__name__}")
    return spec


def _rank_size(group):
    return dist.get_rank(group), dist.get_world_size(group)


def context_ranges(n: int, scheme: str = "zigzag", *, rank: int, size: int,
                   pattern=None) -> list[tuple[int, int]]:
    """The global positions [start, end) rank `rank` of `size` holds, in its shard's order (chunk
    boundaries whole blocks of the pattern's mask when there is one)."""
    spec = _spec(pattern)
    return _ext.context_shard(_scheme(scheme), int(n), int(rank), int(size),
                              _ext.context_alignment(spec, int(n)))


def context_shard(x: torch.Tensor, scheme: str = "zigzag", *, group=None, pattern=None,
                  dim: int = 2) -> torch.Tensor:
    """This rank's shard of a whole-sequence tensor: its positions along `dim`, concatenated."""
    rank, size = _rank_size(group)
    ranges = context_ranges(x.shape[dim], scheme, rank=rank, size=size, pattern=pattern)
    return torch.cat([x.narrow(dim, a, b - a) for a, b in ranges], dim=dim)


def context_gather(x: torch.Tensor, n: int, scheme: str = "zigzag", *, group=None, pattern=None,
                   dim: int = 2) -> torch.Tensor:
    """The whole sequence [.., n, ..] from every rank's shard (an all_gather; not differentiable)."""
    rank, size = _rank_size(group)
    ranges = [context_ranges(n, scheme, rank=r, size=size, pattern=pattern) for r in range(size)]
    cap = max(sum(b - a for a, b in rr) for rr in ranges)
    padded = torch.zeros(*x.shape[:dim], cap, *x.shape[dim + 1:], dtype=x.dtype)
    padded.narrow(dim, 0, x.shape[dim]).copy_(x)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    whole = torch.empty(*x.shape[:dim], n, *x.shape[dim + 1:], dtype=x.dtype)
    for r in range(size):
        at = 0
        for a, b in ranges[r]:
            whole.narrow(dim, a, b - a).copy_(parts[r].narrow(dim, at, b - a))
            at += b - a
    return whole


@lru_cache(maxsize=64)
def _planner(spec: str, batch: int, heads_q: int, heads_kv: int, n: int, dim: int, causal: bool):
    return _ext.PairPlanner(spec, batch, heads_q, heads_kv, n, dim, causal)


def _np(t):
    """The tensor as the extension takes it (numpy view; bfloat16 through DLPack)."""
    return None if t is None else (t if t.dtype == torch.bfloat16 else t.detach().numpy())


class _Ring:
    """One call's layout: who holds what, the pair planner, and the transfers around the ring."""

    def __init__(self, q, k, v, group, scheme, causal, spec, n):
        self.group, self.scheme, self.causal = group, scheme, causal
        self.rank, self.size = _rank_size(group)
        self.ranges = [context_ranges(n, scheme, rank=r, size=self.size, pattern=spec or None)
                       for r in range(self.size)]
        self.cap = max(sum(b - a for a, b in rr) for rr in self.ranges)
        mine = sum(b - a for a, b in self.ranges[self.rank])
        for x, name in ((q, "q"), (k, "k"), (v, "v")):
            if x.shape[2] != mine:
                raise ValueError(f"{name}: rank {self.rank} of {self.size} holds {mine} of the {n} "
                                 f"tokens under {scheme}, but {name} has {x.shape[2]}")
        b, hq, _, d = q.shape
        self.planner = _planner(spec, b, hq, k.shape[1], n, d, causal)
        self.peers = [dist.get_global_rank(group, r) if group is not None else r
                      for r in ((self.rank + 1) % self.size, (self.rank - 1) % self.size)]

    def padded(self, x):
        out = torch.zeros(*x.shape[:2], self.cap, x.shape[3], dtype=x.dtype)
        out[:, :, :x.shape[2]] = x
        return out

    def pairs(self, src):
        """(query offset, query range, key offset, key range, kind, mask) of this rank against
        shard `src`, skipping the pairs that see nothing."""
        q_at = 0
        for qa, qb in self.ranges[self.rank]:
            k_at = 0
            for ka, kb in self.ranges[src]:
                kind, mask = self.planner.plan(qa, qb, ka, kb)
                if kind != 0:
                    yield q_at, qb - qa, k_at, kb - ka, kind == 2, mask
                k_at += kb - ka
            q_at += qb - qa

    def start(self, tensors, tag):
        """Sends `tensors` to the next rank and receives their likes from the previous one (the
        tag keeps K/V and the gradients travelling beside them apart)."""
        received = [torch.empty_like(t) for t in tensors]
        ops = [dist.P2POp(dist.isend, t, self.peers[0], self.group, tag) for t in tensors]
        ops += [dist.P2POp(dist.irecv, t, self.peers[1], self.group, tag) for t in received]
        return dist.batch_isend_irecv(ops), received

    def shards(self, tensors):
        """(src, tensors of shard src) for every shard: the ring, or one all-gather."""
        if self.scheme == "allgather":
            gathered = []
            for t in tensors:
                parts = [torch.empty_like(t) for _ in range(self.size)]
                dist.all_gather(parts, t, group=self.group)
                gathered.append(parts)
            for src in range(self.size):
                yield src, [parts[src] for parts in gathered]
            return
        held = tensors
        for step in range(self.size):
            src = (self.rank - step) % self.size
            flight = self.start(held, 0) if step + 1 < self.size else None
            yield src, held
            if flight is not None:
                for request in flight[0]:
                    request.wait()
                held = flight[1]


def _threads() -> int:
    return max(1, torch.get_num_threads())


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group, scheme, causal, scale, spec, n):
        ring = _Ring(q, k, v, group, scheme, causal, spec, n)
        b, hq, nq, _ = q.shape
        out = torch.zeros(b, hq, nq, v.shape[3], dtype=torch.float32)
        lse = torch.full((b, hq, nq), float("-inf"), dtype=torch.float32)
        written = set()
        for src, (ks, vs) in ring.shards([ring.padded(k), ring.padded(v)]):
            for q_at, q_len, k_at, k_len, diagonal, mask in ring.pairs(src):
                qs = q[:, :, q_at:q_at + q_len]
                kk, vv = ks[:, :, k_at:k_at + k_len], vs[:, :, k_at:k_at + k_len]
                o, l = out[:, :, q_at:q_at + q_len], lse[:, :, q_at:q_at + q_len]
                if q_at in written:
                    po = torch.empty(b, hq, q_len, v.shape[3], dtype=torch.float32)
                    pl = torch.empty(b, hq, q_len, dtype=torch.float32)
                    _ext.attention(_np(qs), _np(kk), _np(vv), _np(po), _np(pl), scale, diagonal,
                                   _threads(), 0.0, 0, mask, False)
                    _ext.merge(_np(o), _np(l), _np(po), _np(pl), _np(o), _np(l))
                else:
                    _ext.attention(_np(qs), _np(kk), _np(vv), _np(o), _np(l), scale, diagonal,
                                   _threads(), 0.0, 0, mask, False)
                    written.add(q_at)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring, ctx.scale = ring, scale
        return out.to(q.dtype), lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        ring, scale = ctx.ring, ctx.scale
        dout = (torch.zeros_like(out) if dout is None else dout).contiguous()
        dlse = None if dlse is None else dlse.float().contiguous()
        dq = torch.zeros(q.shape, dtype=torch.float32)
        kv = [ring.padded(k), ring.padded(v)]
        grads = [torch.zeros(*x.shape, dtype=torch.float32) for x in kv]
        every = [torch.zeros(ring.size, *g.shape, dtype=torch.float32) for g in grads]
        for src, (ks, vs) in ring.shards(kv):
            if ring.scheme == "allgather":
                grads = [e[src] for e in every]
            for q_at, q_len, k_at, k_len, diagonal, mask in ring.pairs(src):
                rows = slice(q_at, q_at + q_len)
                keys = slice(k_at, k_at + k_len)
                pq = torch.empty(q.shape[0], q.shape[1], q_len, q.shape[3], dtype=torch.float32)
                pk = torch.empty(k.shape[0], k.shape[1], k_len, k.shape[3], dtype=torch.float32)
                pv = torch.empty(v.shape[0], v.shape[1], k_len, v.shape[3], dtype=torch.float32)
                _ext.attention_backward(
                    _np(q[:, :, rows]), _np(ks[:, :, keys]), _np(vs[:, :, keys]),
                    _np(out[:, :, rows]), _np(lse[:, :, rows]), _np(dout[:, :, rows]),
                    _np(None if dlse is None else dlse[:, :, rows]), _np(pq), _np(pk), _np(pv),
                    scale, diagonal, _threads(), 0.0, 0, mask, False)
                dq[:, :, rows] += pq
                grads[0][:, :, keys] += pk
                grads[1][:, :, keys] += pv
            if ring.scheme != "allgather":  # the accumulators follow their shard
                requests, grads = ring.start(grads, 1)
                for request in requests:
                    request.wait()
        if ring.scheme == "allgather":
            for e in every:
                dist.all_reduce(e, group=ring.group)
            grads = [e[ring.rank] for e in every]
        n = k.shape[2]
        dk, dv = grads[0][:, :, :n], grads[1][:, :, :n]
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None,
                None)


def context_parallel_attention(q, k, v, *, group=None, scheme="zigzag", causal=False,
                               pattern=None, scale=None, return_lse=False, layout="bhsd"):
    """Softmax attention over a sequence split across the ranks of `group` (default: the world;
    gloo on the CPU). q [B, Hq, n_r, D], k [B, Hkv, n_r, D], v [B, Hkv, n_r, Dv]: this rank's
    shard (context_shard / context_ranges), GQA as attnkit.torch.attention. Returns this rank's
    output rows in q's dtype (and with return_lse the float32 LSE [B, Hq, n_r]); differentiable
    in q, k and v. Every rank calls it together, with the same shapes and arguments."""
    from .torch import _bhsd

    layout = _layout(layout)
    q, k, v = _bhsd(layout, (q, "q"), (k, "k"), (v, "v"))
    if not dist.is_initialized():
        raise ValueError("group: torch.distributed is not initialised (init_process_group)")
    rank, size = _rank_size(group)
    sizes = [torch.zeros((), dtype=torch.int64) for _ in range(size)]
    dist.all_gather(sizes, torch.tensor(q.shape[2], dtype=torch.int64), group=group)
    n = int(sum(int(s) for s in sizes))
    out, lse = _ContextParallel.apply(q, k, v, group, _scheme(scheme), bool(causal),
                                      0.0 if scale is None else _scale(scale), _spec(pattern), n)
    if layout == "bshd":
        out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, lse) if return_lse else out
