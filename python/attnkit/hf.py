"""attnkit as a Hugging Face transformers attention implementation.

    import attnkit.torch
    attnkit.torch.register_transformers()
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="attnkit")
    model(ids)                                  # dense causal attention on attnkit's kernel
    model(ids, pattern="window:size=128")       # every layer through the pattern

The pattern travels as a keyword argument of the model call (transformers passes extra keyword
arguments down to each attention layer). GQA is served without repeating K and V. Padded batches
and sliding-window layers are refused (ValueError) rather than silently attended wrongly; the
mask function registered beside the attention passes a padding mask through (as FlashAttention's
does) so that they are seen.
"""

from __future__ import annotations

NAME = "attnkit"


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None,
                      pattern=None, **kwargs):
    """transformers' attention signature: query [B, Hq, S, D], key/value [B, Hkv, S_k, D];
    returns (out [B, S, Hq, Dv], None)."""
    from .torch import attention

    if attention_mask is not None:
        raise ValueError("attention_mask: padded batches are not supported by attnkit yet "
                         "(pass unpadded sequences, one per call or of equal length)")
    if getattr(module, "sliding_window", None):
        raise ValueError("sliding_window: sliding-window layers are not mapped to attnkit yet; "
                         "pass pattern='window:size=...' on a model without them")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = attention(query, key, value, causal=bool(causal), scale=scaling, pattern=pattern,
                    dropout_p=float(dropout or 0.0))
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers attention_forward (and its mask function) under the name "attnkit"."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    return NAME
