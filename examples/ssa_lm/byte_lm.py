"""A small byte-level causal transformer LM whose attention is attnkit.torch: dense causal, or
SSA (Stochastically Subsampled self-Attention; Hussain, Zaki, Subramanian, "The Information
Pathways Hypothesis: Transformers are Dynamic Self-Ensembles", KDD 2023) in training.

SSA's rule (the paper): each training step attends through a random subsample of the
connectivity, about 1/ratio of it, with a locally biased sampler; evaluation is dense (the
paper's main claim: dense-evaluated quality as good as or better than dense training, for 4-8x
less attention compute in training), or the self-ensemble: the mean of the predictions of several
independently subsampled passes. The paper publishes no sampler code; this model uses attnkit's
`ssa` pattern (block-level, harmonic local bias, the diagonal block always kept; its file,
src/patterns/static/ssa.cc, states the rule), resampled per step and per layer through its seed.

Model: bytes (256 symbols) -> embedding; `layers` pre-LN blocks of causal multi-head attention
(fused QKV, rotary positions on Q and K, output projection) and a GELU MLP of 4 d; a final LN; the
output head tied to the embedding. No dropout: the comparison is of the attention alone.
Rotary rather than learned absolute positions: with learned positions and the GPT-2
initialisation, this model sat on the bigram plateau (3.6 bits per byte) for the whole CPU budget
at context 1024-2048 (the likely cause, not measured: attention starts uniform over up to
2,048 keys, so no previous-byte head forms); with rotary positions, which give every head the
relative offset from step 0, a dense run left the plateau within 100 steps.
"""

from __future__ import annotations

import math

import attnkit
import attnkit.torch as at
import torch
import torch.nn as nn
import torch.nn.functional as F


def ssa_spec(seed: int, ratio: int = 4) -> str:
    return f"ssa:ratio={ratio},seed={seed}"


def rotary_tables(context: int, head_dim: int, base: float = 10000.0):
    """cos, sin [context, head_dim / 2] of the rotary angles position * base^(-2 i / head_dim)."""
    inverse = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float64), inverse)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions on x [B, N, H, D]: the pair (x_i, x_{i + D/2}) turned by angle[n, i]."""
    n, half = x.shape[1], x.shape[-1] // 2
    c, s = cos[:n, None, :].to(x.dtype), sin[:n, None, :].to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, rotary, pattern: str | None, attention: str) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k = rotate(q, *rotary), rotate(k, *rotary)
        if attention == "attnkit":
            a = at.attention(q, k, v, causal=True, pattern=pattern, layout="bshd")
        else:  # torch SDPA with the same element mask, for the tests
            mask = None
            if pattern is not None:
                plan = attnkit.Pattern(pattern).plan(nq=n, nk=n, heads=1, causal=True)
                mask = torch.from_numpy(plan.to_dense()).bool()
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), attn_mask=mask,
                                               is_causal=mask is None).transpose(1, 2)
        x = x + self.proj(a.reshape(b, n, d))
        return x + self.mlp(self.mlp_norm(x))


class ByteLM(nn.Module):
    """attention="attnkit" or "sdpa" (the same model on torch SDPA)."""

    def __init__(self, layers: int = 4, d: int = 128, heads: int = 4, context: int = 2048,
                 attention: str = "attnkit"):
        super().__init__()
        if attention not in ("attnkit", "sdpa"):
            raise ValueError(f"attention: expected 'attnkit' or 'sdpa', got {attention!r}")
        if d % heads:
            raise ValueError(f"heads: {heads} does not divide d = {d}")
        if (d // heads) % 2:
            raise ValueError(f"heads: head dim d / heads = {d // heads} is odd; rotary positions "
                             "turn pairs of entries")
        self.d, self.heads, self.context, self.attention = d, heads, context, attention
        self.embed = nn.Embedding(256, d)
        cos, sin = rotary_tables(context, d // heads)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for block in self.blocks:  # residual projections scaled by depth (GPT-2)
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, tokens: torch.Tensor, patterns: list[str | None] | None = None):
        """tokens [B, N] bytes -> logits [B, N, 256]; patterns: one spec (or None: dense causal)
        per layer."""
        n = tokens.shape[1]
        if n > self.context:
            raise ValueError(f"tokens: {n} positions exceed the context of {self.context}")
        patterns = patterns or [None] * len(self.blocks)
        x = self.embed(tokens)
        rotary = (self.rotary_cos, self.rotary_sin)
        for block, pattern in zip(self.blocks, patterns):
            x = block(x, rotary, pattern, self.attention)
        return self.final_norm(x) @ self.embed.weight.T


def attention_pairs(pattern: str | None, n: int) -> int:
    """(query, key) pairs one head of one sequence attends: n (n + 1) / 2 dense causal."""
    if pattern is None:
        return n * (n + 1) // 2
    return round(attnkit.Pattern(pattern).plan(nq=n, nk=n, heads=1, causal=True).density * n * n)


def attention_gflops(model: ByteLM, pairs_per_layer: list[int], batch: int) -> float:
    """Attention FLOPs of one training step (forward and backward): per pair and head dim, the
    forward's two products (Q K^T, P V) and the backward's five (S recomputed, dP, dV, dQ, dK),
    2 flops each, over heads, the batch and the layers."""
    head_dim = model.d // model.heads
    return sum(2 * 7 * p * head_dim * model.heads * batch for p in pairs_per_layer) / 1e9
