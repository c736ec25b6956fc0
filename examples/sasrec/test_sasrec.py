"""SASRec example: a few training steps on the real data (finite gradients, a falling loss), the
attnkit model equal to the same model on torch SDPA, padding rows, the split and the sampler."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sasrec  # noqa: E402


@pytest.fixture(scope="module")
def split():
    return sasrec.Split.from_pairs(*sasrec.read_interactions(sasrec.DATA))


def batch(split, rows, size, rng):
    return sasrec.training_batch(split, rows, rng.choice(len(rows[0]), size, replace=False), rng)


def test_data_is_the_papers(split):
    assert split.num_users == 31013 and split.num_items == 23715
    assert sum(len(t) for t in split.train) + 2 * np.count_nonzero(split.test) == 287107


def test_split_and_sampler_on_a_small_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("1 3\n1 1\n1 2\n1 5\n2 4\n2 1\n3 2\n3 3\n3 4\n")
    s = sasrec.Split.from_pairs(*sasrec.read_interactions(path))
    assert [list(t) for t in s.train] == [[3, 1], [4, 1], [2]]
    assert list(s.valid) == [2, 0, 3] and list(s.test) == [5, 0, 4]
    rng = np.random.default_rng(0)
    users = np.array([1, 2, 3])
    negatives = sasrec.sample_negatives(s, users, (200,), s.all_keys, rng)
    for u, row in zip(users, negatives):
        seen = {3, 1, 2, 5} if u == 1 else {4, 1} if u == 2 else {2, 3, 4}
        assert not seen & set(row.tolist()) and set(row.tolist()) <= {1, 2, 3, 4, 5}


def test_malformed_data_is_a_value_error(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match="data"):
        sasrec.read_interactions(path)
    path.write_text("1 x\n")
    with pytest.raises(ValueError, match="data"):
        sasrec.read_interactions(path)


def test_padding_rows_give_zero_output_and_gradient(split):
    """A left-padded sequence: its padding query rows see no key. attnkit returns O = 0 for them
    and no gradient flows through them: the embeddings' gradients stay finite."""
    torch.manual_seed(0)
    model = sasrec.SASRec(split.num_items)
    seq = torch.zeros(2, sasrec.MAXLEN, dtype=torch.int64)
    seq[0, -3:] = torch.tensor([5, 9, 11])
    seq[1, -1] = 7
    q = torch.randn(2, sasrec.MAXLEN, 1, 50, requires_grad=True)
    kv = torch.randn(2, 2, sasrec.MAXLEN, 1, 50)
    out = model._attend(q, kv[0], kv[1], model.attention_mask(seq))
    assert torch.all(out[0, :-3] == 0) and torch.all(out[1, :-1] == 0)
    out.sum().backward()
    assert torch.all(q.grad[0, :-3] == 0) and torch.isfinite(q.grad).all()
    loss = model.loss(seq, torch.roll(seq, -1, 1), torch.full_like(seq, 3) * (seq != 0))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_few_steps_lower_the_loss(split):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = sasrec.training_rows(split)
    model = sasrec.SASRec(split.num_items)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    fixed = batch(split, rows, 256, rng)
    with torch.no_grad():
        model.eval()
        before = float(model.loss(*fixed))
        model.train()
    for _ in range(30):
        loss = model.loss(*batch(split, rows, 128, rng))
        optimiser.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimiser.step()
    with torch.no_grad():
        model.eval()
        after = float(model.loss(*fixed))
    assert after < before - 0.015, (before, after)  # 1.387 -> 1.357 measured


def max_gap(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def gradients(model, data, dropout_seed):
    model.zero_grad()
    torch.manual_seed(dropout_seed)
    loss = model.loss(*data)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()]


def test_attnkit_equals_sdpa_for_the_same_seed(split):
    """Same weights, batch and dropout masks: attnkit's model against the SDPA one. The tolerance
    is derived, not chosen: SDPA's own float32 error, measured against the same model in float64
    (dropout off, as float64 draws other masks), bounds what two float32 evaluations of one
    function may differ by (each about that far from the truth): 4x it for the first step's loss
    and gradients. Five Adam steps later the losses still agree to that scale times the steps."""
    rng = np.random.default_rng(1)
    rows = sasrec.training_rows(split)
    data = batch(split, rows, 128, rng)
    torch.manual_seed(0)
    # Attention dropout off: the two paths draw different masks for one torch seed (the other
    # dropouts draw the same).
    ours = sasrec.SASRec(split.num_items, attention="attnkit", attention_dropout=0.0)
    theirs = sasrec.SASRec(split.num_items, attention="sdpa", attention_dropout=0.0)
    theirs.load_state_dict(ours.state_dict())
    exact = copy.deepcopy(theirs).double()

    for m in (ours, theirs, exact):
        m.eval()
    loss32, grads32 = gradients(theirs, data, 0)
    loss64, grads64 = gradients(exact, data, 0)
    loss_err = abs(loss32 - loss64) + 1e-7 * abs(loss64)
    grad_err = max_gap(grads32, grads64) + 1e-7 * max(float(g.abs().max()) for g in grads64)
    loss_k, grads_k = gradients(ours, data, 0)
    assert abs(loss_k - loss32) <= 4 * loss_err, (loss_k, loss32, loss_err)
    assert max_gap(grads_k, grads32) <= 4 * grad_err, (max_gap(grads_k, grads32), grad_err)

    for m in (ours, theirs):
        m.train()
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-3, betas=(0.9, 0.98))
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-3, betas=(0.9, 0.98))
    for step in range(5):
        data = batch(split, rows, 128, rng)
        loss_k, grads_k = gradients(ours, data, 100 + step)
        loss_s, grads_s = gradients(theirs, data, 100 + step)
        assert np.isfinite(loss_k) and abs(loss_k - loss_s) <= 4 * (step + 1) * loss_err, (
            step, loss_k, loss_s, loss_err)
        opt_ours.step()
        opt_theirs.step()


def test_the_program_reports_bad_input_with_exit_code_2(tmp_path):
    import subprocess

    bad = tmp_path / "bad.txt"
    bad.write_text("1 x\n")
    program = Path(__file__).resolve().parent / "train.py"
    for args in (["--data", str(bad)], ["--data", str(tmp_path / "missing.txt")],
                 ["--attention-dropout", "1.5"]):
        r = subprocess.run([sys.executable, str(program), *args, "--json"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "", (args, r)
        assert len(r.stderr.strip().splitlines()) == 1 and "error:" in r.stderr, r.stderr
