"""attnkit.Model: the real model from Python agrees with the CLI's runtime."""

import json
import os
import subprocess

import numpy as np
import pytest

import attnkit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, "build", "attnkit")
GPL = "/usr/share/common-licenses/GPL-3"
needs_model = pytest.mark.skipif(
    os.environ.get("ATTNKIT_SKIP_MODEL") == "1" or not attnkit.model.default_model_path(),
    reason="the real model is not set up (ATTNKIT_SKIP_MODEL=1 or missing)")


@pytest.fixture(scope="module")
def model():
    return attnkit.Model()


@needs_model
def test_ppl_equals_the_cli(model):
    text = open(GPL).read()
    got = model.ppl(text, ctx=256, max_windows=2)
    cli = json.loads(subprocess.run([CLI, "model", "ppl", "--text", GPL, "--ctx", "256",
                                     "--max-windows", "2", "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    assert got["tokens"] == cli["tokens"] == 2 * 255
    assert abs(got["ppl"] - cli["ppl"]) < 1e-3 * cli["ppl"]
    sparse = model.ppl(text, ctx=256, pattern="window:size=32", max_windows=2)
    assert sparse["ppl"] > got["ppl"]  # a narrow window loses context


@needs_model
def test_capture_generate_passkey(model):
    c = model.config
    out = model.capture(open(GPL).read(), ctx=40, layers=[0, 3])
    assert sorted(out) == [0, 3]
    assert out[3]["q"].shape == (1, c["heads"], 40, c["head_dim"])
    assert out[0]["k"].shape == (1, c["heads_kv"], 40, c["head_dim"])
    assert np.isfinite(out[3]["v"]).all()
    text = model.generate("The capital of France is", n=4)
    assert isinstance(text, str) and text
    r = model.passkey(length=256, trials=1)
    assert r["trials"] == 1 and 0 <= r["accuracy"] <= 1
    assert model.detokenize(model.tokenize("hello world")) == "hello world"


@needs_model
def test_model_errors_name_the_argument(model):
    with pytest.raises(ValueError, match="ctx"):
        model.ppl("short", ctx=1)
    with pytest.raises(ValueError, match="layers"):
        model.capture("some text here", ctx=2, layers=[99])
    with pytest.raises(ValueError, match="pattern"):
        model.ppl(open(GPL).read(), ctx=64, pattern="nope", max_windows=1)
    with pytest.raises(ValueError, match="path"):
        attnkit.Model("/nonexistent.gguf")


@needs_model
def test_stream_ppl_full_equals_prefill_and_streaming_keeps_its_budget(model):
    text = open(GPL).read()
    # One decode step per token over a full cache scores what one prefill window scores.
    window = model.ppl(text, ctx=160, max_windows=1)
    full = model.stream_ppl(text, tokens=160)
    assert full["tokens"] == window["tokens"] == 159
    assert abs(full["ppl"] - window["ppl"]) < 1e-3 * window["ppl"]
    assert full["cache_tokens"] == 159 and full["cache"] == "full"
    streaming = model.stream_ppl(text, tokens=160, cache="streaming:sinks=4,recent=60")
    assert streaming["cache_tokens"] == 64
    assert [(s["start"], s["end"]) for s in streaming["ppl_by_segment"]] == [(0, 159)]
    assert np.isfinite(streaming["ppl"]) and streaming["ppl"] != full["ppl"]
    h2o = model.passkey(length=256, trials=1, cache="h2o:heavy=64,recent=64")
    assert h2o["trials"] == 1
    with pytest.raises(ValueError, match="cache"):
        model.stream_ppl(text, tokens=100, cache="lru")
    with pytest.raises(ValueError, match="tokens"):
        model.stream_ppl("short", tokens=100)


@needs_model
def test_score_modifiers_equal_the_cli_and_reject_bad_values(model):
    text = open(GPL).read()
    plain = model.ppl(text, ctx=128, max_windows=1)
    assert model.ppl(text, ctx=128, max_windows=1, selective=0.0)["ppl"] == plain["ppl"]
    for kwargs, flags in [({"selective": 0.05}, ["--selective", "0.05"]),
                          ({"attention_temperature": 0.9}, ["--temperature", "0.9"]),
                          ({"mask_heads": [(3, 1), (5, 2)], "mask_mode": "zero"},
                           ["--mask-heads", "3.1,5.2", "--mask-mode", "zero"])]:
        got = model.ppl(text, ctx=128, max_windows=1, **kwargs)
        cli = json.loads(subprocess.run([CLI, "model", "ppl", "--text", GPL, "--ctx", "128",
                                         "--max-windows", "1", "--json", *flags], check=True,
                                        capture_output=True, text=True).stdout)
        assert got["ppl"] != plain["ppl"]
        assert abs(got["ppl"] - cli["ppl"]) < 1e-4 * cli["ppl"], kwargs
    per_layer = model.ppl(text, ctx=128, max_windows=1, selective=[0.05] * 30)
    assert abs(per_layer["ppl"] - model.ppl(text, ctx=128, max_windows=1,
                                            selective=0.05)["ppl"]) < 1e-9
    for kwargs, name in [({"selective": -1.0}, "selective"), ({"selective": [0.1, 0.2]}, "selective"),
                         ({"attention_temperature": 0.0}, "temperature"),
                         ({"mask_heads": [(30, 0)]}, "masked_heads"),
                         ({"mask_mode": "all"}, "mask_mode")]:
        with pytest.raises(ValueError, match=name):
            model.ppl(text, ctx=128, max_windows=1, **kwargs)
    with pytest.raises(TypeError, match="mask_heads"):
        model.ppl(text, ctx=128, max_windows=1, mask_heads=["3.1"])
    with pytest.raises(TypeError):
        model.ppl(text, ctx=128, max_windows=1, selectiv=0.1)


@needs_model
def test_act_and_sinks(model):
    text = open(GPL).read()
    layers = model.sinks(text, ctx=128, windows=1)
    assert len(layers) == 30 and sum(l["per_head"] for l in layers) > 0
    assert all(0 <= l["heads_with"] <= 9 for l in layers)
    plain = model.ppl(text, ctx=64, max_windows=1)["ppl"]
    assert model.ppl(text, ctx=64, max_windows=1, act="beta=1")["ppl"] == plain
    assert model.ppl(text, ctx=64, max_windows=1, act=True)["ppl"] != plain
    with pytest.raises(ValueError, match="act"):
        model.ppl(text, ctx=64, max_windows=1, act="beta=3")
    with pytest.raises(ValueError, match="act"):
        model.passkey(256, 1, act=True, cache="streaming:sinks=4,recent=60")


@needs_model
def test_retrieval_heads_and_influence(model):
    heads = model.retrieval_heads(64, 1)
    assert len(heads) == 270
    assert heads[0]["score"] >= heads[-1]["score"] and heads[0]["score"] > 0.2
    top = [(h["layer"], h["head"]) for h in heads[:4]]
    text = open(GPL).read()
    docs = model.influence(text, 64, top, max_windows=2)
    assert [d["index"] for d in docs] == [0, 1]
    for d in docs:
        assert d["score"] == pytest.approx((d["masked_nll"] - d["base_nll"]) / d["base_nll"])
    assert all(d["score"] == 0 for d in model.influence(text, 64, [], max_windows=1))
    with pytest.raises(ValueError, match="heads"):
        model.influence(text, 64, [(30, 0)], max_windows=1)


@needs_model
def test_moh_keeps_heads(model):
    text = open(GPL).read()
    plain = model.ppl(text, ctx=64, max_windows=1)["ppl"]
    assert model.ppl(text, ctx=64, max_windows=1, moh="top=9")["ppl"] == plain
    assert model.ppl(text, ctx=64, max_windows=1, moh="top=8")["ppl"] != plain
    with pytest.raises(ValueError, match="moh"):
        model.ppl(text, ctx=64, max_windows=1, moh="top=10")
    with pytest.raises(ValueError, match="moh"):
        model.ppl(text, ctx=64, max_windows=1, moh="k=3")
