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

Model: bytes (256 symbols) -> embedding + learned positions; `layers` pre-LN blocks of causal
multi-head attention (fused QKV, output projection) and a GELU MLP of 4 d; a final LN; the output
head tied to the embedding. No dropout: the comparison is of the attention alone.
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


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, pattern: str | None, attention: str) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
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
        self.d, self.heads, self.context, self.attention = d, heads, context, attention
        self.embed = nn.Embedding(256, d)
        self.position = nn.Embedding(context, d)
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
        x = self.embed(tokens) + self.position(torch.arange(n))
        for block, pattern in zip(self.blocks, patterns):
            x = block(x, pattern, self.attention)
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
