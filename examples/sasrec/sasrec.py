"""SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): the data
split, the model and the sampled-ranking evaluation, with attnkit.torch as the attention.

The paper's rule, as the authors' code (kang205/SASRec, TF1) runs it:
  x   = E[item] * sqrt(d) + P[position]            E: (items + 1) x d, row 0 (padding) zero
  x   = dropout(x) * keep                          keep: 1 where the item is not padding
  per block:  xn = LN(x);  a = softmax(LN(x) W_Q (x W_K)^T / sqrt(d / h) + mask) (x W_V)
              x  = a * keep + xn;  xn = LN(x);  x = (FFN(xn) + xn) * keep
  F   = LN(x);  score(item j at step t) = F_t . E_j (the input embedding, shared)
  mask: causal and key padding. Sequences are left-padded, so a padding query row sees no key:
  attnkit gives it O = 0 (and zero gradient); the authors' finite -2^32 + 1 gives a uniform row
  that the query mask (a * keep) then zeroes. Both paths here apply the query mask, so they agree.
Defaults (the paper's): d = 50, 2 blocks, 1 head, dropout 0.5, the last 50 items, layer-norm
epsilon 1e-8, Glorot-uniform weights and embeddings, zero biases.

Where this differs from the authors' code, and why:
  - dropout on the attention probabilities (the authors' 0.5) runs inside attnkit's fused kernel
    (attnkit.torch's dropout_p, its mask hashed from a seed drawn from torch's generator), so it
    draws other masks than SDPA's dropout for the same torch seed: the two paths agree exactly
    only with attention_dropout=0;
  - an epoch visits every user with two or more training items once, in a random order (the
    authors draw users with replacement, as many draws per epoch);
  - evaluation uses one fixed sample of users and of negatives per run (the authors redraw them
    at each evaluation), so that epochs are compared on the same candidates; negatives are
    items the user never interacted with (the authors exclude the training items only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import attnkit
import attnkit.torch as at

MAXLEN = 50
DATA = Path(__file__).resolve().parent / "data" / "Video.txt"  # the paper's Amazon Games


def read_interactions(path) -> tuple[np.ndarray, np.ndarray]:
    """One `user item` pair per line (ids from 1, each user's lines in time order) -> users, items."""
    try:
        pairs = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"data: {path} is not lines of two integers ({e})") from None
    if pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"data: {path} must hold lines of `user item`, got {pairs.shape[1]} columns")
    if pairs.min() < 1:
        raise ValueError(f"data: {path}: ids start at 1, found {pairs.min()}")
    return pairs[:, 0], pairs[:, 1]


