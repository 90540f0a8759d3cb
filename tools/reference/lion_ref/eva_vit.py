"""EVA ViT (the LION / InstructBLIP "eva_vit_g" vision tower), plain PyTorch.

Parameter names equal the upstream state-dict keys of ``eva_vit_g.pth``
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``), so
``load_state_dict`` works on released and tiny checkpoints alike.

Semantics: Conv patch embedding (kernel = stride = patch), CLS token in front,
absolute position embedding, pre-norm blocks (LayerNorm eps 1e-6), attention with a
bias-less qkv Linear plus separate ``q_bias``/``v_bias`` (k bias is zero), scale
head_dim^-0.5, MLP with exact (erf) GELU, no layer scale, no final norm.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class EvaAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(y)


class EvaMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class EvaBlock(nn.Module):
    def __init__(self, dim, heads, mlp_hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EvaAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = EvaMlp(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, image_size, patch_size, dim, in_chans=3):
        super().__init__()
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        assert x.shape[-1] == self.image_size and x.shape[-2] == self.image_size, x.shape
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaViT(nn.Module):
    """EVA ViT.

    cfg keys (model.json "vision" section): image_size, patch_size, dim, depth, heads,
    mlp_hidden, ln_eps (default 1e-6).  LION-XL: 224, 14, 1408, 39, 16, 6144.

    forward(pixels [B,3,H,W]) -> list of ``depth`` tensors [B, 1+P, dim], the output of
    every block (upstream ``return_intermediate``); element -1 is the final output.
    """

    def __init__(self, cfg):
        super().__init__()
        dim = cfg["dim"]
        self.cfg = dict(cfg)
        self.patch_embed = PatchEmbed(cfg["image_size"], cfg["patch_size"], dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        eps = cfg.get("ln_eps", 1e-6)
        self.blocks = nn.ModuleList(
            [EvaBlock(dim, cfg["heads"], cfg["mlp_hidden"], eps) for _ in range(cfg["depth"])])
        self.num_features = dim

    def init_weights(self, std=0.02):
        """Random init for tiny/test models (truncated-normal-ish, like upstream)."""
        for name, p in self.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                nn.init.ones_(p)
            elif p.dim() >= 2 or name in ("cls_token", "pos_embed"):
                nn.init.trunc_normal_(p, std=std)
            else:
                nn.init.normal_(p, std=std)
        return self

    def forward(self, pixels):
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        return outs
