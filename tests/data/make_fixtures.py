"""Independent fixtures for the GGUF reader and the tokenizer, written with PyPI packages
(gguf 0.19.0, tokenizers 0.23.3 and numpy 2.4.6 were used), not with attnkit's own code:

  pypi_gguf_fixture.gguf          metadata of every scalar and array type, and tensors in F32,
                                  F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K and Q4_K (quantized by gguf)
  pypi_gguf_fixture_dequant.npy   the tensors dequantized by gguf.quants.dequantize, concatenated
                                  in file order as float32
  smollm2_token_ids.json          ids of a set of texts from a `tokenizers` BPE built from the
                                  SmolLM2 GGUF's vocabulary and merges, with SmolLM2's
                                  pre-tokenizer (single digits, then GPT-2 byte-level regex)

Run from the repository root after scripts/setup-model.sh, in a virtual environment with
`pip install gguf tokenizers numpy`:  python tests/data/make_fixtures.py
"""
import json
import pathlib

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HERE = pathlib.Path(__file__).parent
MODEL = pathlib.Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")

# Texts for the tokenizer: English, code, numbers, whitespace runs, contractions, non-ASCII,
# emoji, special tokens in the middle of text.
TEXTS = [
    "The capital of France is Paris.",
    "I'm sure they'll say it's 2024 and we've 12345 reasons.",
    "def f(x):\n    return x**2  # square\n\n\n",
    "  leading and   trailing spaces   ",
    "Caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e \u0440\u0443\u0441\u0441\u043a\u0438\u0439",
    "emoji \U0001F600\U0001F680 and symbols \u20ac\u00a3\u00a5",
    "<|im_start|>user\nWhat is 3.14159?<|im_end|>\n<|im_start|>assistant\n",
    "tabs\tand\r\nwindows line ends\r\n",
    "A" * 50 + " " + "ab" * 30,
    "numbers: 0 1 22 333 4444 55555 6.0e-3",
]


def write_gguf():
    path = HERE / "pypi_gguf_fixture.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 3.25)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.0e300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "h\u00e9llo, GGUF")
    w.add_array("test.array_i32", [1, -2, 3, -4])
    w.add_array("test.array_str", ["a", "", "\u00fcber"])
    rng = np.random.default_rng(7)
    values = []
    for name, qtype, shape in [
        ("t.f32", gguf.GGMLQuantizationType.F32, (3, 4)),
        ("t.f16", gguf.GGMLQuantizationType.F16, (2, 64)),
        ("t.bf16", gguf.GGMLQuantizationType.BF16, (2, 64)),
        ("t.q8_0", gguf.GGMLQuantizationType.Q8_0, (3, 64)),
        ("t.q4_0", gguf.GGMLQuantizationType.Q4_0, (2, 96)),
        ("t.q4_1", gguf.GGMLQuantizationType.Q4_1, (2, 64)),
        ("t.q6_k", gguf.GGMLQuantizationType.Q6_K, (2, 256)),
        ("t.q4_k", gguf.GGMLQuantizationType.Q4_K, (1, 256)),
    ]:
        if qtype in (gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.Q4_K):
            # gguf cannot quantize K-quants: random blocks with finite fp16 scales are valid.
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            packed = rng.integers(0, 256, (shape[0], shape[1] // block * size), dtype=np.uint8)
            scales = np.array([0.01, 0.02], dtype=np.float16).view(np.uint8)
            for b in range(shape[1] // block):
                at = b * size + (208 if qtype == gguf.GGMLQuantizationType.Q6_K else 0)
                width = 2 if qtype == gguf.GGMLQuantizationType.Q6_K else 4
                packed[:, at:at + width] = scales[:width]
        else:
            packed = gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), qtype)
        w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
        values.append(gguf.quants.dequantize(packed, qtype).astype(np.float32).ravel())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.save(HERE / "pypi_gguf_fixture_dequant.npy", np.concatenate(values))


def write_token_ids():
    reader = gguf.GGUFReader(str(MODEL))

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in strings("tokenizer.ggml.merges")]
    types = reader.fields["tokenizer.ggml.token_type"]
    token_type = [int(types.parts[i][0]) for i in types.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, token_type) if kind in (3, 4)])
    cases = [{"text": text, "ids": tok.encode(text, add_special_tokens=False).ids} for text in TEXTS]
    (HERE / "smollm2_token_ids.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_gguf()
    write_token_ids()
