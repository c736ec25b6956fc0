"""attnkit's numpy-level API against the float64 oracle: shapes, layouts, views, dtypes, errors."""

import threading

import numpy as np
import pytest

import attnkit
from conftest import F32_TOL, randn

SHAPES = [  # (B, Hq, Hkv, Nq, Nk, D, Dv): odd sizes, GQA, Nq != Nk, Dv != D
    (1, 1, 1, 1, 1, 8, 8),
    (1, 2, 1, 37, 53, 16, 24),
    (2, 4, 2, 65, 65, 32, 32),
    (1, 3, 3, 130, 70, 64, 40),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_reference(rng, shape, causal):
    b, hq, hkv, nq, nk, d, dv = shape
    q, k, v = randn(rng, b, hq, nq, d), randn(rng, b, hkv, nk, d), randn(rng, b, hkv, nk, dv)
    out, lse = attnkit.attention(q, k, v, causal=causal, return_lse=True)
    ref_out, ref_lse = attnkit.reference(q, k, v, causal=causal)
    assert out.shape == (b, hq, nq, dv) and lse.shape == (b, hq, nq)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref_out, atol=F32_TOL, rtol=0)
    seen = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), seen)
    np.testing.assert_allclose(lse[seen], ref_lse[seen], atol=F32_TOL, rtol=0)
    # Rows that see no key: zero output.
    assert not out[~seen].any()


def test_reference_is_softmax_attention(rng):
    # The oracle itself, against numpy in float64.
    q, k, v = randn(rng, 1, 2, 9, 8), randn(rng, 1, 2, 11, 8), randn(rng, 1, 2, 11, 5)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out, lse = attnkit.reference(q, k, v)
    np.testing.assert_allclose(out, p @ v.astype(np.float64), atol=1e-6)
    np.testing.assert_allclose(lse, np.log(np.exp(s).sum(-1)), atol=1e-5)


def test_scale(rng):
    q, k, v = randn(rng, 1, 1, 20, 16), randn(rng, 1, 1, 20, 16), randn(rng, 1, 1, 20, 16)
    out = attnkit.attention(q, k, v, scale=0.3)
    ref, _ = attnkit.reference(q, k, v, scale=0.3)
    np.testing.assert_allclose(out, ref, atol=F32_TOL)
    assert np.abs(out - attnkit.attention(q, k, v)).max() > 1e-3


def test_bshd_layout_is_a_view_of_the_same_attention(rng):
    q, k, v = randn(rng, 2, 50, 3, 16), randn(rng, 2, 40, 3, 16), randn(rng, 2, 40, 3, 8)
    out, lse = attnkit.attention(q, k, v, layout="bshd", return_lse=True)
    t = lambda x: np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    ref_out, ref_lse = attnkit.attention(t(q), t(k), t(v), return_lse=True)
    assert out.shape == (2, 50, 3, 8) and lse.shape == (2, 50, 3)
    np.testing.assert_array_equal(out, ref_out.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(lse, ref_lse.transpose(0, 2, 1))


def test_non_contiguous_views(rng):
    big = randn(rng, 2, 6, 80, 48)
    q = big[:, ::2, 5:70, :32]  # strided heads, offset rows, a slice of the head dim
    k = big[:, 1::2, :60, 8:40]
    v = big[:, 1::2, 10:70, 16:40]
    assert not q.flags.c_contiguous
    out = attnkit.attention(q, k, v, causal=True)
    ref = attnkit.attention(*(np.ascontiguousarray(x) for x in (q, k, v)), causal=True)
    np.testing.assert_array_equal(out, ref)
    # A strided head dim is copied once, not refused.
    qs = np.asfortranarray(q)
    np.testing.assert_array_equal(attnkit.attention(qs, k, v, causal=True), ref)


def test_float16_inputs(rng):
    q, k, v = (randn(rng, 1, 2, 40, 32).astype(np.float16) for _ in range(3))
    out = attnkit.attention(q, k, v)
    ref, _ = attnkit.reference(q, k, v)  # the oracle reads the same f16 values
    np.testing.assert_allclose(out, ref, atol=1e-3)


def test_torch_tensors_are_viewed_through_dlpack(rng):
    torch = pytest.importorskip("torch")
    q, k, v = (torch.randn(1, 2, 33, 16, dtype=torch.bfloat16) for _ in range(3))
    out = attnkit.attention(q, k, v, causal=True)
    ref, _ = attnkit.reference(q, k, v, causal=True)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    qg = torch.randn(1, 2, 33, 16, requires_grad=True)
    attnkit.attention(qg, qg, qg)  # a tensor that requires grad is read, not refused


def test_backward_matches_reference_and_finite_differences(rng):
    q, k, v = randn(rng, 1, 2, 23, 8), randn(rng, 1, 1, 31, 8), randn(rng, 1, 1, 31, 6)
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    dout = randn(rng, *out.shape)
    dq, dk, dv = attnkit.attention_backward(q, k, v, out, lse, dout, causal=True)

    def loss(q_, k_, v_):
        o, _ = attnkit.reference(q_, k_, v_, causal=True)
        return float((o.astype(np.float64) * dout).sum())

    eps = 1e-2
    for x, g in ((q, dq), (k, dk), (v, dv)):
        for index in [(0, 0, 3, 1), (0, 0, 7, 5), (0, 0, 0, 0)]:
            if index[1] >= x.shape[1] or index[2] >= x.shape[2]:
                continue
            plus, minus = x.copy(), x.copy()
            plus[index] += eps
            minus[index] -= eps
            args_p = [plus if y is x else y for y in (q, k, v)]
            args_m = [minus if y is x else y for y in (q, k, v)]
            fd = (loss(*args_p) - loss(*args_m)) / (2 * eps)
            assert abs(fd - g[index]) < 2e-3 * max(1.0, abs(fd)), (index, fd, g[index])


def test_merge_of_two_halves_is_the_whole(rng):
    q, k, v = randn(rng, 1, 2, 30, 16), randn(rng, 1, 2, 64, 16), randn(rng, 1, 2, 64, 16)
    oa, la = attnkit.attention(q, k[:, :, :20], v[:, :, :20], return_lse=True)
    ob, lb = attnkit.attention(q, k[:, :, 20:], v[:, :, 20:], return_lse=True)
    out, lse = attnkit.merge(oa, la, ob, lb)
    whole, whole_lse = attnkit.attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, whole, atol=1e-5)
    np.testing.assert_allclose(lse, whole_lse, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_column_sums_are_the_probabilities_summed_over_rows(rng, causal):
    q, k, v = randn(rng, 2, 6, 9, 24), randn(rng, 2, 3, 40, 24), randn(rng, 2, 3, 40, 24)
    _, lse = attnkit.attention(q, k, v, causal=causal, return_lse=True)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64),
                  np.repeat(k, 2, axis=1).astype(np.float64)) / np.sqrt(24)
    if causal:
        s = np.where(np.arange(40)[None, :] <= np.arange(9)[:, None] + 31, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)).sum(2)  # [B, Hq, Nk]
    got = attnkit.attention_column_sums(q, k, lse, causal=causal)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    groups = attnkit.attention_column_sums(q, k, lse, causal=causal, per_kv_head=True)
    np.testing.assert_allclose(groups, want.reshape(2, 3, 2, 40).sum(2), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="lse"):
        attnkit.attention_column_sums(q, k, lse[:, :3], causal=causal)


