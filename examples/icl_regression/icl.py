"""In-context linear regression with one layer of multi-head softmax attention (He, Pan, Chen,
Yang, "In-Context Linear Regression Demystified", ICML 2025, arXiv 2503.12734; code
XintianPan/ICL_linear), with attnkit.torch as the attention.

The paper's setup, as its code runs it:
  data, fresh every step: x_l, x_q ~ N(0, I_d), beta ~ N(0, I_d / d) (the code's sqrt(1/d), not
  the notebook text's N(0, I)), y = beta^T x + eps with Var(eps) = 0.1 (the query's y too);
  d = 5, L = 40 context pairs; tokens z_l = [x_l; y_l], the query [x_q; 0].
  model: y_hat = O [head_1; ...; head_H],  head_h = sum_l softmax_l(k_l . q / sqrt(d + 1)) v_l
  with q = W_Q^h z_q, k_l = W_K^h z_l, v_l = W_V^h z_l, every W (d + 1) x (d + 1), O: H (d + 1)
  -> 1 without bias; the query attends to the L context tokens only (not to itself); no
  positions. MSE on y_q; Adam, lr 1e-3, batch 256; PyTorch's default initialisation.
The structure the paper predicts after training (`structure()` measures it):
  - per head, the x-block of W_K^T W_Q (its top-left d x d) is close to omega_h I;
  - u_h = O_h W_V^h (1 x (d + 1)) is concentrated on its last (y) entry mu_h;
  - the mu_h sum to about zero (H = 2: two heads of opposite sign), like one step of GD.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import attnkit.torch as at

D = 5
CONTEXT = 40
NOISE_VARIANCE = 0.1


def tasks(batch: int, length: int, generator: torch.Generator):
    """-> context [B, L, d + 1], query [B, d + 1] (its y entry 0), target y_q [B]."""
    x = torch.randn(batch, length + 1, D, generator=generator)
    beta = torch.randn(batch, D, 1, generator=generator) / math.sqrt(D)
    noise = torch.randn(batch, length + 1, generator=generator) * math.sqrt(NOISE_VARIANCE)
    y = (x @ beta).squeeze(-1) + noise
    z = torch.cat([x, y.unsqueeze(-1)], -1)
    query = z[:, length].clone()
    query[:, D] = 0.0
    return z[:, :length], query, y[:, length]


class SoftmaxICL(nn.Module):
    """attention="attnkit" (attnkit.torch) or "sdpa" (torch's scaled_dot_product_attention)."""

    def __init__(self, heads: int, attention: str = "attnkit"):
        super().__init__()
        if attention not in ("attnkit", "sdpa"):
            raise ValueError(f"attention: expected 'attnkit' or 'sdpa', got {attention!r}")
        if heads < 1:
            raise ValueError(f"heads: must be >= 1, got {heads}")
        width = D + 1
        self.heads, self.attention = heads, attention
        self.wq = nn.Linear(width, heads * width, bias=False)  # rows h*width..: W_Q^h
        self.wk = nn.Linear(width, heads * width, bias=False)
        self.wv = nn.Linear(width, heads * width, bias=False)
        self.out = nn.Linear(heads * width, 1, bias=False)

    def forward(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        b, n, width = context.shape
        q = self.wq(query).view(b, 1, self.heads, width)  # [B, 1 query, H, d + 1]
        k = self.wk(context).view(b, n, self.heads, width)
        v = self.wv(context).view(b, n, self.heads, width)
        scale = 1.0 / math.sqrt(width)
        if self.attention == "attnkit":
            o = at.attention(q, k, v, scale=scale, layout="bshd")
        else:
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), scale=scale).transpose(1, 2)
        return self.out(o.reshape(b, self.heads * width)).squeeze(-1)

    def per_head(self):
        """-> KQ [H, d + 1, d + 1] (W_K^T W_Q per head), u [H, d + 1] (O_h W_V^h)."""
        width = D + 1
        wq = self.wq.weight.detach().view(self.heads, width, width)
        wk = self.wk.weight.detach().view(self.heads, width, width)
        wv = self.wv.weight.detach().view(self.heads, width, width)
        o = self.out.weight.detach().view(self.heads, 1, width)
        return wk.transpose(1, 2) @ wq, (o @ wv).squeeze(1)


def fit(model: SoftmaxICL, steps: int, batch: int, seed: int, progress: bool = False):
    """Adam (lr 1e-3) on fresh tasks every step -> the list of per-step losses."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(1, steps + 1):
        context, query, target = tasks(batch, CONTEXT, generator)
        loss = ((model(context, query) - target) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if progress and step % 5000 == 0:
            recent = sum(losses[-1000:]) / len(losses[-1000:])
            print(f"icl_regression: step {step}: mean loss of the last 1000 steps {recent:.4f}",
                  file=sys.stderr, flush=True)
    return losses


def structure(model: SoftmaxICL) -> dict:
    """The paper's three structural figures.
    kq_offdiag_ratio: max over the active heads (|mu_h| >= 10% of the largest) of
        mean |off-diagonal| / mean |diagonal| of the x-block of W_K^T W_Q;
    ov_last_share: sum_h |mu_h| / sum_h |u_h|_1 (1 when only the y entries are non-zero);
    head_sum_ratio: |sum_h mu_h| / sum_h |mu_h| (0 when the heads cancel)."""
    kq, u = model.per_head()
    mu = u[:, D]
    active = mu.abs() >= 0.1 * mu.abs().max()
    ratios = []
    for h in range(model.heads):
        block = kq[h, :D, :D]
        diagonal = block.diagonal().abs().mean()
        off = (block.abs().sum() - block.diagonal().abs().sum()) / (D * D - D)
        ratios.append(float(off / diagonal))
    return {
        "kq_offdiag_ratio": max(r for r, a in zip(ratios, active.tolist()) if a),
        "ov_last_share": float(mu.abs().sum() / u.abs().sum()),
        "head_sum_ratio": float(mu.sum().abs() / mu.abs().sum()),
        "per_head": [{"kq_offdiag_ratio": r, "mu": float(m),
                      "omega": float(kq[h, :D, :D].diagonal().mean())}
                     for h, (r, m) in enumerate(zip(ratios, mu.tolist()))],
    }


@torch.no_grad()
def mse(model: SoftmaxICL, length: int, samples: int, seed: int) -> float:
    """MSE against the noisy y_q over `samples` fresh tasks with `length` context pairs."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, samples, 5000):
        context, query, target = tasks(min(5000, samples - start), length, generator)
        total += float(((model(context, query) - target) ** 2).sum())
    return total / samples