@dataclass
class Split:
    """Leave-one-out: per user the last item is the test target, the second-last the validation
    target, the rest training; users with fewer than 3 items train only."""

    num_users: int
    num_items: int
    train: list[np.ndarray]  # index u - 1: user u's training items in time order
    valid: np.ndarray  # [users] validation item, 0 when the user has none
    test: np.ndarray  # [users] test item, 0 when the user has none
    train_keys: np.ndarray  # sorted user * (items + 1) + item over the training items
    all_keys: np.ndarray  # the same over every interaction

    @staticmethod
    def from_pairs(users: np.ndarray, items: np.ndarray) -> "Split":
        num_users, num_items = int(users.max()), int(items.max())
        order = np.argsort(users, kind="stable")  # keeps each user's time order
        users, items = users[order], items[order]
        starts = np.searchsorted(users, np.arange(1, num_users + 2))
        train, valid, test = [], np.zeros(num_users, np.int64), np.zeros(num_users, np.int64)
        for u in range(num_users):
            seq = items[starts[u]:starts[u + 1]]
            if len(seq) < 3:
                train.append(seq)
            else:
                train.append(seq[:-2])
                valid[u], test[u] = seq[-2], seq[-1]
        stride = num_items + 1
        train_keys = np.sort(np.concatenate(
            [np.full(len(t), u + 1) * stride + t for u, t in enumerate(train)]))
        return Split(num_users, num_items, train, valid, test, train_keys,
                     np.sort(users * stride + items))

    def key(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return users * (self.num_items + 1) + items


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[where] == keys


def sample_negatives(split: Split, users: np.ndarray, shape, exclude: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Items in 1..num_items that user users[i] has not in `exclude` (sorted keys), shape
    [len(users), *shape], drawn uniformly by rejection."""
    out = rng.integers(1, split.num_items + 1, size=(len(users), *shape))
    owner = np.broadcast_to(users.reshape(-1, *([1] * len(shape))), out.shape)
    bad = contains(exclude, split.key(owner, out))
    while bad.any():
        out[bad] = rng.integers(1, split.num_items + 1, size=int(bad.sum()))
        bad = contains(exclude, split.key(owner, out))
    return out


def left_padded(seq: np.ndarray, length: int = MAXLEN) -> np.ndarray:
    row = np.zeros(length, np.int64)
    tail = seq[-length:]
    if len(tail):
        row[length - len(tail):] = tail
    return row


def training_rows(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every user with >= 2 training items: input = train[:-1], next items = train[1:], both
    the last MAXLEN, left-padded -> users [n], inputs [n, MAXLEN], positives [n, MAXLEN]."""
    users = [u for u in range(split.num_users) if len(split.train[u]) >= 2]
    inputs = np.stack([left_padded(split.train[u][:-1]) for u in users])
    positives = np.stack([left_padded(split.train[u][1:]) for u in users])
    return np.array(users, np.int64) + 1, inputs, positives



def training_batch(split: Split, rows, pick: np.ndarray, rng: np.random.Generator):
    """The rows `pick` of training_rows(): (inputs, positives, negatives) as tensors [b, MAXLEN],
    one negative per position drawn outside the user's training items (0 where the next item is
    padding)."""
    users, inputs, positives = rows
    negatives = sample_negatives(split, users[pick], (inputs.shape[1],), split.train_keys, rng)
    negatives[positives[pick] == 0] = 0
    return (torch.from_numpy(inputs[pick]), torch.from_numpy(positives[pick]),
            torch.from_numpy(negatives))

class SASRec(nn.Module):
    """attention="attnkit" (attnkit.torch with a causal key-padding BlockMask) or "sdpa"
    (torch's scaled_dot_product_attention with the authors' finite mask): the same model."""

    def __init__(self, num_items: int, d: int = 50, blocks: int = 2, heads: int = 1,
                 dropout: float = 0.5, maxlen: int = MAXLEN, attention: str = "attnkit",
                 attention_dropout: float = 0.5):
        super().__init__()
        if attention not in ("attnkit", "sdpa"):
            raise ValueError(f"attention: expected 'attnkit' or 'sdpa', got {attention!r}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout: must be in [0, 1), got {attention_dropout}")
        self.attention_dropout = attention_dropout
        if d % heads:
            raise ValueError(f"heads: {heads} does not divide d = {d}")
        self.d, self.heads, self.attention = d, heads, attention
        self.item = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.position = nn.Embedding(maxlen, d)
        self.dropout = nn.Dropout(dropout)
        self.attn_norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.qkv = nn.ModuleList(nn.ModuleList(nn.Linear(d, d) for _ in range(3))
                                 for _ in range(blocks))
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout),
                                               nn.Linear(d, d), nn.Dropout(dropout))
                                 for _ in range(blocks))
        self.final_norm = nn.LayerNorm(d, eps=1e-8)
        for name, p in self.named_parameters():  # the authors' Glorot-uniform everywhere
            if p.dim() == 2 and "norm" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def attention_mask(self, seq: torch.Tensor):
        """Causal with key padding, for seq [B, L]: a BlockMask (attnkit) or the authors' finite
        additive mask [B, 1, L, L] (sdpa). Built once per forward, shared by the blocks."""
        b, n = seq.shape
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = causal[None, None] & (seq != 0)[:, None, None, :]  # [B, 1, L, L]
        if self.attention == "attnkit":
            return attnkit.BlockMask.from_dense(
                np.ascontiguousarray(allowed.expand(b, self.heads, n, n).numpy()), 64, 64)
        return torch.zeros(allowed.shape, dtype=self.item.weight.dtype).masked_fill(
            ~allowed, -2.0**32 + 1)

    def _attend(self, q, k, v, mask):
        """q, k, v [B, L, h, d/h] -> [B, L, h, d/h]."""
        if self.attention == "attnkit":
            return at.attention(q, k, v, block_mask=mask, layout="bshd",
                                dropout_p=self.attention_dropout if self.training else 0.0)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), attn_mask=mask,
                                             dropout_p=self.attention_dropout if self.training
                                             else 0.0)
        return out.transpose(1, 2)

    def features(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] item ids (0 = padding, left) -> F [B, L, d]."""
        b, n = seq.shape
        keep = (seq != 0).unsqueeze(-1).to(self.item.weight.dtype)
        x = self.item(seq) * math.sqrt(self.d) + self.position(torch.arange(n))
        x = self.dropout(x) * keep
        split = (b, n, self.heads, self.d // self.heads)
        mask = self.attention_mask(seq)
        for norm, (wq, wk, wv), ffn_norm, ffn in zip(self.attn_norm, self.qkv, self.ffn_norm,
                                                     self.ffn):
            xn = norm(x)
            a = self._attend(wq(xn).view(split), wk(x).view(split), wv(x).view(split), mask)
            x = a.reshape(b, n, self.d) * keep + xn
            xn = ffn_norm(x)
            x = (ffn(xn) + xn) * keep
        return self.final_norm(x)

    def loss(self, seq, positives, negatives) -> torch.Tensor:
        """Binary cross-entropy of each next item against one sampled negative, over the
        positions whose next item is not padding."""
        f = self.features(seq)
        pos = (f * self.item(positives)).sum(-1)
        neg = (f * self.item(negatives)).sum(-1)
        target = positives != 0
        return (F.binary_cross_entropy_with_logits(pos[target], torch.ones_like(pos[target])) +
                F.binary_cross_entropy_with_logits(neg[target], torch.zeros_like(neg[target])))

    @torch.no_grad()
    def rank(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Rank (0 = best) of candidates[:, 0] among the row's candidates, scored from the last
        position's features."""
        f = self.features(seq)[:, -1]
        scores = (self.item(candidates) * f[:, None, :]).sum(-1)
        return (scores[:, 1:] > scores[:, :1]).sum(1)


