"""RAM (Recognize Anything) tagging path, as LION uses it (``ram/models/ram.py``
``generate_tag``, Swin-L backbone), plain PyTorch.

State-dict keys equal RAM's (``ram_swin_large_14m.pth["model"]``) restricted to the
tagging path: ``visual_encoder.*`` (Swin), ``image_proj.*``, ``label_embed``,
``wordvec_proj.*``, ``tagging_head.encoder.layer.N.{crossattention,intermediate,output}.*``,
``fc.*``.  Swin buffers (``relative_position_index``, ``attn_mask``) are recomputed and not
stored.

Semantics:
  * Swin: patch conv (k=s=patch) + LayerNorm; stages of blocks with window attention
    (qkv with bias, scale hd^-0.5, relative position bias table [(2w-1)^2, heads]),
    odd blocks shifted by w//2 with the -100 region mask; when a stage's resolution
    <= window the window shrinks to the resolution and the shift is 0 (so Swin-L @384
    runs its last stage unshifted on one 12x12 window); PatchMerging (x0=[0::2,0::2],
    x1=[1::2,0::2], x2=[0::2,1::2], x3=[1::2,1::2], LayerNorm(4C), Linear(4C,2C) no bias)
    after every stage but the last; final LayerNorm; output = [avgpool(tokens); tokens]
    (the pooled "CLS" in front), [B, 1+L, C].
  * image_proj Linear(C, 512); queries = ReLU(wordvec_proj(label_embed)) [num_class, 768].
  * tagging head: per layer cross-attention ONLY (self-attention and embeddings deleted
    upstream) from the label queries to the image embeds (all of them, pooled token
    included, mask all ones), post-norm, then FFN (intermediate/output, exact GELU).
  * fc Linear(768,1) -> sigmoid -> ``> class_threshold`` (strict), delete_tag_index
    zeroed, tags in class order joined with " | ";  LION then replaces " |" with ",".
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .bert import BertAttention, BertIntermediate, BertOutput, bert_init, extended_mask


def window_partition(x, w):
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(win, w, h, wd):
    b = win.shape[0] // ((h // w) * (wd // w))
    x = win.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


class WindowAttention(nn.Module):
    def __init__(self, dim, window, heads):
        super().__init__()
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        c = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (window - 1)
        idx = rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]
        self.register_buffer("relative_position_index", idx, persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        a = q @ k.transpose(-1, -2)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        a = a + bias.view(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            a = a.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            a = a.view(bw, self.heads, n, n)
        a = torch.softmax(a, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim, res, heads, window, shift, mlp_ratio, eps):
        super().__init__()
        self.res = res
        if res <= window:
            window, shift = res, 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))
        mask = None
        if shift > 0:
            img = torch.zeros(1, res, res, 1)
            cnt = 0
            sl = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for hs in sl:
                for ws in sl:
                    img[:, hs, ws, :] = cnt
                    cnt += 1
            mw = window_partition(img, window).squeeze(-1)
            mask = mw[:, None, :] - mw[:, :, None]
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x):
        b, l, c = x.shape
        r = self.res
        h = self.norm1(x).view(b, r, r, c)
        if self.shift > 0:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = self.attn(window_partition(h, self.window), self.attn_mask)
        h = window_reverse(win, self.window, r, r)
        if self.shift > 0:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, l, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, res, dim, eps):
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        b, l, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim, res, depth, heads, window, mlp_ratio, eps, downsample):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, res, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, eps)
            for i in range(depth)])
        self.downsample = PatchMerging(res, dim, eps) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinPatchEmbed(nn.Module):
    def __init__(self, patch, dim, eps):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """RAM's Swin (ape=False, patch_norm=True). forward -> [B, 1+L, C_final]."""

    def __init__(self, image_size, patch_size, embed_dim, depths, heads, window, mlp_ratio=4.0,
                 eps=1e-5):
        super().__init__()
        self.image_size = image_size
        self.patch_embed = SwinPatchEmbed(patch_size, embed_dim, eps)
        res = image_size // patch_size
        self.layers = nn.ModuleList()
        n = len(depths)
        for i in range(n):
            self.layers.append(SwinStage(embed_dim * 2 ** i, res // 2 ** i, depths[i], heads[i],
                                         window, mlp_ratio, eps, i < n - 1))
        self.num_features = embed_dim * 2 ** (n - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=eps)

    def forward(self, x):
        assert x.shape[-1] == self.image_size and x.shape[-2] == self.image_size, x.shape
        x = self.patch_embed(x)
        for st in self.layers:
            x = st(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)


