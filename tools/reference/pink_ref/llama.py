"""LLaMA decoder (HF ``LlamaForCausalLM`` semantics, Llama-2) with Pink's adapters, plain PyTorch.

Parameter names equal the HF / Pink state-dict keys: ``model.embed_tokens.weight``,
``model.layers.N.{input_layernorm,post_attention_layernorm}.weight``,
``model.layers.N.self_attn.{q,k,v,o}_proj.weight``, ``model.layers.N.mlp.{gate,up,down}_proj.weight``,
``model.layers.N.adapter_{attn,mlp}.tune_adapter_{a,b}.{weight,bias}``, ``model.norm.weight``,
``lm_head.weight``.

Semantics (HF transformers 4.38, the version Pink pins):
  * RMSNorm in f32: x * rsqrt(mean(x^2) + rms_norm_eps) * weight (no mean, no bias);
  * attention without biases; rotary positions as LlamaRotaryEmbedding: inv_freq[i] =
    1 / rope_theta^(2i / head_dim), angle = position * inv_freq[i] (f32), applied with
    rotate_half (element i pairs with i + head_dim/2, not interleaved) to q and k before the
    cache; grouped-query attention when num_key_value_heads < num_attention_heads (each key/value
    head serves heads / kv_heads consecutive query heads); scores / sqrt(head_dim), causal,
    softmax in f32;
  * SwiGLU MLP down(silu(gate(x)) * up(x)); final RMSNorm; untied lm_head.

Pink (upstream adapter.py ``LlamaAdapterDecoderLayer``), when adapter_llm_enable, in every layer:
  h = input_layernorm(x); h = adapter_attn(h) (SiLU inside when adapter_non_linear);
  x = x + self_attn(h); h = post_attention_layernorm(x); h = adapter_mlp(h) (when adapter_mlp;
  always linear: upstream does not pass non_linear to it); x = x + mlp(h).

forward(input_ids=None, inputs_embeds=None, past=None) -> (logits [B,T,V], past): ``past`` is
the KV cache, a list per layer of (k, v) [B, kv_heads, positions, head_dim] (k rotated); the new
tokens take positions len(past).. . greedy(...) decodes with or without the cache.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter import AdapterLayer
from .config import llama_config, pink_options


class LlamaRMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(positions, head_dim, theta):
    """cos, sin [T, head_dim] for integer positions [T], as HF's LlamaRotaryEmbedding."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rotary(x, cos, sin):
    """x [B, heads, T, head_dim]; cos, sin [T, head_dim] (f32), used in x's dtype as HF's
    LlamaRotaryEmbedding returns them (a bf16 model's q and k stay bf16; f32 is unchanged)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = d // self.heads
        self.theta = c["rope_theta"]
        self.q_proj = nn.Linear(d, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, d, bias=False)

    def forward(self, x, past=None):
        b, t, _ = x.shape
        start = 0 if past is None else past[0].shape[2]
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rotary_cos_sin(torch.arange(start, start + t), self.head_dim, self.theta)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v)
        rep = self.heads // self.kv_heads  # HF's repeat_kv: kv head j serves query heads j*rep ..
        kr, vr = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = (q @ kr.transpose(2, 3)) / math.sqrt(self.head_dim)
        total = start + t
        causal = torch.arange(total)[None, :] <= torch.arange(start, total)[:, None]
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        att = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        y = (att @ vr).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(y), present


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c, adapter=None):
        """adapter: None, or dict(dim, attn, mlp, non_linear) for Pink's adapters."""
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(d, c["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(d, c["rms_norm_eps"])
        if adapter and adapter["attn"]:
            self.adapter_attn = AdapterLayer(d, adapter["dim"], adapter.get("scale", 1.0), adapter["non_linear"])
        if adapter and adapter["mlp"]:
            self.adapter_mlp = AdapterLayer(d, adapter["dim"], adapter.get("scale", 1.0), non_linear=False)

    def forward(self, x, past=None):
        h = self.input_layernorm(x)
        if hasattr(self, "adapter_attn"):
            h = self.adapter_attn(h)
        y, present = self.self_attn(h, past)
        x = x + y
        h = self.post_attention_layernorm(x)
        if hasattr(self, "adapter_mlp"):
            h = self.adapter_mlp(h)
        return x + self.mlp(h), present


class LlamaModel(nn.Module):
    def __init__(self, c, adapter=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(c, adapter) for _ in range(c["num_hidden_layers"])])
        self.norm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    """cfg: a LlamaConfig or PinkConfig dict (Pink's adapter_llm_enable, adapter_llm_dim,
    adapter_attn, adapter_mlp, adapter_non_linear, adapter_llm_scale are read from it)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = llama_config(cfg)
        o = pink_options(cfg)
        adapter = None
        if o["adapter_llm_enable"]:
            adapter = dict(dim=o["adapter_llm_dim"], scale=o["adapter_llm_scale"], attn=o["adapter_attn"],
                           mlp=o["adapter_mlp"], non_linear=o["adapter_non_linear"])
        self.model = LlamaModel(self.cfg, adapter)
        self.lm_head = nn.Linear(self.cfg["hidden_size"], self.cfg["vocab_size"], bias=False)

    def embed(self, input_ids):
        return self.model.embed_tokens(input_ids)

    def forward(self, input_ids=None, inputs_embeds=None, past=None):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        present = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, None if past is None else past[i])
            present.append(kv)
        return self.lm_head(self.model.norm(x)).float(), present

    def greedy(self, inputs_embeds, steps, use_cache=True):
        """Greedy decode of one prompt inputs_embeds [1, T, d] for `steps` tokens.
        use_cache=False runs the whole sequence again at every step (no KV cache).
        Returns (tokens [steps], logits [steps, V]): logits[s] are those token s was picked from."""
        tokens, logits = [], []
        lg, past = self.forward(inputs_embeds=inputs_embeds)
        for s in range(steps):
            last = lg[0, -1]
            tok = int(torch.argmax(last))
            tokens.append(tok)
            logits.append(last)
            if s + 1 == steps:
                break
            if use_cache:
                lg, past = self.forward(input_ids=torch.tensor([[tok]]), past=past)
            else:
                ids = torch.tensor([tokens])
                lg, _ = self.forward(inputs_embeds=torch.cat([inputs_embeds, self.embed(ids)], dim=1))
        return torch.tensor(tokens), torch.stack(logits)

    def init_weights(self):
        """Random weights for tests: Linear std fan_in^-0.5, embeddings std 1, RMSNorm weights
        near 1, the adapters' up-projection random (upstream initialises it to zero, which would
        make the adapter a no-op) so that every tensor matters."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif "embed_tokens" in name:
                    p.normal_(0, 1.0)
                elif p.dim() == 2:
                    p.normal_(0, p.shape[1] ** -0.5)
                else:  # adapter biases
                    p.normal_(0, 0.1)
        return self
