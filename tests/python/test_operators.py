"""The operators of other shapes from Python: Lightning Attention-2, SOFT and index-list
attention, numpy and torch, forward and gradients against float64 torch implementations of each
rule written here, decode and chunking, CSR lists, kNN, opcheck and errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import attnkit  # noqa: E402
import attnkit.torch as at  # noqa: E402


def tensors(*shapes, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(*s, generator=g)).requires_grad_() for s in shapes]


def grads_of(fn, inputs, weight):
    for x in inputs:
        x.grad = None
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o.double() * w.double()).sum() for o, w in zip(outs, weight))
    loss.backward()
    return [o.detach().double() for o in outs], [x.grad.double().clone() for x in inputs]


def assert_close(got, want, tol):
    for a, b in zip(got, want):
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max())


# ---- Lightning ----

def lightning64(q, k, v, slopes, state=None):
    """O = ((Q K^T) * M) V + lambda^(t+1) Q S0 and the final state, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[2]
    t = torch.arange(n, dtype=torch.float64)
    lam = torch.exp(-slopes.double())[None, :, None, None]
    gap = (t[:, None] - t[None, :])
    mask = torch.where(gap >= 0, lam ** gap.clamp(min=0), torch.zeros(()))
    out = ((q @ k.transpose(-1, -2)) * mask) @ v
    final = ((lam ** (n - 1 - t)[None, None, :, None]) * k).transpose(-1, -2) @ v
    if state is not None:
        state = state.double()
        out = out + (lam ** (t + 1)[None, None, :, None]) * (q @ state)
        final = final + lam ** n * state
    return out, final


def test_lightning_slopes_are_the_official_rule():
    np.testing.assert_allclose(attnkit.lightning_slopes(4), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6,
                                                             2.0 ** -8])
    six = attnkit.lightning_slopes(6)  # 4 slopes, then slopes 0 and 2 of the 8-head rule
    np.testing.assert_allclose(six, [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1,
                                     2.0 ** -3], rtol=1e-6)


@pytest.mark.parametrize("with_state", [False, True])
def test_lightning_forward_and_gradients_equal_float64(with_state):
    b, h, n, d, e = 2, 3, 77, 12, 10
    q, k, v = tensors((b, h, n, d), (b, h, n, d), (b, h, n, e), seed=1, scale=0.3)
    state = tensors((b, h, d, e), seed=2, scale=0.3)[0] if with_state else None
    slopes = torch.as_tensor(attnkit.lightning_slopes(h))
    weight = tensors((b, h, n, e), (b, h, d, e), seed=3)
    inputs = [q, k, v] + ([state] if with_state else [])

    def ours(q, k, v, s=None):
        return at.lightning_attention(q, k, v, state=s, return_state=True, block=16)

    def ref(q, k, v, s=None):
        return lightning64(q, k, v, slopes, s)

    out, g = grads_of(ours, inputs, weight)
    want, r = grads_of(ref, inputs, weight)
    assert_close(out, want, 1e-5)
    assert_close(g, r, 1e-5)
    # The numpy API gives the same numbers.
    np_out = attnkit.lightning_attention(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(),
                                         state=None if state is None else state.detach().numpy())
    np.testing.assert_allclose(np_out, out[0].numpy(), atol=1e-6)


def test_lightning_decode_token_by_token_equals_prefill():
    b, h, n, d, e = 1, 2, 40, 8, 8
    q, k, v = (x.detach() for x in tensors((b, h, n, d), (b, h, n, d), (b, h, n, e), seed=4,
                                           scale=0.3))
    whole, final = at.lightning_attention(q, k, v, return_state=True)
    state, rows = None, []
    for t in range(n):
        o, state = at.lightning_attention(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                          state=state, return_state=True)
        rows.append(o)
    torch.testing.assert_close(torch.cat(rows, dim=2), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(state, final, atol=1e-5, rtol=0)


def test_lightning_errors_name_the_argument():
    q, k, v = (x.detach() for x in tensors((1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)))
    with pytest.raises(ValueError, match="slopes"):
        at.lightning_attention(q, k, v, slopes=[0.1])
    with pytest.raises(ValueError, match="slopes"):
        attnkit.lightning_attention(q.numpy(), k.numpy(), v.numpy(), slopes=[0.1, -1.0])
    with pytest.raises(ValueError, match="state"):
        attnkit.lightning_attention(q.numpy(), k.numpy(), v.numpy(), state=np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="^k"):
        attnkit.lightning_attention(q.numpy(), k.numpy()[:, :, :4], v.numpy())
    bad = q.numpy().copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="q: contains NaN"):
        attnkit.lightning_attention(bad, k.numpy(), v.numpy())


# ---- SOFT ----

