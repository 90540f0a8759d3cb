"""FlanT5 encoder-decoder with LION's mixture-of-adapters, plain PyTorch.

Parameter names equal the HF ``T5ForConditionalGeneration`` state-dict keys (as held by
upstream ``LIONT5InstructAdapter.t5_model``) minus the tied copies
``encoder.embed_tokens.weight`` / ``decoder.embed_tokens.weight`` (only ``shared.weight``
is a parameter here; ``strip_tied_embeddings`` drops those keys from an HF state dict).

Semantics (HF T5 v1.1 / FlanT5 with LION's overrides):
  * T5 RMSNorm (no mean, no bias), eps 1e-6, computed in f32;
  * attention without 1/sqrt(d) scaling, relative position bias (32 buckets, max
    distance 128), bidirectional in the encoder and causal (unidirectional buckets) in
    the decoder, computed by layer 0 of each stack and shared by all its layers;
    cross-attention has no position bias;
  * gated FF ``wo(act(wi_0 x) * wi_1 x)`` with act = exact erf GELU (LION sets
    ``dense_act_fn="gelu"``); "gelu_new" (tanh) and "relu" also accepted;
  * every FF sub-layer: ``out = h + FF(RMSNorm(h)) + router(h)`` where router is the
    AdapterRouter (LION ``lion_adapters.py``) on the *un-normalised* h;
  * final RMSNorm on both stacks, untied lm_head without d_model^-0.5 rescale
    (set cfg["tie_word_embeddings"]=True for the HF tied variant: lm_head=shared and
    the rescale is applied).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# The mask value: bf16's lowest, finite in f32 and in bf16 alike (float32's lowest rounds to
# -inf in bf16, and the unmasked entries then become 0 * -inf = NaN); masked scores still
# vanish in the softmax, so f32 results are unchanged.
NEG_INF = torch.finfo(torch.bfloat16).min


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32,
                             max_distance=128):
    """T5 bucket of (memory_position - query_position); same maths as HF/Mesh-TF."""
    buckets = torch.zeros_like(relative_position, dtype=torch.long)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class T5RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


class T5Attention(nn.Module):
    def __init__(self, cfg, has_bias, is_decoder):
        super().__init__()
        d, h, dk = cfg["d_model"], cfg["heads"], cfg["d_kv"]
        self.h, self.dk = h, dk
        self.is_decoder = is_decoder
        self.num_buckets = cfg.get("rel_buckets", 32)
        self.max_distance = cfg.get("rel_max_distance", 128)
        self.q = nn.Linear(d, h * dk, bias=False)
        self.k = nn.Linear(d, h * dk, bias=False)
        self.v = nn.Linear(d, h * dk, bias=False)
        self.o = nn.Linear(h * dk, d, bias=False)
        self.has_bias = has_bias
        if has_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, h)

    def compute_bias(self, q_len, k_len, q_offset=0):
        """[1, heads, q_len, k_len] bias for queries at positions q_offset.. and keys 0..k_len-1."""
        ctx = torch.arange(q_offset, q_offset + q_len, dtype=torch.long)[:, None]
        mem = torch.arange(k_len, dtype=torch.long)[None, :]
        b = relative_position_bucket(mem - ctx, bidirectional=not self.is_decoder,
                                     num_buckets=self.num_buckets, max_distance=self.max_distance)
        b = b.to(self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(b).permute(2, 0, 1).unsqueeze(0)

    def _shape(self, x):
        return x.view(x.shape[0], -1, self.h, self.dk).transpose(1, 2)

    def forward(self, x, bias, kv=None, past=None, use_cache=False):
        """x [B,q,d]; bias: additive [B or 1, h or 1, q, k] (position bias + mask);
        kv: encoder states for cross-attention (None for self-attention);
        past: (k, v) cached projections. Returns (out, (k, v) or None)."""
        q = self._shape(self.q(x))
        if kv is not None and past is not None:      # cross-attn: cached encoder projections
            k, v = past
        else:
            src = x if kv is None else kv
            k, v = self._shape(self.k(src)), self._shape(self.v(src))
            if past is not None:                       # self-attn: append to cache
                k = torch.cat([past[0], k], dim=2)
                v = torch.cat([past[1], v], dim=2)
        scores = q @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias
        att = torch.softmax(scores.float(), dim=-1).type_as(scores)
        y = (att @ v).transpose(1, 2).reshape(x.shape[0], -1, self.h * self.dk)
        return self.o(y), ((k, v) if use_cache else None)


class Adapter(nn.Module):
    """down(d,bottleneck) -> ReLU -> up(bottleneck,d), times learnable scalar ``scale``."""

    def __init__(self, d, bottleneck=64):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.down_proj = nn.Linear(d, bottleneck)
        self.up_proj = nn.Linear(bottleneck, d)

    def forward(self, x):
        return self.up_proj(F.relu(self.down_proj(x))) * self.scale


class AdapterRouter(nn.Module):
    """LION mixture of adapters. router_idx 0 = region-level task, 1 = image-level task.
    With 2 adapters: out = a0(x)*router_ratio1[idx] + a1(x)*router_ratio2[idx]
    (ratios init [[1],[0]] and [[0],[1]] repeated over d). With 1 adapter: a0(x)."""

    def __init__(self, d, num=2, bottleneck=64):
        super().__init__()
        self.adapters = nn.ModuleList([Adapter(d, bottleneck) for _ in range(num)])
        self.num = num
        if num > 1:
            self.router_ratio1 = nn.Parameter(torch.tensor([[1.0], [0.0]]).repeat(1, d))
            self.router_ratio2 = nn.Parameter(torch.tensor([[0.0], [1.0]]).repeat(1, d))
        self.router_idx = 1

    def forward(self, x):
        o1 = self.adapters[0](x)
        if self.num == 1:
            return o1
        assert self.router_idx in (0, 1)
        o2 = self.adapters[1](x)
        return o1 * self.router_ratio1[self.router_idx] + o2 * self.router_ratio2[self.router_idx]


class T5DenseGatedAct(nn.Module):
    def __init__(self, d, dff, act):
        super().__init__()
        self.wi_0 = nn.Linear(d, dff, bias=False)
        self.wi_1 = nn.Linear(d, dff, bias=False)
        self.wo = nn.Linear(dff, d, bias=False)
        self.act = act

    def forward(self, x):
        a = self.wi_0(x)
        if self.act == "gelu":
            a = F.gelu(a)
        elif self.act in ("gelu_new", "gelu_pytorch_tanh"):
            a = 0.5 * a * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a.pow(3))))
        elif self.act == "relu":
            a = F.relu(a)
        else:
            raise ValueError("unsupported ff_act %r" % self.act)
        return self.wo(a * self.wi_1(x))


class T5LayerFF(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.DenseReluDense = T5DenseGatedAct(d, cfg["d_ff"], cfg.get("ff_act", "gelu"))
        self.layer_norm = T5RMSNorm(d, cfg.get("ln_eps", 1e-6))
        ad = cfg.get("adapters") or {"num": 0}
        if ad.get("num", 0) > 0:
            self.adapter = AdapterRouter(d, ad["num"], ad.get("bottleneck", 64))
        else:
            self.adapter = None

    def forward(self, h):
        out = h + self.DenseReluDense(self.layer_norm(h))
        if self.adapter is not None:
            out = out + self.adapter(h)
        return out


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg, has_bias, is_decoder):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias, is_decoder)
        self.layer_norm = T5RMSNorm(cfg["d_model"], cfg.get("ln_eps", 1e-6))

    def forward(self, h, bias, past=None, use_cache=False):
        y, kv = self.SelfAttention(self.layer_norm(h), bias, past=past, use_cache=use_cache)
        return h + y, kv


class T5LayerCrossAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.EncDecAttention = T5Attention(cfg, False, True)
        self.layer_norm = T5RMSNorm(cfg["d_model"], cfg.get("ln_eps", 1e-6))

    def forward(self, h, enc, bias, past=None, use_cache=False):
        y, kv = self.EncDecAttention(self.layer_norm(h), bias, kv=enc, past=past, use_cache=use_cache)
        return h + y, kv


class T5Block(nn.Module):
    def __init__(self, cfg, has_bias, is_decoder):
        super().__init__()
        layers = [T5LayerSelfAttention(cfg, has_bias, is_decoder)]
        if is_decoder:
            layers.append(T5LayerCrossAttention(cfg))
        layers.append(T5LayerFF(cfg))
        self.layer = nn.ModuleList(layers)
        self.is_decoder = is_decoder


class T5Stack(nn.Module):
    def __init__(self, cfg, is_decoder):
        super().__init__()
        n = cfg["decoder_layers"] if is_decoder else cfg["encoder_layers"]
        self.is_decoder = is_decoder
        self.block = nn.ModuleList([T5Block(cfg, i == 0, is_decoder) for i in range(n)])
        self.final_layer_norm = T5RMSNorm(cfg["d_model"], cfg.get("ln_eps", 1e-6))

    def forward(self, x, attention_mask=None, enc=None, enc_mask=None, past=None, use_cache=False):
        """x: input embeddings [B,q,d]. attention_mask [B, k_total] (1 keep / 0 pad; decoder:
        mask over past+current positions). past: list per layer of (self_kv, cross_kv).
        Returns (hidden [B,q,d], new_past or None)."""
        b, q, _ = x.shape
        past_len = 0 if past is None else past[0][0][0].shape[2]
        k_len = past_len + q
        attn0 = self.block[0].layer[0].SelfAttention
        bias = attn0.compute_bias(q, k_len, past_len).to(x.dtype)  # [1,h,q,k]
        if attention_mask is None:
            attention_mask = torch.ones(b, k_len, device=x.device)
        m = attention_mask[:, None, None, :].to(x.dtype)
        if self.is_decoder:
            causal = (torch.arange(k_len)[None, :] <= torch.arange(past_len, k_len)[:, None])
            m = m * causal.to(x.device, x.dtype)[None, None]
        bias = bias + (1.0 - m) * NEG_INF
        cross_bias = None
        if self.is_decoder:
            if enc_mask is None:
                enc_mask = torch.ones(enc.shape[:2], device=x.device)
            cross_bias = (1.0 - enc_mask[:, None, None, :].to(x.dtype)) * NEG_INF
        h = x
        new_past = [] if use_cache else None
        for i, blk in enumerate(self.block):
            lp = past[i] if past is not None else (None, None)
            h, skv = blk.layer[0](h, bias, past=lp[0], use_cache=use_cache)
            ckv = None
            if self.is_decoder:
                h, ckv = blk.layer[1](h, enc, cross_bias, past=lp[1], use_cache=use_cache)
            h = blk.layer[-1](h)
            if use_cache:
                new_past.append((skv, ckv))
        return self.final_layer_norm(h), new_past


def shift_right(labels, start_id=0, pad_id=0):
    dec = torch.full_like(labels, pad_id)
    dec[:, 1:] = labels[:, :-1]
    dec[:, 0] = start_id
    return dec.masked_fill(dec == -100, pad_id)


class T5ForConditionalGeneration(nn.Module):
    """cfg keys (model.json "llm" section): vocab_size, d_model, d_ff, d_kv, heads,
    encoder_layers, decoder_layers, rel_buckets (32), rel_max_distance (128), ln_eps (1e-6),
    ff_act ("gelu"), adapters {"num": 2, "bottleneck": 64} (num 0 = plain T5),
    pad_id (0), eos_id (1), decoder_start_id (0), tie_word_embeddings (False).

    forward(input_ids=None, inputs_embeds=None, attention_mask=None, decoder_input_ids=None,
            decoder_attention_mask=None, labels=None) -> dict(logits, loss?, encoder_hidden)
    encode(inputs_embeds, attention_mask) -> encoder hidden [B,S,d]
    decode(decoder_input_ids, enc, enc_mask, past=None, decoder_attention_mask=None)
        -> (logits [B,q,V], new_past)   (KV-cache step: pass only the new tokens + past)
    set_router_idx(idx): 0 = region-level, 1 = image-level.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        d = cfg["d_model"]
        self.shared = nn.Embedding(cfg["vocab_size"], d)
        self.encoder = T5Stack(cfg, False)
        self.decoder = T5Stack(cfg, True)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(d, cfg["vocab_size"], bias=False)
        self.pad_id = cfg.get("pad_id", 0)
        self.eos_id = cfg.get("eos_id", 1)
        self.decoder_start_id = cfg.get("decoder_start_id", 0)

    def init_weights(self, factor=1.0):
        """HF-like T5 init (for tiny/test models); adapters keep LoRA-style init but with
        a random up_proj so that they are not a no-op."""
        c = self.cfg
        d, dff, dk, h = c["d_model"], c["d_ff"], c["d_kv"], c["heads"]
        for name, p in self.named_parameters():
            if "layer_norm" in name:
                nn.init.ones_(p)
            elif name.endswith("shared.weight") or name.endswith("lm_head.weight"):
                nn.init.normal_(p, std=factor)
            elif ".q." in name + ".":
                nn.init.normal_(p, std=factor * (d * dk) ** -0.5)
            elif any(("." + k + ".weight") in name for k in ("k", "v")):
                nn.init.normal_(p, std=factor * d ** -0.5)
            elif ".o.weight" in name:
                nn.init.normal_(p, std=factor * (h * dk) ** -0.5)
            elif "relative_attention_bias" in name:
                nn.init.normal_(p, std=factor * d ** -0.5)
            elif "wi_" in name:
                nn.init.normal_(p, std=factor * d ** -0.5)
            elif "wo." in name:
                nn.init.normal_(p, std=factor * dff ** -0.5)
            elif "router_ratio" in name or name.endswith(".scale"):
                pass
            elif "adapters" in name:
                nn.init.normal_(p, std=0.02)
        return self

    def set_router_idx(self, idx):
        for m in self.modules():
            if isinstance(m, AdapterRouter):
                m.router_idx = int(idx)

    def embed(self, input_ids):
        return self.shared(input_ids)

    def encode(self, inputs_embeds, attention_mask=None):
        return self.encoder(inputs_embeds, attention_mask)[0]

    def logits(self, h):
        if self.tied:
            return (h * self.cfg["d_model"] ** -0.5) @ self.shared.weight.t()
        return self.lm_head(h)

    def decode(self, decoder_input_ids, enc, enc_mask=None, past=None, decoder_attention_mask=None,
               use_cache=True):
        x = self.shared(decoder_input_ids)
        if decoder_attention_mask is None:
            past_len = 0 if past is None else past[0][0][0].shape[2]
            decoder_attention_mask = torch.ones(x.shape[0], past_len + x.shape[1], device=x.device)
        h, new_past = self.decoder(x, decoder_attention_mask, enc, enc_mask, past, use_cache)
        return self.logits(h), new_past

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None,
                decoder_input_ids=None, decoder_attention_mask=None, labels=None,
                encoder_hidden=None):
        if encoder_hidden is None:
            if inputs_embeds is None:
                inputs_embeds = self.shared(input_ids)
            encoder_hidden = self.encode(inputs_embeds, attention_mask)
        if decoder_input_ids is None:
            assert labels is not None, "need decoder_input_ids or labels"
            decoder_input_ids = shift_right(labels, self.decoder_start_id, self.pad_id)
        logits, _ = self.decode(decoder_input_ids, encoder_hidden, attention_mask,
                                decoder_attention_mask=decoder_attention_mask, use_cache=False)
        out = {"logits": logits, "encoder_hidden": encoder_hidden}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                          labels.reshape(-1), ignore_index=-100)
        return out


def strip_tied_embeddings(sd, prefix=""):
    """Drop HF's tied copies (encoder/decoder.embed_tokens.weight) from a state dict."""
    for k in (prefix + "encoder.embed_tokens.weight", prefix + "decoder.embed_tokens.weight"):
        sd.pop(k, None)
    return sd