class TaggingLayer(nn.Module):
    def __init__(self, hidden, heads, inter, eps, kv_width):
        super().__init__()
        self.crossattention = BertAttention(hidden, heads, eps, kv_width=kv_width)
        self.intermediate = BertIntermediate(hidden, inter)
        self.output = BertOutput(inter, hidden, eps)

    def forward(self, x, enc, enc_mask_add=None):
        a = self.crossattention(x, enc_mask_add, kv=enc)
        return self.output(self.intermediate(a), a)


class TaggingEncoder(nn.Module):
    def __init__(self, n, *a):
        super().__init__()
        self.layer = nn.ModuleList([TaggingLayer(*a) for _ in range(n)])


class TaggingHead(nn.Module):
    def __init__(self, hidden, heads, layers, inter, eps, kv_width):
        super().__init__()
        self.encoder = TaggingEncoder(layers, hidden, heads, inter, eps, kv_width)

    def forward(self, queries, enc, enc_mask=None):
        m = extended_mask(enc_mask, queries.dtype) if enc_mask is not None else None
        for layer in self.encoder.layer:
            queries = layer(queries, enc, m)
        return queries


def format_tags(tag_names):
    """RAM's ' | ' join followed by LION's ' |' -> ',' replacement."""
    return " | ".join(tag_names).replace(" |", ",")


class RAMTagger(nn.Module):
    """cfg = model.json "tagger" section: image_size, patch_size, embed_dim, depths, heads,
    window, mlp_ratio (4), ln_eps (1e-5), embed_out (512), head {hidden, heads, layers,
    intermediate, ln_eps}, tags (list, defines num_class) or num_class, thresholds,
    delete_tags.

    logits(pixels) -> [B, num_class];  probs(pixels) -> sigmoid;
    tag_lists(pixels) -> list of tag-name lists; tags(pixels) -> list of LION tag strings
    ("dog, man, pet"); ram_strings(pixels) -> RAM's " | "-joined strings."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        hd = cfg["head"]
        eo = cfg.get("embed_out", 512)
        self.tag_list = list(cfg.get("tags") or [])
        self.num_class = len(self.tag_list) if self.tag_list else cfg["num_class"]
        self.visual_encoder = SwinTransformer(cfg["image_size"], cfg["patch_size"], cfg["embed_dim"],
                                              cfg["depths"], cfg["heads"], cfg["window"],
                                              cfg.get("mlp_ratio", 4.0), cfg.get("ln_eps", 1e-5))
        self.image_proj = nn.Linear(self.visual_encoder.num_features, eo)
        self.label_embed = nn.Parameter(torch.zeros(self.num_class, eo))
        self.wordvec_proj = nn.Linear(eo, hd["hidden"]) if hd["hidden"] != eo else nn.Identity()
        self.tagging_head = TaggingHead(hd["hidden"], hd["heads"], hd["layers"],
                                        hd.get("intermediate", 3072), hd.get("ln_eps", 1e-12), eo)
        self.fc = nn.Linear(hd["hidden"], 1)
        th = cfg.get("thresholds")
        if th is None:
            th = [cfg.get("threshold", 0.68)] * self.num_class
        assert len(th) == self.num_class
        self.register_buffer("class_threshold", torch.tensor(th, dtype=torch.float32), persistent=False)
        self.delete_tags = list(cfg.get("delete_tags") or [])

    def init_weights(self, std=0.02):
        bert_init(self, std)
        for n, p in self.named_parameters():
            if "relative_position_bias_table" in n or n == "label_embed":
                nn.init.trunc_normal_(p, std=std if n != "label_embed" else 1.0)
        return self

    def logits(self, pixels):
        q = F.relu(self.wordvec_proj(self.label_embed))
        img = self.image_proj(self.visual_encoder(pixels))
        q = q.unsqueeze(0).expand(pixels.shape[0], -1, -1)
        mask = torch.ones(img.shape[:2], device=img.device)
        h = self.tagging_head(q, img, mask)
        return self.fc(h).squeeze(-1)

    def probs(self, pixels):
        return torch.sigmoid(self.logits(pixels))

    def select(self, probs):
        sel = probs > self.class_threshold.to(probs.device)
        if self.delete_tags:
            sel[:, self.delete_tags] = False
        return sel

    def tag_lists(self, pixels):
        sel = self.select(self.probs(pixels))
        return [[self.tag_list[i] for i in torch.nonzero(r).flatten().tolist()] for r in sel]

    def ram_strings(self, pixels):
        return [" | ".join(t) for t in self.tag_lists(pixels)]

    def tags(self, pixels):
        return [format_tags(t) for t in self.tag_lists(pixels)]
