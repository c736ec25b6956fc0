"""attnkit.Model: the real model (SmolLM2-135M, GGUF) on attnkit's runtime, from Python.

    m = attnkit.Model()                       # models/SmolLM2-135M-Instruct.Q4_1.gguf
    m.ppl(text, ctx=1024)                     # {"ppl", "nll", "tokens", "windows", "seconds"}
    m.ppl(text, ctx=1024, pattern="window:size=256")
    m.passkey(length=2048, trials=5)          # {"accuracy", "correct", "trials", "mean_tokens"}
    m.generate("The capital of France is", n=16)
    m.capture(text, ctx=512, layers=[0, 15])  # {layer: {"q", "k", "v"}} numpy [1, H, T, 64]
    m.stream_ppl(text, tokens=16384, cache="streaming:sinks=4,recent=1020")
                                              # token by token, past the trained context

Patterns are spec strings or attnkit.Pattern objects; they apply to every prefill and decode step
as `attnkit model` does. Caches are spec strings (full, streaming, h2o;
src/model/kv_cache.h has the rules).

ppl, passkey, generate and stream_ppl change the attention scores with the keywords
(src/model/attention_modifiers.h has the rules):
    selective=s            Selective Attention: scores x (1 + s ln i), i the 1-based absolute
                           position; one s, or a list of one per layer
    attention_temperature=T   TempScale: softmax(q.k / (sqrt(d) T))
    mask_heads=[(layer, head), ...], mask_mode="uniform" | "zero"
                           AttentionInfluence's head masks: prefix mean of V, or zero output
    act="on" | "tau=0.1,beta=0.4,from=2"
                           ACT: hidden attention sinks calibrated (full cache only)
    moh="top=K[,shared=S][,gates=weighted|binary]"
                           MoH: each token keeps K routed heads (parameter-free router)
m.sinks(text, ctx=1024) lists ACT's hidden sinks per layer; m.retrieval_heads() scores every head
on a synthetic copy task and m.influence(text, ctx, heads) scores windows by AttentionInfluence
(src/model/heads.h).
"""

from __future__ import annotations

import os

from . import _ext

MODEL_FILE = os.path.join("models", "SmolLM2-135M-Instruct.Q4_1.gguf")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_model_path() -> str:
    """$ATTNKIT_MODEL, else models/... under the working directory or the source checkout."""
    env = os.environ.get("ATTNKIT_MODEL")
    if env:
        return env
    for root in (os.getcwd(), _REPO):
        candidate = os.path.join(root, MODEL_FILE)
        if os.path.exists(candidate):
            return candidate
    return ""


def _spec(pattern) -> str:
    if pattern is None:
        return ""
    spec = getattr(pattern, "spec", pattern)
    if not isinstance(spec, str):
        raise TypeError(f"pattern: expected a spec string or a Pattern, got {type(pattern).__name__}")
    return spec


def _cache(cache) -> str:
    if not isinstance(cache, str):
        raise TypeError(f"cache: expected a spec string, got {type(cache).__name__}")
    return cache


def _heads_text(heads, name: str) -> str:
    """(layer, head) pairs as the extension's "L.H,L.H"."""
    names = []
    for entry in heads:
        if (not isinstance(entry, (tuple, list)) or len(entry) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in entry)):
            raise TypeError(f"{name}: expected (layer, head) pairs of integers, got {entry!r}")
        if entry[0] < 0 or entry[1] < 0:
            raise ValueError(f"{name}: ({entry[0]}, {entry[1]}) has a negative index")
        names.append(f"{entry[0]}.{entry[1]}")
    return ",".join(names)


def _modifiers(selective=0.0, attention_temperature=1.0, mask_heads=(), mask_mode="uniform",
               act=None, moh=None):
    """The score modifiers as the extension takes them; bad values raise ValueError there."""
    if isinstance(selective, (int, float)) and not isinstance(selective, bool):
        selective = [float(selective)]
    try:
        selective = [float(s) for s in selective]
    except TypeError:
        raise TypeError(f"selective: expected a number or a list of numbers, "
                        f"got {type(selective).__name__}") from None
    if not isinstance(mask_mode, str):
        raise TypeError(f"mask_mode: expected 'uniform' or 'zero', got {type(mask_mode).__name__}")
    if act is True:
        act = "on"
    if act is not None and act is not False and not isinstance(act, str):
        raise TypeError(f"act: expected a spec string or a bool, got {type(act).__name__}")
    if moh is not None and not isinstance(moh, str):
        raise TypeError(f"moh: expected a spec string such as 'top=4', got {type(moh).__name__}")
    return _ext.modifiers(selective, float(attention_temperature),
                          _heads_text(mask_heads, "mask_heads"), mask_mode, act or "", moh or "")