@dataclass
class EvalSet:
    """One fixed sample: inputs [n, MAXLEN] and candidates [n, 101] (the target first)."""

    inputs: np.ndarray
    candidates: np.ndarray


def eval_sets(split: Split, users_sampled: int, negatives: int,
              rng: np.random.Generator) -> tuple[EvalSet, EvalSet]:
    """The validation set (input: the training items) and the test set (input: the training
    items plus the validation item), over one random sample of the users that have both."""
    eligible = np.flatnonzero(split.test) + 1
    users = np.sort(rng.choice(eligible, size=min(users_sampled, len(eligible)), replace=False))
    negs = sample_negatives(split, users, (negatives,), split.all_keys, rng)
    valid_in = np.stack([left_padded(split.train[u - 1]) for u in users])
    test_in = np.stack([left_padded(np.append(split.train[u - 1], split.valid[u - 1]))
                        for u in users])
    valid = EvalSet(valid_in, np.concatenate([split.valid[users - 1, None], negs], 1))
    test = EvalSet(test_in, np.concatenate([split.test[users - 1, None], negs], 1))
    return valid, test


def hr_ndcg(model: SASRec, data: EvalSet, k: int = 10, batch: int = 1000) -> tuple[float, float]:
    """HR@k and NDCG@k (1 / log2(rank + 2) when rank < k), averaged over the set's users."""
    was_training = model.training
    model.eval()
    ranks = torch.cat([model.rank(torch.from_numpy(data.inputs[i:i + batch]),
                                  torch.from_numpy(data.candidates[i:i + batch]))
                       for i in range(0, len(data.inputs), batch)])
    model.train(was_training)
    hit = ranks < k
    return float(hit.double().mean()), float((hit / torch.log2(ranks + 2.0)).mean())
