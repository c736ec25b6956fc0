"""Patterns and block masks from Python: the registry, plans, masks equal to the CLI's dumps."""

import os
import subprocess

import numpy as np
import pytest

import attnkit
from conftest import F32_TOL, randn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, "build", "attnkit")


def test_patterns_lists_every_pattern_with_its_parameters():
    infos = attnkit.patterns()
    names = [p["name"] for p in infos]
    assert names == sorted(names) and len(names) >= 20
    window = next(p for p in infos if p["name"] == "window")
    assert window["direction"] == "causal" and window["family"] == "static" and window["paper"]
    size = next(p for p in window["params"] if p["name"] == "size")
    assert size["type"] == "int" and int(size["default"]) > 0
    for info in infos:  # every default spec constructs
        assert attnkit.Pattern(info["name"]).name == info["name"]


@pytest.mark.skipif(not os.path.exists(CLI), reason="needs the CLI (make build)")
@pytest.mark.parametrize("spec, nq, nk, heads, causal", [
    ("window:size=48", 200, 200, 1, False),
    ("dilated:size=64,dilation=2", 150, 150, 2, True),
    ("power:block=64,window=3", 300, 300, 1, False),
    ("natten2d:height=12,width=12,kernel=5", 144, 144, 1, False),
    ("streaming:sinks=4,window=32", 100, 130, 1, False),
])
def test_masks_equal_the_cli_dump(tmp_path, spec, nq, nk, heads, causal):
    dump = tmp_path / "mask.npy"
    cmd = [CLI, "mask", "--pattern", spec, "--nq", str(nq), "--nk", str(nk), "--heads",
           str(heads), "--dump", str(dump)] + (["--causal"] if causal else [])
    subprocess.run(cmd, check=True, capture_output=True)
    want = np.load(dump)
    mask = attnkit.Pattern(spec).plan(nq=nq, nk=nk, heads=heads, causal=causal)
    for h in range(heads):
        np.testing.assert_array_equal(mask.to_dense(0, h if mask.heads > 1 else 0), want[h])
    assert abs(mask.density - want.mean()) < 1e-9


def test_pattern_attention_equals_the_reference_through_its_mask(rng):
    q, k, v = randn(rng, 1, 2, 144, 16), randn(rng, 1, 2, 144, 16), randn(rng, 1, 2, 144, 16)
    for spec in ["window:size=40", "natten2d:height=12,width=12,kernel=5"]:
        out, lse, mask = attnkit.Pattern(spec).run(q, k, v)
        ref_out, ref_lse = attnkit.reference(q, k, v, block_mask=mask)
        np.testing.assert_allclose(out, ref_out, atol=F32_TOL)
        np.testing.assert_allclose(lse, ref_lse, atol=F32_TOL)
        np.testing.assert_array_equal(attnkit.attention(q, k, v, pattern=spec), out)


def test_content_based_pattern_needs_q_and_k(rng):
    with pytest.raises(ValueError, match="q: pattern 'routing' reads Q and K"):
        attnkit.Pattern("routing").plan(nq=256, nk=256)
    q = randn(rng, 1, 2, 256, 16)
    mask = attnkit.Pattern("routing").plan(q, q, causal=True)
    assert 0 < mask.density < 1


def test_from_dense_round_trips_and_runs(rng):
    dense = rng.random((2, 70, 90)) < 0.3
    dense[:, :, 0] = True
    mask = attnkit.BlockMask.from_dense(dense, q_block=16, kv_block=32)
    assert mask.heads == 2 and mask.nq == 70 and mask.nk == 90
    for h in range(2):
        np.testing.assert_array_equal(mask.to_dense(0, h), dense[h])
    assert abs(mask.density - dense.mean()) < 1e-12
    q, k, v = randn(rng, 1, 2, 70, 8), randn(rng, 1, 2, 90, 8), randn(rng, 1, 2, 90, 8)
    out = attnkit.attention(q, k, v, block_mask=mask)
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(8)
    s = np.where(dense[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, p @ v, atol=F32_TOL)


def test_from_indices_lists_and_arrays_agree():
    lists = [[0], [0, 1], [2]]
    a = attnkit.BlockMask.from_indices(lists, nq=48, nk=48, q_block=16, kv_block=16)
    padded = np.array([[0, -1], [1, 0], [2, -1]])
    b = attnkit.BlockMask.from_indices(padded, nq=48, nk=48, q_block=16, kv_block=16)
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    dense = a.to_dense()
    assert dense[0, :16].all() and not dense[0, 16:].any()
    assert dense[20, :32].all() and dense[40, 32:].all() and not dense[40, :32].any()
    assert a.block_density == pytest.approx(4 / 9)
    heads = attnkit.BlockMask.from_indices([lists, [[1], [1], [1]]], nq=48, nk=48,
                                           q_block=16, kv_block=16)
    assert heads.heads == 2 and heads.to_dense(0, 1)[:, 16:32].all()


def test_and_or_are_element_wise(rng):
    x = attnkit.Pattern("window:size=30").plan(nq=128, nk=128)
    y = attnkit.Pattern("streaming:sinks=4,window=8").plan(nq=128, nk=128)
    np.testing.assert_array_equal((x & y).to_dense(), x.to_dense() & y.to_dense())
    np.testing.assert_array_equal((x | y).to_dense(), x.to_dense() | y.to_dense())


def test_repr_is_the_ascii_view_and_png_is_written(tmp_path):
    mask = attnkit.Pattern("window:size=64").plan(nq=256, nk=256)
    text = repr(mask)
    assert text.startswith("BlockMask(nq=256, nk=256") and "+" in text
    assert mask.ascii().splitlines()[0] in text
    path = tmp_path / "mask.png"
    mask.save_png(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mask_errors_name_the_argument():
    with pytest.raises(ValueError, match="block_mask"):
        attnkit.BlockMask.from_indices([[5]], nq=16, nk=16, q_block=16, kv_block=16)
    with pytest.raises(TypeError, match="array: must hold bool or uint8"):
        attnkit.BlockMask.from_dense(np.zeros((4, 4), np.float32), q_block=16, kv_block=16)
    with pytest.raises(ValueError, match="nq: must be a positive integer"):
        attnkit.Pattern("window").plan(nq=0, nk=5)
    with pytest.raises(ValueError, match="pattern"):
        attnkit.Pattern("window:size=-3")
