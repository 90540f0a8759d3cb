"""CLIP ViT vision tower (HF ``CLIPVisionModel`` semantics) with Pink's adapters, and Pink's
image encoder (tower + ``mm_projector``), plain PyTorch.

Parameter names equal Pink's state-dict keys: the tower is ``vision_model`` inside Pink and
HF's ``CLIPVisionModel`` has its own ``vision_model`` (a ``CLIPVisionTransformer``), hence
``vision_model.vision_model.embeddings.class_embedding``, ...; the projector is
``mm_projector.weight`` / ``.bias`` at the top.

Semantics (HF CLIPVisionTransformer, openai/clip-vit-large-patch14):
  * embeddings: Conv2d patch embedding without bias (kernel = stride = patch), the learned
    ``class_embedding`` in front, ``position_embedding`` (an Embedding over 1 + patches) added;
  * ``pre_layrnorm`` (HF's spelling) LayerNorm on the embeddings, before the first layer;
  * pre-norm layers: x += out_proj(attn(LN1 x)), x += fc2(act(fc1(LN2 x))); q/k/v/out
    projections with biases, q scaled by head_dim^-0.5; act "quick_gelu" x*sigmoid(1.702x);
    LayerNorm eps layer_norm_eps (1e-5);
  * hidden_states = (embeddings after pre_layrnorm, output of layer 0, ..., of layer N-1);
    ``post_layernorm`` acts only on the pooled class token, which Pink does not use.

Pink (upstream pink/model/pink.py, adapter.py ``CLIPEncoderAdapterLayer``):
  * every layer gets an AdapterLayer right after LN1 (``adapter_attn``, when adapter_attn) and
    after LN2 (``adapter_mlp``, when adapter_mlp), in series: x += attn(adapter(LN1 x));
    upstream's ``visual_adapter`` forces non_linear=False, so the CLIP adapters never have SiLU
    whatever ``adapter_non_linear`` says;
  * the layers after the selected one (``layers[clip_select_layer:]`` except its first) have
    their adapters deleted; they are never run for the features anyway;
  * features = hidden_states[clip_select_layer] (-2: the output of the next-to-last layer)
    without the class token ([:, 1:]), then ``mm_projector`` Linear(hidden, LLM hidden_size).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapter import AdapterLayer
from .config import pink_options, vision_config


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.image_size, self.patch_size = c["image_size"], c["patch_size"]
        self.num_positions = (self.image_size // self.patch_size) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(c["num_channels"], d, self.patch_size, stride=self.patch_size, bias=False)
        self.position_embedding = nn.Embedding(self.num_positions, d)

    def forward(self, pixels):
        assert pixels.shape[-2:] == (self.image_size, self.image_size), pixels.shape
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight[None]


class CLIPAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = d // self.heads
        self.scale = self.head_dim ** -0.5
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x) * self.scale), split(self.k_proj(x)), split(self.v_proj(x))
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = c["hidden_act"]
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c, adapter=None):
        """adapter: None, or dict(dim, attn, mlp) for Pink's adapters in this layer."""
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = CLIPAttention(c)
        self.layer_norm1 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = CLIPMLP(c)
        self.layer_norm2 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        if adapter and adapter["attn"]:
            self.adapter_attn = AdapterLayer(d, adapter["dim"], adapter.get("scale", 1.0), non_linear=False)
        if adapter and adapter["mlp"]:
            self.adapter_mlp = AdapterLayer(d, adapter["dim"], adapter.get("scale", 1.0), non_linear=False)

    def forward(self, x):
        h = self.layer_norm1(x)
        if hasattr(self, "adapter_attn"):
            h = self.adapter_attn(h)
        x = x + self.self_attn(h)
        h = self.layer_norm2(x)
        if hasattr(self, "adapter_mlp"):
            h = self.adapter_mlp(h)
        return x + self.mlp(h)


