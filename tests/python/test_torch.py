"""attnkit.torch: the custom op against torch SDPA, opcheck, gradcheck, torch.compile."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import attnkit  # noqa: E402
import attnkit.torch as at  # noqa: E402


def inputs(b=2, hq=4, hkv=2, nq=45, nk=45, d=16, dv=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.float32).to(dtype).requires_grad_()
    return make(b, hq, nq, d), make(b, hkv, nk, d), make(b, hkv, nk, dv)


def grads(fn, q, k, v, weight):
    for x in (q, k, v):
        x.grad = None
    out = fn(q, k, v)
    (out.float() * weight).sum().backward()
    return out.detach(), [x.grad.clone() for x in (q, k, v)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 17, 17, 8, 8), (2, 4, 2, 45, 45, 16, 24),
                                   (1, 6, 3, 70, 70, 64, 64)])
def test_gradients_equal_sdpa(causal, shape):
    b, hq, hkv, nq, nk, d, dv = shape
    q, k, v = inputs(b, hq, hkv, nq, nk, d, dv)
    weight = torch.randn(b, hq, nq, dv, generator=torch.Generator().manual_seed(9))
    out, g = grads(lambda *x: at.attention(*x, causal=causal), q, k, v, weight)
    ref, r = grads(lambda *x: F.scaled_dot_product_attention(*x, is_causal=causal,
                                                             enable_gqa=True), q, k, v, weight)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    for a, e in zip(g, r):
        torch.testing.assert_close(a, e, atol=5e-5, rtol=1e-4)


def test_bshd_layout_and_half_dtypes():
    q, k, v = inputs(1, 2, 2, 30, 30, 16, 16, dtype=torch.bfloat16)
    out = at.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout="bshd")
    assert out.dtype == torch.bfloat16 and out.shape == (1, 30, 2, 16)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.transpose(1, 2).float(), ref, atol=2e-2, rtol=0)
    out.float().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_bfloat16_input_is_refused_with_its_index(value):
    q, k, v = (torch.randn(1, 2, 9, 40, dtype=torch.bfloat16) for _ in range(3))
    v[0, 1, 8, 33] = value
    with pytest.raises(ValueError, match=r"v: contains (NaN|infinity) at index \[0,1,8,33\]"):
        at.attention(q, k, v)


def test_gradcheck_in_float32_against_finite_differences():
    # gradcheck in float64 is not possible (the kernels are f32): finite differences of the
    # f32 op with a step and tolerances sized for single precision.
    q, k, v = inputs(1, 2, 1, 9, 11, 4, 3, seed=3)
    fn = lambda q, k, v: at.attention(q, k, v, causal=True)
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-2, atol=3e-3, rtol=3e-3,
                                    fast_mode=False)


def test_lse_is_differentiable():
    q, k, v = inputs(1, 1, 1, 12, 12, 8, 8, seed=4)
    out, lse = at.attention(q, k, v, return_lse=True)
    lse.sum().backward()
    # d(sum lse)/dv = 0; d/dq = scale * sum_j P_ij k_j.
    assert v.grad is None or torch.count_nonzero(v.grad) == 0
    s = (q @ k.transpose(-1, -2)) / np.sqrt(8)
    expected = torch.softmax(s, -1) @ k / np.sqrt(8)
    torch.testing.assert_close(q.grad, expected.detach(), atol=1e-5, rtol=1e-4)


def test_opcheck():
    q, k, v = (x.detach() for x in inputs(1, 2, 1, 20, 20, 8, 8))
    torch.library.opcheck(torch.ops.attnkit.attention.default,
                          (q, k, v, True, 0.0, "", 0, 0.0, 0))
    out, lse = torch.ops.attnkit.attention(q, k, v, True, 0.0, "", 0, 0.0, 0)
    torch.library.opcheck(torch.ops.attnkit.attention_backward.default,
                          (q, k, v, out, lse, torch.randn_like(out), None, True, 0.0, "", 0,
                           0.0, 0))
    torch.library.opcheck(torch.ops.attnkit.attention.default,
                          (q, k, v, False, 0.5, "window:size=16", 0, 0.0, 0))
    # With dropout (a seeded mask, so the op is deterministic, as opcheck requires).
    torch.library.opcheck(torch.ops.attnkit.attention.default,
                          (q, k, v, True, 0.0, "", 0, 0.3, -7))


def test_pattern_gradients_equal_sdpa_with_the_same_mask():
    q, k, v = inputs(1, 2, 2, 150, 150, 16, 16, seed=5)
    spec = "window:size=40"
    dense = torch.from_numpy(attnkit.Pattern(spec).plan(nq=150, nk=150).to_dense()).bool()
    weight = torch.randn(1, 2, 150, 16, generator=torch.Generator().manual_seed(6))
    out, g = grads(lambda *x: at.attention(*x, pattern=spec), q, k, v, weight)
    ref, r = grads(lambda *x: F.scaled_dot_product_attention(*x, attn_mask=dense), q, k, v, weight)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    for a, e in zip(g, r):
        torch.testing.assert_close(a, e, atol=5e-5, rtol=1e-4)


def test_content_based_pattern_trains_eagerly():
    q, k, v = inputs(1, 2, 2, 256, 256, 16, 16, seed=7)
    out = at.attention(q, k, v, causal=True, pattern="routing")
    out.square().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_torch_compile_traces_the_op_without_graph_breaks():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 48)

        def forward(self, x):
            q, k, v = self.proj(x).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4)
            return at.attention(q, k, v, causal=True, pattern="window:size=8").sum()

    torch.manual_seed(0)
    block = Block()
    x = torch.randn(2, 24, 16)
    eager = block(x)
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), eager)
    compiled(x).backward()
    assert torch.isfinite(block.proj.weight.grad).all()


@pytest.mark.parametrize("call, error, words", [
    (lambda q, k, v: at.attention(q.numpy(), k, v), TypeError, "q: expected a torch.Tensor"),
    (lambda q, k, v: at.attention(q.double(), k, v), TypeError, "q: dtype"),
    (lambda q, k, v: at.attention(q[0], k, v), ValueError, "q: must have rank 4"),
    (lambda q, k, v: at.attention(q, k, v, pattern="nope"), ValueError, "pattern:"),
    (lambda q, k, v: at.attention(q, k, v, layout="x"), ValueError, "layout:"),
    (lambda q, k, v: at.attention(q, k, v[:, :, :3]), ValueError, "v:"),
])
def test_errors_name_the_argument(call, error, words):
    q, k, v = (x.detach() for x in inputs(1, 2, 2, 10, 10, 8, 8))
    with pytest.raises(error) as caught:
        call(q, k, v)
    assert words in str(caught.value)


def test_block_mask_travels_through_the_op_and_its_backward():
    q, k, v = inputs(1, 1, 1, 50, 50, 8, 8, seed=8)
    allowed = torch.rand(50, 50, generator=torch.Generator().manual_seed(3)) < 0.4
    allowed[:, 0] = True  # SDPA gives NaN for rows that see no key; attnkit gives zeros
    mask = attnkit.BlockMask.from_dense(allowed.numpy(), 16, 16)
    weight = torch.randn(1, 1, 50, 8, generator=torch.Generator().manual_seed(2))
    out, g = grads(lambda *x: at.attention(*x, block_mask=mask), q, k, v, weight)
    ref, r = grads(lambda *x: F.scaled_dot_product_attention(*x, attn_mask=allowed), q, k, v,
                   weight)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    for a, e in zip(g, r):
        torch.testing.assert_close(a, e, atol=5e-5, rtol=1e-4)
