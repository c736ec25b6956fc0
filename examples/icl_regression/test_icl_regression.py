"""In-context regression example: the data model's reference points, a few hundred training
steps (finite gradients, a falling loss), the attnkit model equal to the SDPA one, and the
structure measures on hand-built weights."""

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import icl  # noqa: E402


def test_data_model():
    """Predicting 0 costs E[y^2] = E|beta|^2 + 0.1 = 1.1; the query token's y entry is 0."""
    g = torch.Generator().manual_seed(0)
    context, query, target = icl.tasks(20000, icl.CONTEXT, g)
    assert context.shape == (20000, 40, 6) and query.shape == (20000, 6)
    assert torch.all(query[:, 5] == 0)
    assert abs(float((target ** 2).mean()) - 1.1) < 0.04


def test_a_few_hundred_steps_lower_the_loss():
    torch.manual_seed(0)
    model = icl.SoftmaxICL(2)
    before = icl.mse(model, icl.CONTEXT, 4000, seed=7)
    losses = icl.fit(model, 300, 256, seed=1)
    assert all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    after = icl.mse(model, icl.CONTEXT, 4000, seed=7)
    assert after < 0.8 * before, (before, after)


def test_attnkit_equals_sdpa_for_the_same_seed():
    """The tolerance is derived: SDPA's own float32 error against the same model in float64 bounds
    how far two float32 evaluations may differ (4x it); after 20 Adam steps on the same data the
    losses agree to that scale times the steps."""
    torch.manual_seed(0)
    ours = icl.SoftmaxICL(4, attention="attnkit")
    theirs = icl.SoftmaxICL(4, attention="sdpa")
    theirs.load_state_dict(ours.state_dict())
    exact = copy.deepcopy(theirs).double()
    g = torch.Generator().manual_seed(3)
    context, query, target = icl.tasks(256, icl.CONTEXT, g)

    def loss_and_grads(model, dtype):
        model.zero_grad()
        loss = ((model(context.to(dtype), query.to(dtype)) - target.to(dtype)) ** 2).mean()
        loss.backward()
        return float(loss.detach()), [p.grad.clone().double() for p in model.parameters()]

    l32, g32 = loss_and_grads(theirs, torch.float32)
    l64, g64 = loss_and_grads(exact, torch.float64)
    lk, gk = loss_and_grads(ours, torch.float32)
    loss_err = abs(l32 - l64) + 1e-7 * abs(l64)
    grad_err = max(float((a - b).abs().max()) for a, b in zip(g32, g64)) + 1e-7
    assert abs(lk - l32) <= 4 * loss_err
    assert max(float((a - b).abs().max()) for a, b in zip(gk, g32)) <= 4 * grad_err

    ours_losses = icl.fit(ours, 20, 256, seed=5)
    theirs_losses = icl.fit(theirs, 20, 256, seed=5)
    for step, (a, b) in enumerate(zip(ours_losses, theirs_losses)):
        assert abs(a - b) <= 4 * (step + 1) * loss_err + 1e-6 * abs(b), (step, a, b)


def test_structure_measures_on_built_weights():
    """Two heads of the paper's form: W_K^T W_Q = omega_h I on the x-block, O_h W_V^h = mu_h e_y,
    mu_1 = -mu_2: off-diagonal ratio 0, last-entry share 1, head-sum ratio 0."""
    model = icl.SoftmaxICL(2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for h, (omega, mu) in enumerate(((0.5, 1.0), (-0.5, -1.0))):
            rows = slice(6 * h, 6 * h + 6)
            model.wq.weight[rows, :5] = omega * torch.eye(6)[:, :5]
            model.wk.weight[rows] = torch.eye(6)
            model.wv.weight[rows] = torch.eye(6)
            model.out.weight[0, 6 * h + 5] = mu
    s = icl.structure(model)
    assert s["kq_offdiag_ratio"] == pytest.approx(0.0, abs=1e-7)
    assert s["ov_last_share"] == pytest.approx(1.0)
    assert s["head_sum_ratio"] == pytest.approx(0.0, abs=1e-7)
    assert [h["omega"] for h in s["per_head"]] == pytest.approx([0.5, -0.5])


def test_bad_heads_is_a_value_error():
    with pytest.raises(ValueError, match="heads"):
        icl.SoftmaxICL(0)
