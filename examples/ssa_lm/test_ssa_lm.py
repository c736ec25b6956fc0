"""SSA byte-LM example: a few training steps (finite gradients, a falling loss) with dense and with
SSA attention, the attnkit model equal to the same model on torch SDPA (with SSA's element mask),
and the attention FLOP count."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import byte_lm  # noqa: E402

N = 256


def text_batch(batch=4, seed=0):
    """Bytes of a repetitive text, so that a few steps can learn something."""
    g = torch.Generator().manual_seed(seed)
    words = [b"attention ", b"is ", b"all ", b"you ", b"need. ", b"sparse ", b"dense "]
    rows = []
    for _ in range(batch):
        picks = torch.randint(0, len(words), (N,), generator=g).tolist()
        text = b"".join(words[i] for i in picks)[:N + 1]
        rows.append(torch.tensor(list(text), dtype=torch.int64))
    return torch.stack(rows)


def loss_of(model, chunk, patterns):
    logits = model(chunk[:, :-1], patterns)
    return F.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1))


@pytest.mark.parametrize("attention", ["dense", "ssa"])
def test_a_few_steps_lower_the_loss(attention):
    torch.manual_seed(0)
    model = byte_lm.ByteLM(layers=2, d=64, heads=2, context=N)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = text_batch(seed=99)
    with torch.no_grad():
        before = float(loss_of(model, fixed, None))
    for step in range(40):
        patterns = None if attention == "dense" else [byte_lm.ssa_spec(2 * step + i) for i in (0, 1)]
        loss = loss_of(model, text_batch(seed=step), patterns)
        optimiser.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimiser.step()
    with torch.no_grad():
        after = float(loss_of(model, fixed, None))  # evaluated dense, as the paper does
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("pattern", [None, "ssa:ratio=4,seed=7"])
def test_attnkit_equals_sdpa_for_the_same_seed(pattern):
    """Derived tolerance: SDPA's own float32 error against the same model in float64 bounds what
    two float32 evaluations may differ by (4x it), for the loss and every gradient."""
    torch.manual_seed(0)
    ours = byte_lm.ByteLM(layers=2, d=64, heads=2, context=N, attention="attnkit")
    theirs = byte_lm.ByteLM(layers=2, d=64, heads=2, context=N, attention="sdpa")
    theirs.load_state_dict(ours.state_dict())
    exact = copy.deepcopy(theirs).double()
    chunk = text_batch(seed=5)
    patterns = [pattern, pattern]

    def loss_and_grads(model):
        model.zero_grad()
        loss = loss_of(model, chunk, patterns)
        loss.backward()
        return float(loss.detach()), [p.grad.double() for p in model.parameters()]

    l32, g32 = loss_and_grads(theirs)
    l64, g64 = loss_and_grads(exact)
    lk, gk = loss_and_grads(ours)
    assert abs(lk - l32) <= 4 * (abs(l32 - l64) + 1e-7 * abs(l64))
    for a, b, c in zip(gk, g32, g64):
        assert float((a - b).abs().max()) <= 4 * float((b - c).abs().max()) + 1e-7 * float(
            c.abs().max())


def test_ssa_does_a_quarter_of_the_attention_work():
    model = byte_lm.ByteLM(layers=4, d=128, heads=4, context=2048)
    dense = byte_lm.attention_pairs(None, 2048)
    sampled = byte_lm.attention_pairs(byte_lm.ssa_spec(3), 2048)
    assert dense == 2048 * 2049 // 2
    assert 0.2 < sampled / dense < 0.3
    # 4 layers x 4 heads x batch 4 x head dim 32 x 14 flops per pair
    assert byte_lm.attention_gflops(model, [dense] * 4, 4) == pytest.approx(
        dense * 14 * 32 * 4 * 4 * 4 / 1e9)


def test_too_long_input_is_a_value_error():
    model = byte_lm.ByteLM(layers=1, d=32, heads=2, context=16)
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(1, 17, dtype=torch.int64))
