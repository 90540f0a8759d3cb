"""LION vision aggregator (``models/lion_adapters.py`` FusionAdapter) + projection.

``FusionAdapter`` = ``blocks`` of HF ``BertLayer`` built with ``is_decoder=True,
add_cross_attention=True`` and called without masks: bidirectional self-attention ->
cross-attention to one ViT layer output -> FFN (intermediate 3072, exact GELU), all
post-norm with LayerNorm eps 1e-12.  Keys (prefix ``fusion_adapter.``):
``blocks.N.attention.{self.{query,key,value},output.{dense,LayerNorm}}``,
``blocks.N.crossattention.*`` (same layout), ``blocks.N.intermediate.dense``,
``blocks.N.output.{dense,LayerNorm}``.

``VisionAggregator`` groups the upstream top-level modules used on this branch:
``fusion_adapter``, ``ln_adapter`` (LayerNorm(vision_width), eps 1e-5 as torch default),
``adapter_proj`` = Sequential(Linear(W, proj_hidden), GELU, Linear(proj_hidden, d_model))
(keys ``adapter_proj.0.*``, ``adapter_proj.2.*``).
"""
import torch.nn as nn
import torch.nn.functional as F

from .bert import BertAttention, BertIntermediate, BertOutput, bert_init


class FusionBlock(nn.Module):
    def __init__(self, dim, heads, inter=3072, eps=1e-12):
        super().__init__()
        self.attention = BertAttention(dim, heads, eps)
        self.crossattention = BertAttention(dim, heads, eps)
        self.intermediate = BertIntermediate(dim, inter)
        self.output = BertOutput(inter, dim, eps)

    def forward(self, x, enc):
        a = self.attention(x)
        a = self.crossattention(a, kv=enc)
        return self.output(self.intermediate(a), a)


class FusionAdapter(nn.Module):
    def __init__(self, num_blocks, dim, heads, inter=3072, eps=1e-12):
        super().__init__()
        self.blocks = nn.ModuleList([FusionBlock(dim, heads, inter, eps) for _ in range(num_blocks)])

    def forward(self, hidden, enc_list):
        """enc_list: one tensor per block (or a single tensor used by all blocks)."""
        if not isinstance(enc_list, (list, tuple)):
            enc_list = [enc_list] * len(self.blocks)
        assert len(enc_list) == len(self.blocks)
        for blk, enc in zip(self.blocks, enc_list):
            hidden = blk(hidden, enc)
        return hidden


class VisionAggregator(nn.Module):
    """cfg: vision_width, d_model, proj_hidden (4*W upstream), fusion {blocks, heads,
    intermediate, ln_eps, hidden_layer, cross_layers}.
    forward(vit_outputs: list of block outputs) -> [B, 1+P, d_model]."""

    def __init__(self, cfg):
        super().__init__()
        f = cfg["fusion"]
        w = cfg["vision_width"]
        self.hidden_layer = f["hidden_layer"]
        self.cross_layers = list(f["cross_layers"])
        self.fusion_adapter = FusionAdapter(f["blocks"], w, f["heads"], f.get("intermediate", 3072),
                                            f.get("ln_eps", 1e-12))
        self.ln_adapter = nn.LayerNorm(w)
        self.adapter_proj = nn.Sequential(nn.Linear(w, cfg["proj_hidden"]), nn.GELU(),
                                          nn.Linear(cfg["proj_hidden"], cfg["d_model"]))

    def init_weights(self, std=0.02):
        return bert_init(self, std)

    def forward(self, vit_outputs):
        h = self.fusion_adapter(vit_outputs[self.hidden_layer],
                                [vit_outputs[i] for i in self.cross_layers])
        return self.adapter_proj(self.ln_adapter(h))
