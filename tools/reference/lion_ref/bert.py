"""BERT building blocks with HF ``BertLayer`` parameter names (post-norm).

Shared by the Q-Former (qformer.py), the vision aggregator (aggregator.py) and RAM's
tagging head (ram.py).  Additive masks use BERT's ``(1 - mask) * -10000.0``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def extended_mask(mask, dtype=torch.float32):
    """[B, L] 1/0 mask -> additive [B, 1, 1, L] (0 keep, -10000 drop), as BERT does."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads, kv_width=None):
        super().__init__()
        assert hidden % heads == 0
        self.heads, self.hd = heads, hidden // heads
        kv_width = kv_width or hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def _split(self, x):
        return x.view(x.shape[0], x.shape[1], self.heads, self.hd).transpose(1, 2)

    def forward(self, x, mask_add=None, kv=None):
        src = x if kv is None else kv
        q, k, v = self._split(self.query(x)), self._split(self.key(src)), self._split(self.value(src))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        if mask_add is not None:
            s = s + mask_add
        p = torch.softmax(s, dim=-1)
        return (p @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden, eps):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h, inp):
        return self.LayerNorm(self.dense(h) + inp)


class BertAttention(nn.Module):
    """``self`` (query/key/value) + ``output`` (dense, LayerNorm): post-norm residual."""

    def __init__(self, hidden, heads, eps=1e-12, kv_width=None):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, kv_width)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x, mask_add=None, kv=None):
        return self.output(self.self(x, mask_add, kv), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x):
        return F.gelu(self.dense(x))  # HF "gelu" = exact erf GELU


class BertOutput(nn.Module):
    def __init__(self, inter, hidden, eps):
        super().__init__()
        self.dense = nn.Linear(inter, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h, inp):
        return self.LayerNorm(self.dense(h) + inp)


def bert_init(module, std=0.02):
    """HF BERT init: Linear/Embedding N(0, std), LayerNorm (1, 0), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