def newton64(k2, iterations=20):
    m = k2.shape[-1]
    alpha = 1.8 / k2.sum(-1).amax(-1) ** 2
    p = k2 + 0.01 * torch.eye(m, dtype=k2.dtype)
    x = alpha[..., None, None] * p
    for _ in range(iterations):
        x = 2 * x - x @ p @ x
    return x


def gaussian(a, b):
    return torch.exp(-0.5 * torch.cdist(a, b) ** 2)


def soft64(q, v, landmarks=None, grid=None, stride=None):
    """The official rule in float64, its backward as the official code's: the Newton result
    taken as K2's exact inverse (X - X (K2 - K2.detach()) X has that gradient)."""
    d = q.shape[-1]
    qs = q.double() * d ** -0.25
    if landmarks is None:
        b, h, n, _ = qs.shape
        gh, gw = grid
        grid_q = qs.reshape(b * h, gh, gw, d).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.avg_pool2d(grid_q, stride, stride)
        landmarks = pooled.permute(0, 2, 3, 1).reshape(b, h, -1, d)
    else:
        landmarks = landmarks.double()
    k1, k2 = gaussian(qs, landmarks), gaussian(landmarks, landmarks)
    x0 = newton64(k2.detach())
    x = x0 - x0 @ (k2 - k2.detach()) @ x0
    return k1 @ (x @ (k1.transpose(-1, -2) @ v.double()))


@pytest.mark.parametrize("given", [False, True])
def test_soft_forward_and_gradients_equal_float64(given):
    b, h, gh, gw, d, e = 1, 2, 6, 8, 16, 8
    n = gh * gw
    q, v = tensors((b, h, n, d), (b, h, n, e), seed=5)
    lm = tensors((b, h, 7, d), seed=6, scale=0.5)[0] if given else None
    weight = tensors((b, h, n, e), seed=7)
    inputs = [q, v] + ([lm] if given else [])
    kw = {} if given else {"grid": (gh, gw), "stride": 2}

    def ours(q, v, lm=None):
        return at.soft_attention(q, v, landmarks=lm, **kw)

    def ref(q, v, lm=None):
        return soft64(q, v, lm, **kw)

    out, g = grads_of(ours, inputs, weight)
    want, r = grads_of(ref, inputs, weight)
    assert_close(out, want, 3e-4)
    assert_close(g, r, 3e-4)


def test_soft_tokens_as_landmarks_with_the_exact_inverse_is_gaussian_attention():
    q, v = (x.detach() for x in tensors((1, 1, 30, 8), (1, 1, 30, 4), seed=8, scale=2.5))
    out = attnkit.soft_attention(q.numpy(), v.numpy(), stride=1, inverse="exact")
    qs = q.double() * 8 ** -0.25
    want = gaussian(qs, qs) @ v.double()
    np.testing.assert_allclose(out, want.numpy(), atol=1e-4 * float(want.abs().max()))


def test_soft_errors_name_the_argument():
    q, v = (x.detach().numpy() for x in tensors((1, 1, 12, 4), (1, 1, 12, 4)))
    with pytest.raises(ValueError, match="stride"):
        attnkit.soft_attention(q, v)
    with pytest.raises(ValueError, match="grid"):
        attnkit.soft_attention(q, v, grid=(3, 5), stride=1)
    with pytest.raises(ValueError, match="inverse"):
        attnkit.soft_attention(q, v, stride=2, inverse="pinv")
    with pytest.raises(ValueError, match="landmarks"):
        attnkit.soft_attention(q, v, landmarks=np.zeros((1, 1, 3, 5), np.float32))


# ---- Index lists ----

def listed_mask(indices, nq, nk):
    """[..., Nq, Nk] bool: padding (-1) lands in an extra column that is dropped."""
    mask = torch.zeros(indices.shape[:-1] + (nk + 1,), dtype=torch.bool)
    columns = torch.where(indices >= 0, indices, torch.full_like(indices, nk)).long()
    mask.scatter_(-1, columns, True)
    return mask[..., :nk]