def _int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


class Model:
    def __init__(self, path: str | None = None, *, threads: int | None = None):
        path = path if path is not None else default_model_path()
        if not path:
            raise ValueError(f"path: no model found ({MODEL_FILE}); run `make setup` or pass path=")
        self.path = path
        self._model = _ext.Model(path, 0 if threads is None else _int(threads, "threads"))

    @property
    def config(self) -> dict:
        return self._model.config

    def tokenize(self, text: str) -> list[int]:
        return self._model.tokenize(text)

    def detokenize(self, ids) -> str:
        return self._model.detokenize([int(i) for i in ids])

    def ppl(self, text: str, ctx: int, pattern=None, *, max_windows: int = 0,
            **modifiers) -> dict:
        """Perplexity over consecutive windows of ctx tokens (each from an empty cache)."""
        return self._model.ppl(text, _int(ctx, "ctx"), _spec(pattern),
                               _int(max_windows, "max_windows"), _modifiers(**modifiers))

    def passkey(self, length: int, trials: int, pattern=None, *, seed: int = 0,
                cache: str = "full", **modifiers) -> dict:
        """Passkey retrieval at `length` tokens, teacher-forced, `trials` random keys and depths."""
        return self._model.passkey(_int(length, "length"), _int(trials, "trials"), _spec(pattern),
                                   _int(seed, "seed"), _cache(cache), _modifiers(**modifiers))

    def generate(self, prompt: str, n: int, pattern=None, *, temperature: float = 0.0,
                 seed: int = 0, cache: str = "full", **modifiers) -> str:
        """Up to n tokens after the prompt (greedy at sampling temperature 0)."""
        return self._model.generate(prompt, _int(n, "n"), _spec(pattern), float(temperature),
                                    _int(seed, "seed"), _cache(cache), _modifiers(**modifiers))

    def stream_ppl(self, text: str, tokens: int, cache: str = "full", **modifiers) -> dict:
        """Teacher-forced perplexity one decode step per token over the text's first `tokens`:
        {"tokens", "ppl", "ppl_by_segment": [{"start", "end", "ppl"}], "tokens_per_s",
        "cache_tokens", "cache"}, segments of 1024 scored positions."""
        return self._model.stream_ppl(text, _int(tokens, "tokens"), _cache(cache),
                                      _modifiers(**modifiers))

    def sinks(self, text: str, ctx: int, *, windows: int = 4, tau: float = 0.1) -> list:
        """ACT's hidden sinks per layer over `windows` windows of ctx tokens:
        [{"layer", "per_head", "heads_with", "top"}] (columns other than each head's first sink
        whose mean attention exceeds tau)."""
        return self._model.sinks(text, _int(ctx, "ctx"), _int(windows, "windows"), float(tau))

    def retrieval_heads(self, length: int = 256, trials: int = 4, *, seed: int = 0) -> list:
        """Every head's retrieval score on `trials` copies of `length` random tokens, highest
        first: [{"layer", "head", "score"}]."""
        return self._model.retrieval_heads(_int(length, "length"), _int(trials, "trials"),
                                           _int(seed, "seed"))

    def influence(self, text: str, ctx: int, heads, *, mask_mode: str = "uniform",
                  max_windows: int = 0) -> list:
        """AttentionInfluence per window of ctx tokens, in text order: {"index", "start",
        "base_nll", "masked_nll", "score"}, score = (masked - base) / base with `heads`
        ((layer, head) pairs) masked."""
        return self._model.influence(text, _int(ctx, "ctx"), _heads_text(heads, "heads"),
                                     mask_mode, _int(max_windows, "max_windows"))

    def capture(self, text: str, ctx: int, layers) -> dict:
        """Post-RoPE q and the k, v of the first ctx tokens at the given layers."""
        return self._model.capture(text, _int(ctx, "ctx"), [_int(l, "layers") for l in layers])