def test_two_python_threads_at_once(rng):
    q, k, v = randn(rng, 1, 4, 300, 64), randn(rng, 1, 4, 300, 64), randn(rng, 1, 4, 300, 64)
    want = attnkit.attention(q, k, v, causal=True, threads=1)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = attnkit.attention(q, k, v, causal=True, threads=1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, want)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda q, k, v: attnkit.attention(q[0], k, v), ValueError, "q: must have rank 4"),
        (lambda q, k, v: attnkit.attention(q, k[:, :, :, :8], v), ValueError, "k:"),
        (lambda q, k, v: attnkit.attention(q.astype(np.float64), k, v), TypeError, "q: dtype"),
        (lambda q, k, v: attnkit.attention([1, 2], k, v), TypeError, "q: expected an array"),
        (lambda q, k, v: attnkit.attention(q, k, v, scale=0), ValueError, "scale:"),
        (lambda q, k, v: attnkit.attention(q, k, v, scale=float("nan")), ValueError, "scale:"),
        (lambda q, k, v: attnkit.attention(q, k, v, layout="sbhd"), ValueError, "layout:"),
        (lambda q, k, v: attnkit.attention(q, k, v, threads=0), ValueError, "threads:"),
        (lambda q, k, v: attnkit.attention(q, k, v, pattern="nope"), ValueError, "pattern:"),
        (lambda q, k, v: attnkit.attention(q, k, v, pattern=3), TypeError, "pattern:"),
        (lambda q, k, v: attnkit.attention(q, k, v, block_mask="x"), TypeError, "block_mask:"),
        (lambda q, k, v: attnkit.attention(
            q, k, v, block_mask=attnkit.Pattern("window:size=16").plan(nq=5, nk=5)),
         ValueError, "block_mask:"),
    ],
)
def test_errors_name_the_argument(rng, call, error, words):
    q, k, v = randn(rng, 1, 2, 16, 16), randn(rng, 1, 2, 16, 16), randn(rng, 1, 2, 16, 16)
    with pytest.raises(error) as caught:
        call(q, k, v)
    assert words in str(caught.value)


def test_nan_input_is_refused_with_its_index(rng):
    q, k, v = randn(rng, 1, 1, 8, 8), randn(rng, 1, 1, 8, 8), randn(rng, 1, 1, 8, 8)
    v[0, 0, 5, 2] = np.nan
    with pytest.raises(ValueError, match=r"v: contains NaN at index \[0,0,5,2\]"):
        attnkit.attention(q, k, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
def test_every_non_finite_value_is_refused_in_every_dtype(rng, dtype, value, word):
    # The scan reads each row's exponent bits first; a bad value anywhere in a row (here the
    # last of a 40-wide row, past the vector width) must still be found and named.
    q, k, v = (randn(rng, 1, 2, 9, 40).astype(dtype) for _ in range(3))
    k[0, 1, 7, 39] = value
    with pytest.raises(ValueError, match=rf"k: contains {word} at index \[0,1,7,39\]"):
        attnkit.attention(q, k, v)


def test_reversed_views_are_copied_not_refused(rng):
    q, k, v = randn(rng, 1, 2, 30, 8), randn(rng, 1, 2, 30, 8), randn(rng, 1, 2, 30, 8)
    out = attnkit.attention(q[:, :, ::-1], k, v)
    np.testing.assert_array_equal(out, attnkit.attention(q[:, :, ::-1].copy(), k, v))
