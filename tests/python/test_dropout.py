"""Attention dropout through the numpy API and attnkit.torch: the reference draws the same mask,
and forward and gradients equal a float64 torch model that applies the kernel's own mask."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import attnkit  # noqa: E402
import attnkit.torch as at  # noqa: E402


def arrays(b, hq, hkv, nq, nk, d, dv, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda *s: rng.standard_normal(s).astype(np.float32)
    return make(b, hq, nq, d), make(b, hkv, nk, d), make(b, hkv, nk, dv)


def kept_mask(q, k, *, causal, p, seed):
    """The kernel's keep mask [B, Hq, Nq, Nk], read off its output with V = the identity:
    out[i, j] = P[i, j] * keep[i, j] / (1 - p), and every allowed P is positive."""
    b, hkv, nk = k.shape[0], k.shape[1], k.shape[2]
    eye = np.broadcast_to(np.eye(nk, dtype=np.float32), (b, hkv, nk, nk)).copy()
    out = attnkit.attention(q, k, eye, causal=causal, dropout_p=p, dropout_seed=seed)
    return out != 0.0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 17, 17, 8, 8), (2, 4, 2, 45, 60, 16, 24)])
def test_numpy_forward_and_backward_equal_the_reference(causal, shape):
    q, k, v = arrays(*shape)
    out, lse = attnkit.attention(q, k, v, causal=causal, dropout_p=0.3, dropout_seed=11,
                                 return_lse=True)
    ref_out, ref_lse = attnkit.reference(q, k, v, causal=causal, dropout_p=0.3, dropout_seed=11)
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=0)
    # The LSE is the undropped softmax's.
    _, plain_lse = attnkit.attention(q, k, v, causal=causal, return_lse=True)
    np.testing.assert_array_equal(lse, plain_lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_torch_matches_a_float64_model_with_the_same_mask(causal, p):
    b, hq, hkv, nq, nk, d, dv = 2, 4, 2, 33, 33, 16, 8
    qa, ka, va = arrays(b, hq, hkv, nq, nk, d, dv, seed=3)
    seed = 1234
    keep = torch.from_numpy(kept_mask(qa, ka, causal=causal, p=p, seed=seed))
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in (qa, ka, va))
    weight = torch.randn(b, hq, nq, dv, generator=torch.Generator().manual_seed(5))
    out = at.attention(q, k, v, causal=causal, dropout_p=p, dropout_seed=seed)
    (out * weight).sum().backward()

    q64, k64, v64 = (torch.from_numpy(x).double().requires_grad_() for x in (qa, ka, va))
    group = hq // hkv
    kk, vv = k64.repeat_interleave(group, 1), v64.repeat_interleave(group, 1)
    s = q64 @ kk.transpose(-1, -2) / d**0.5
    if causal:
        s = s.masked_fill(torch.ones(nq, nk, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(s, -1) * keep / (1.0 - p)
    ref = probs @ vv
    (ref * weight.double()).sum().backward()
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    # About p of the allowed probabilities were dropped.
    allowed = torch.ones(nq, nk, dtype=torch.bool) if not causal else \
        torch.ones(nq, nk, dtype=torch.bool).tril()
    rate = 1.0 - keep[..., allowed].float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / keep[..., allowed].numel()) ** 0.5


def test_seed_comes_from_torchs_generator():
    q, k, v = (torch.from_numpy(x) for x in arrays(1, 2, 2, 40, 40, 16, 16))
    torch.manual_seed(0)
    first = at.attention(q, k, v, dropout_p=0.5)
    second = at.attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(0)
    again = at.attention(q, k, v, dropout_p=0.5)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    assert torch.equal(at.attention(q, k, v, dropout_p=0.0), at.attention(q, k, v))


def test_large_seeds_and_a_pattern_mask():
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in arrays(1, 2, 1, 70, 70, 16, 16))
    out = at.attention(q, k, v, causal=True, pattern="window:size=16", dropout_p=0.2,
                       dropout_seed=2**64 - 1)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    want = attnkit.reference(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(),
                             causal=True, pattern="window:size=16", dropout_p=0.2,
                             dropout_seed=2**64 - 1)[0]
    np.testing.assert_allclose(out.detach().numpy(), want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "x"])
def test_bad_dropout_names_the_argument(bad):
    q, k, v = arrays(1, 1, 1, 8, 8, 8, 8)
    with pytest.raises((ValueError, TypeError), match="dropout_p"):
        attnkit.attention(q, k, v, dropout_p=bad)
    with pytest.raises((ValueError, TypeError), match="dropout_p"):
        at.attention(*(torch.from_numpy(x) for x in (q, k, v)), dropout_p=bad)


def test_bad_seed_names_the_argument():
    q, k, v = arrays(1, 1, 1, 8, 8, 8, 8)
    for bad in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match="dropout_seed"):
            attnkit.attention(q, k, v, dropout_p=0.1, dropout_seed=bad)