def index64(q, k, v, indices):
    """Dense softmax in float64 under the listed-pairs mask (rows with no key give 0)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    s = (q.double() @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    mask = listed_mask(torch.as_tensor(indices), q.shape[2], k.shape[2])
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


def random_lists(nq, nk, k, seed, heads=1):
    rng = np.random.default_rng(seed)
    lists = np.stack([np.stack([rng.permutation(nk)[:k] for _ in range(nq)])
                      for _ in range(heads)]).astype(np.int64)
    lists[rng.random(lists.shape) < 0.2] = -1  # padding anywhere
    lists[:, 2] = -1                           # a row with no key
    return lists


@pytest.mark.parametrize("per_head", [False, True])
def test_index_forward_and_gradients_equal_float64(per_head):
    b, hq, hkv, nq, nk, d, dv = 2, 4, 2, 33, 50, 16, 12
    q, k, v = tensors((b, hq, nq, d), (b, hkv, nk, d), (b, hkv, nk, dv), seed=9)
    lists = random_lists(nq, nk, 9, 10, heads=hq if per_head else 1)
    weight = tensors((b, hq, nq, dv), seed=11)
    out, g = grads_of(lambda *x: at.index_attention(*x, lists), [q, k, v], weight)
    want, r = grads_of(lambda *x: index64(*x, lists), [q, k, v], weight)
    assert_close(out, want, 2e-6)
    assert_close(g, r, 2e-5)


def test_index_csr_equals_padded_and_lse_is_minus_inf_for_empty_rows():
    q, k, v = (x.detach().numpy() for x in tensors((1, 2, 20, 8), (1, 2, 30, 8), (1, 2, 30, 8),
                                                   seed=12))
    lists = random_lists(20, 30, 6, 13)[0]
    offsets = np.concatenate([[0], np.cumsum((lists >= 0).sum(1))])
    columns = lists[lists >= 0]
    a, lse_a = attnkit.index_attention(q, k, v, lists, return_lse=True)
    b, lse_b = attnkit.index_attention(q, k, v, (offsets, columns), return_lse=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lse_a, lse_b)
    assert np.all(lse_a[:, :, 2] == -np.inf) and np.all(a[:, :, 2] == 0)


def test_index_rejects_duplicates_and_out_of_range_keys():
    q, k, v = (x.detach().numpy() for x in tensors((1, 1, 3, 4), (1, 1, 5, 4), (1, 1, 5, 4)))
    with pytest.raises(ValueError, match="indices: row \\[0,0,1\\] lists key 4 twice"):
        attnkit.index_attention(q, k, v, [[0, 1], [4, 4], [2, -1]])
    with pytest.raises(ValueError, match="indices: .* is 5, outside"):
        attnkit.index_attention(q, k, v, [[0, 1], [4, 5], [2, -1]])
    with pytest.raises(ValueError, match="indices"):
        attnkit.index_attention(q, k, v, [[0, 1], [2, 3]])  # two rows for three queries
    with pytest.raises(TypeError, match="indices"):
        attnkit.index_attention(q, k, v, np.zeros((3, 2), np.float32))


def test_knn_and_point_attention_in_two_calls():
    rng = np.random.default_rng(14)
    points = rng.random((200, 3)).astype(np.float32)
    lists = attnkit.knn(points, 12)
    dist = ((points[:, None] - points[None]) ** 2).sum(-1)
    brute = np.lexsort((np.broadcast_to(np.arange(200), dist.shape), dist), axis=1)[:, :12]
    np.testing.assert_array_equal(lists, brute)
    assert np.all(lists[:, 0] == np.arange(200))  # each point is its own nearest neighbour
    q, k, v = (x.detach() for x in tensors((1, 2, 200, 8), (1, 2, 200, 8), (1, 2, 200, 8),
                                           seed=15))
    out = at.index_attention(q, k, v, at.knn(torch.from_numpy(points), 12))
    torch.testing.assert_close(out.double(), index64(q, k, v, lists[None]), atol=1e-5, rtol=0)
    assert attnkit.knn(points[None].repeat(3, 0), 4).shape == (3, 1, 200, 4)


# ---- torch custom ops ----

def test_opcheck():
    q, k, v = (x.detach() for x in tensors((1, 2, 9, 4), (1, 2, 9, 4), (1, 2, 9, 3), seed=16,
                                           scale=0.3))
    state = torch.randn(1, 2, 4, 3)
    torch.library.opcheck(torch.ops.attnkit.lightning.default, (q, k, v, None, state, 4))
    torch.library.opcheck(torch.ops.attnkit.soft.default, (q, v, None, 3, 3, 1, 0.0, 20, False))
    lists = torch.from_numpy(random_lists(9, 9, 3, 17).astype(np.int32)[None])
    torch.library.opcheck(torch.ops.attnkit.index_attention.default,
                          (q, k, v, lists, None, None, 0.5))


def test_bshd_layout_and_bfloat16_inputs():
    q, k, v = (x.detach() for x in tensors((1, 2, 24, 8), (1, 2, 24, 8), (1, 2, 24, 8), seed=18,
                                           scale=0.3))
    lists = attnkit.knn(np.random.default_rng(19).random((24, 3)), 5)
    for fn in (lambda q, k, v, **kw: at.lightning_attention(q, k, v, **kw),
               lambda q, k, v, **kw: at.soft_attention(q, v, stride=4, **kw),
               lambda q, k, v, **kw: at.index_attention(q, k, v, lists, **kw)):
        want = fn(q, k, v)
        got = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout="bshd")
        torch.testing.assert_close(got.transpose(1, 2), want, atol=1e-6, rtol=0)
        half = fn(q.bfloat16(), k.bfloat16(), v.bfloat16())
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half.float(), want, atol=3e-2, rtol=3e-2)
