"""HF-style config.json dicts -> the fields the reference modules read, with HF's defaults.

  vision_config(d)  a CLIPConfig dict (its "vision_config") or a CLIPVisionConfig dict
  llama_config(d)   a LlamaConfig / PinkConfig dict (PinkConfig is a LlamaConfig)
  pink_options(d)   PinkConfig's own fields (upstream pink/model/pink.py PinkConfig defaults)

Only what the forward pass needs is returned; unknown keys are ignored. Settings the reference
does not implement (rope_scaling, attention_bias, another activation) are refused, not ignored.
"""

CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, num_channels=3, image_size=224, patch_size=32,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5)

LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", rms_norm_eps=1e-6,
                      rope_theta=10000.0, rope_scaling=None, attention_bias=False, tie_word_embeddings=False)

PINK_DEFAULTS = dict(clip_select_layer=-2, adapter_vision_enable=False, adapter_vision_dim=8,
                     adapter_vision_scale=1.0, adapter_attn=True, adapter_mlp=False, adapter_llm_enable=False,
                     adapter_llm_dim=8, adapter_llm_scale=1.0, adapter_non_linear=False, crop_size=224)


def _fill(d, defaults):
    """defaults, overridden by d's value of each of their keys (a null in d keeps the default)."""
    return {k: (d[k] if d.get(k) is not None else v) for k, v in defaults.items()}


def vision_config(d):
    if "vision_config" in d:  # a whole CLIPConfig (openai/clip-vit-large-patch14's config.json)
        d = d["vision_config"] or {}
    c = _fill(d, CLIP_VISION_DEFAULTS)
    if c["hidden_act"] not in ("quick_gelu", "gelu"):
        raise ValueError("CLIP hidden_act %r is not implemented" % c["hidden_act"])
    if c["hidden_size"] % c["num_attention_heads"] or c["image_size"] % c["patch_size"]:
        raise ValueError("CLIP: heads must divide hidden_size and patch_size image_size")
    return c


def llama_config(d):
    c = _fill(d, LLAMA_DEFAULTS)
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c["hidden_act"] != "silu":
        raise ValueError("LLaMA hidden_act %r is not implemented" % c["hidden_act"])
    if c["rope_scaling"] is not None:
        raise ValueError("LLaMA rope_scaling is not implemented")
    if c["attention_bias"]:
        raise ValueError("LLaMA attention_bias is not implemented")
    if c["tie_word_embeddings"]:
        raise ValueError("LLaMA tie_word_embeddings is not implemented (Llama-2 is untied)")
    h, kv = c["num_attention_heads"], c["num_key_value_heads"]
    if c["hidden_size"] % h or h % kv:
        raise ValueError("LLaMA: heads must divide hidden_size and key/value heads divide heads")
    return c


def pink_options(d):
    return _fill(d, PINK_DEFAULTS)