class CLIPEncoder(nn.Module):
    def __init__(self, c, adapter=None):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(c, adapter) for _ in range(c["num_hidden_layers"])])


class CLIPVisionTransformer(nn.Module):
    def __init__(self, c, adapter=None):
        super().__init__()
        d = c["hidden_size"]
        self.embeddings = CLIPVisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.encoder = CLIPEncoder(c, adapter)
        self.post_layernorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])

    def forward(self, pixels, max_layers=None):
        """Returns HF's hidden_states tuple: the embeddings after pre_layrnorm, then every layer's
        output (only the first max_layers layers run when given)."""
        x = self.pre_layrnorm(self.embeddings(pixels))
        states = [x]
        for layer in self.encoder.layers[:max_layers]:
            x = layer(x)
            states.append(x)
        return tuple(states)


class CLIPVisionModel(nn.Module):
    """HF CLIPVisionModel's parameter layout (``vision_model.*``). cfg: a CLIPConfig or
    CLIPVisionConfig dict. forward(pixels) -> hidden_states tuple (see CLIPVisionTransformer)."""

    def __init__(self, cfg, adapter=None):
        super().__init__()
        self.cfg = vision_config(cfg)
        self.vision_model = CLIPVisionTransformer(self.cfg, adapter)

    def forward(self, pixels, max_layers=None):
        return self.vision_model(pixels, max_layers)


class PinkVision(nn.Module):
    """Pink's image encoder: ``vision_model`` (CLIPVisionModel with adapters) + ``mm_projector``.

    pink_cfg: Pink's config.json dict (a LlamaConfig plus clip_select_layer, adapter_*; its
    hidden_size is the projector's output); clip_cfg: the CLIP config.json dict.
    forward(pixels [B,3,H,W]) -> (features [B, P, clip hidden] = hidden_states[clip_select_layer]
    without the class token, tokens [B, P, hidden_size] = mm_projector(features)).
    """

    def __init__(self, pink_cfg, clip_cfg):
        super().__init__()
        self.opts = pink_options(pink_cfg)
        c = vision_config(clip_cfg)
        adapter = None
        if self.opts["adapter_vision_enable"]:
            adapter = dict(dim=self.opts["adapter_vision_dim"], scale=self.opts["adapter_vision_scale"],
                           attn=self.opts["adapter_attn"], mlp=self.opts["adapter_mlp"])
        self.vision_model = CLIPVisionModel(c, adapter)
        # as upstream: the layers after the selected one lose their adapters
        sel = self.opts["clip_select_layer"]
        for index, layer in enumerate(self.vision_model.vision_model.encoder.layers[sel:]):
            if index > 0:
                for name in ("adapter_attn", "adapter_mlp"):
                    if hasattr(layer, name):
                        delattr(layer, name)
        self.mm_projector = nn.Linear(c["hidden_size"], pink_cfg.get("hidden_size", 4096))

    def layers_run(self):
        """How many encoder layers hidden_states[clip_select_layer] needs."""
        n = len(self.vision_model.vision_model.encoder.layers)
        sel = self.opts["clip_select_layer"]
        return sel if sel >= 0 else n + 1 + sel

    def forward(self, pixels):
        states = self.vision_model(pixels, max_layers=self.layers_run())
        features = states[-1][:, 1:]  # == hidden_states[clip_select_layer] of a full run
        return features, self.mm_projector(features)

    def init_weights(self):
        """Random weights for tests: every parameter non-trivial (LayerNorm weights near 1,
        biases, class and position embeddings, and the adapters' up-projection, which
        upstream initialises to zero, all random) so that a swapped or transposed tensor shows."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "layer_norm" in name or "layrnorm" in name:
                    p.copy_((1.0 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else 0.1 * torch.randn_like(p))
                elif p.dim() >= 2 and "position_embedding" not in name:
                    fan_in = p[0].numel()
                    p.normal_(0, fan_in ** -0.5)
                else:  # biases, class and position embeddings
                    p.normal_(0, 0.1)
        return self
