"""A real client: SmolLM2 in Hugging Face transformers (loaded from our GGUF file) on attnkit."""

import math
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
import attnkit.torch as at  # noqa: E402

GPL = "/usr/share/common-licenses/GPL-3"
MODEL = attnkit.model.default_model_path()
pytestmark = pytest.mark.skipif(
    os.environ.get("ATTNKIT_SKIP_MODEL") == "1" or not MODEL,
    reason="the real model is not set up (ATTNKIT_SKIP_MODEL=1 or missing)")


@pytest.fixture(scope="module")
def smollm():
    at.register_transformers()
    folder, name = os.path.split(MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, attn_implementation="sdpa", dtype=torch.float32)
    ids = tokenizer(open(GPL).read(), return_tensors="pt").input_ids
    return model, ids


def perplexity(model, ids, ctx, windows, **kwargs):
    nll, scored = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            x = ids[:, w * ctx:(w + 1) * ctx]
            logits = model(x, use_cache=False, **kwargs).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            scored += ctx - 1
    return math.exp(nll / scored)


def test_dense_perplexity_equals_transformers_sdpa_and_a_pattern_runs(smollm):
    model, ids = smollm
    model.set_attn_implementation("sdpa")
    sdpa = perplexity(model, ids, 512, 4)
    model.set_attn_implementation("attnkit")
    try:
        ours = perplexity(model, ids, 512, 4)
        window = perplexity(model, ids, 512, 1, pattern="window:size=64")
        with pytest.raises(ValueError, match="pattern"):
            perplexity(model, ids, 64, 1, pattern="nope")
    finally:
        model.set_attn_implementation("sdpa")
    assert abs(ours - sdpa) <= 1e-3 * sdpa, (ours, sdpa)  # the issue asks 0.1%
    assert 20 < sdpa < 30  # 23.76 measured on this text
    assert math.isfinite(window) and window > ours  # the pattern reached every layer


def test_padded_batches_are_refused(smollm):
    model, ids = smollm
    model.set_attn_implementation("attnkit")
    try:
        x = ids[:, :16].repeat(2, 1)
        mask = torch.ones_like(x)
        mask[1, :4] = 0
        with pytest.raises(ValueError, match="attention_mask"):
            model(x, attention_mask=mask, use_cache=False)
    finally:
        model.set_attn_implementation("sdpa")
