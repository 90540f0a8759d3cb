"""InstructBLIP Q-Former (LION ``models/Qformer.py`` semantics), plain PyTorch.

The module is the upstream ``Qformer.bert`` (``BertModel`` without pooler); with the
prefix ``Qformer.bert.`` its state-dict keys are the upstream ones:
``embeddings.{word_embeddings,position_embeddings,LayerNorm}``,
``encoder.layer.N.{attention,crossattention (N % freq == 0),intermediate,output,
intermediate_query,output_query}.*``.

Forward (``query_embeds`` [B,Q,H], ``input_ids`` [B,T], ``attention_mask`` [B,Q+T],
``encoder_hidden_states`` [B,N,W]):
  * embeddings: word + absolute position (0..T-1) for the text only, queries
    concatenated in FRONT, LayerNorm on the concatenation (eps 1e-12);
  * each layer: bidirectional self-attention over [queries; text] with the padding mask
    (``(1-m)*-10000``); in layers with ``layer_num % cross_attention_freq == 0`` the query
    part (first Q positions) cross-attends to the image embeddings; then the query part
    goes through ``intermediate_query``/``output_query`` and the text part through
    ``intermediate``/``output``; all sub-layers post-norm.
Returns the last hidden state [B, Q+T, H]; LION keeps ``[:, :Q]``.
"""
import torch
import torch.nn as nn

from .bert import (BertAttention, BertIntermediate, BertOutput, bert_init, extended_mask)


class QFormerEmbeddings(nn.Module):
    def __init__(self, vocab, hidden, max_pos, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids=None, query_embeds=None):
        if input_ids is not None:
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            e = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None]
            if query_embeds is not None:
                e = torch.cat([query_embeds, e], dim=1)
        else:
            e = query_embeds
        return self.LayerNorm(e)


class QFormerLayer(nn.Module):
    def __init__(self, cfg, layer_num):
        super().__init__()
        h, nh, eps, inter = cfg["hidden"], cfg["heads"], cfg.get("ln_eps", 1e-12), cfg["intermediate"]
        self.attention = BertAttention(h, nh, eps)
        self.has_cross = layer_num % cfg.get("cross_attention_freq", 2) == 0
        if self.has_cross:
            self.crossattention = BertAttention(h, nh, eps, kv_width=cfg["encoder_width"])
        self.intermediate = BertIntermediate(h, inter)
        self.output = BertOutput(inter, h, eps)
        self.intermediate_query = BertIntermediate(h, inter)
        self.output_query = BertOutput(inter, h, eps)

    def forward(self, x, mask_add, enc, enc_mask_add, query_length):
        a = self.attention(x, mask_add)
        if query_length > 0:
            q = a[:, :query_length]
            if self.has_cross:
                q = self.crossattention(q, enc_mask_add, kv=enc)
            out = self.output_query(self.intermediate_query(q), q)
            if a.shape[1] > query_length:
                t = a[:, query_length:]
                out = torch.cat([out, self.output(self.intermediate(t), t)], dim=1)
            return out
        return self.output(self.intermediate(a), a)


class QFormerEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([QFormerLayer(cfg, i) for i in range(cfg["layers"])])


class QFormer(nn.Module):
    """cfg (model.json aggregator.qformer + encoder_width): hidden, layers, heads,
    intermediate, ln_eps (1e-12), cross_attention_freq (2), vocab_size (30523),
    max_position (512), encoder_width (vision width, 1408)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.embeddings = QFormerEmbeddings(cfg["vocab_size"], cfg["hidden"],
                                            cfg.get("max_position", 512), cfg.get("ln_eps", 1e-12))
        self.encoder = QFormerEncoder(cfg)

    def init_weights(self, std=0.02):
        return bert_init(self, std)

    def forward(self, input_ids=None, attention_mask=None, query_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None):
        x = self.embeddings(input_ids, query_embeds)
        ql = 0 if query_embeds is None else query_embeds.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], device=x.device)
        m = extended_mask(attention_mask, x.dtype)
        em = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=x.device)
            em = extended_mask(encoder_attention_mask, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, m, encoder_hidden_states, em, ql)
        return x
