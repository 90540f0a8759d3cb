"""The tiny LION: configuration (model.json) and the training-time wrapper.

Every module is the project's PyTorch reference (tools/reference/lion_ref); this file only
composes them under the upstream state-dict names (visual_encoder, ln_vision, Qformer.bert,
query_tokens, t5_proj, fusion_adapter, ln_adapter, adapter_proj, t5_model,
soft_prompt_hint) and adds the stage-0 auxiliary heads (not exported).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(os.path.dirname(HERE), "reference")
if REF not in sys.path:
    sys.path.insert(0, REF)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from lion_ref.lion import LionModel  # noqa: E402
from lion_ref.ram import RAMTagger  # noqa: E402

import world  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMNET_MEAN = [0.485, 0.456, 0.406]
IMNET_STD = [0.229, 0.224, 0.225]


def model_config(spm_size, bert_vocab_len, tags=None, thresholds=None):
    tags = list(tags or world.TAGS)
    return {
        "format": "lion-model",
        "format_version": 1,
        "name": "tiny-lion",
        "visual_input": "ALL",
        "vision": {
            "file": "vision.safetensors",
            "image_size": world.IMAGE_SIZE, "patch_size": 8, "dim": 128, "depth": 6, "heads": 4,
            "mlp_hidden": 512, "ln_eps": 1e-6,
            "intermediate_layers": [1, 3, 5],
            "resize": "bicubic", "mean": CLIP_MEAN, "std": CLIP_STD,
        },
        "tagger": {
            "file": "tagger.safetensors",
            "image_size": world.IMAGE_SIZE, "patch_size": 4, "embed_dim": 32, "depths": [2, 2],
            "heads": [2, 4], "window": 4, "mlp_ratio": 2.0, "ln_eps": 1e-5,
            "embed_out": 64,
            "head": {"hidden": 64, "heads": 2, "layers": 1, "intermediate": 128, "ln_eps": 1e-12},
            "resize": "bilinear", "mean": IMNET_MEAN, "std": IMNET_STD,
            "tags": tags,
            "thresholds": list(thresholds) if thresholds is not None else [0.5] * len(tags),
            "delete_tags": [],
        },
        "aggregator": {
            "file": "aggregator.safetensors",
            "vision_width": 128,
            "qformer": {
                "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512, "ln_eps": 1e-12,
                "cross_attention_freq": 2, "num_query_tokens": 8, "vocab_size": bert_vocab_len + 1,
                "max_position": 64, "max_text_len": 64, "vocab": "vocab.txt",
            },
            "fusion": {
                "blocks": 2, "heads": 4, "intermediate": 512, "ln_eps": 1e-12,
                "hidden_layer": 5, "cross_layers": [3, 1],
            },
            "proj_hidden": 256,
        },
        "llm": {
            "file": "llm.safetensors",
            "d_model": 128, "d_ff": 384, "d_kv": 32, "heads": 4,
            "encoder_layers": 3, "decoder_layers": 2, "vocab_size": spm_size + 100,
            "rel_buckets": 32, "rel_max_distance": 128, "ln_eps": 1e-6, "ff_act": "gelu",
            "adapters": {"num": 2, "bottleneck": 32},
            "spiece": "spiece.model",
            "pad_id": 0, "eos_id": 1, "decoder_start_id": 0,
            "tag_prompt": world.TAG_PROMPT,
            "soft_prompt_token": "<extra_id_0>",
            "max_text_len": 128,
            "generation": {
                "num_beams": 5, "max_new_tokens": 256, "min_length": 1, "repetition_penalty": 1.5,
                "length_penalty": 1.0, "top_p": 0.9, "temperature": 1.0, "do_sample": False,
            },
        },
    }


class TinyLion(LionModel):
    """LionModel (lion_ref) plus the stage-0 auxiliary heads (stand-in for EVA
    pretraining; never exported) and a batched training path in which several
    questions share one image (ViT and aggregator run once per image)."""

    def __init__(self, cfg, seed=0):
        super().__init__(cfg)
        self.init_weights(seed)
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed + 1)
            d = cfg["llm"]["d_model"]
            # from-scratch T5: small output projection (HF's std-1 lm_head init gives
            # logits of std ~sqrt(d) at step 0)
            nn.init.normal_(self.t5_model.lm_head.weight, std=d ** -0.5)
            vd = cfg["vision"]["dim"]
            ns, nc = len(world.SHAPES), len(world.COLOURS)
            self.aux = nn.ModuleDict({
                "patch_colour": nn.Linear(vd, nc + 1), "patch_shape": nn.Linear(vd, ns + 1),
                "patch_box": nn.Linear(vd, 4), "obj_shape": nn.Linear(vd, ns),
                "obj_colour": nn.Linear(vd, nc), "count": nn.Linear(vd, world.MAX_OBJECTS + 1),
                "patch_pos": nn.Linear(vd, 2),
            })
            # from-scratch BERT-style parts: BERT's std-0.02 init (meant for fine-tuning a
            # pretrained model) leaves attention logits ~0, i.e. uniform attention, and
            # learning to attend then takes thousands of steps; use fan-in scaling
            for mod in (self.Qformer, self.t5_proj, self.fusion_adapter, self.adapter_proj):
                fan_in_init(mod)
            # auxiliary heads on the T5 encoder output at the aggregator's patch tokens
            # (not exported): "is this patch part of what the question is about" and
            # "box of this patch's object"; they make the encoder tie the text to image
            # positions, which the answer loss alone learns very slowly
            self.aux_llm = nn.ModuleDict({"point": nn.Linear(d, 1), "box": nn.Linear(d, 4)})
            # stage 4 only (created last so that every earlier initialisation is unchanged):
            # for two-object questions, "is this patch the first-named object", "... the
            # second" (the union target above does not say which is which), and "is this
            # patch left of / above the second object's centre" (the answer's comparison)
            self.aux_rel = nn.ModuleDict({"point_a": nn.Linear(d, 1), "point_b": nn.Linear(d, 1),
                                          "rel_xy": nn.Linear(d, 2)})

    def stage_state_dicts(self):
        out = super().stage_state_dicts()
        out["aggregator"] = {k: v for k, v in out["aggregator"].items() if not k.startswith("aux")}
        return out

    # ------------------------------------------------------------------ groups
    def groups(self):
        return {
            "vit": [self.visual_encoder, self.aux],
            "qformer": [self.ln_vision, self.Qformer, self.t5_proj, self.query_tokens],
            "agg": [self.fusion_adapter, self.ln_adapter, self.adapter_proj],
            "t5": [self.t5_model, self.soft_prompt_hint, self.aux_llm],
            "rel": [self.aux_rel],
        }

    def params_of(self, names):
        out = []
        g = self.groups()
        for n in names:
            for m in g[n]:
                if isinstance(m, nn.Parameter):
                    out.append(m)
                else:
                    out.extend(m.parameters())
        return out

    # ------------------------------------------------------------------ stage 0
    def stage0_loss(self, pixels, tgt, outs=None):
        """outs: the ViT block outputs when the caller has them already."""
        if outs is None:
            outs = self.visual_encoder(pixels)
        x = outs[-1]
        cls, pt = x[:, 0], x[:, 1:]
        B, P, D = pt.shape
        A = self.aux
        losses = {}
        lc, ls = A["patch_colour"](pt), A["patch_shape"](pt)
        losses["colour"] = F.cross_entropy(lc.reshape(B * P, -1), tgt["colour"].reshape(-1))
        losses["shape"] = F.cross_entropy(ls.reshape(B * P, -1), tgt["shape"].reshape(-1))
        objm = (tgt["shape"] > 0).float()
        box = torch.sigmoid(A["patch_box"](pt))
        losses["box"] = ((box - tgt["box"]).abs().sum(-1) * objm).sum() / objm.sum().clamp(min=1) * 2.0
        pos = torch.sigmoid(A["patch_pos"](pt))
        losses["pos"] = (pos - tgt["pos"][None]).abs().sum(-1).mean()
        # per-object targets on cover-weighted mean of the object's patch tokens
        w = tgt["obj_cover"]                          # [B, K, P]
        wsum = w.sum(-1)
        valid = (tgt["obj_shape"] >= 0) & (wsum > 0)
        pooled = (w @ pt) / wsum.clamp(min=1e-6)[..., None]
        pv = pooled[valid]
        os_, oc = A["obj_shape"](pv), A["obj_colour"](pv)
        losses["obj_shape"] = F.cross_entropy(os_, tgt["obj_shape"][valid]) * 2.0
        losses["obj_colour"] = F.cross_entropy(oc, tgt["obj_colour"][valid])
        lcount = A["count"](cls)
        losses["count"] = F.cross_entropy(lcount, tgt["count"])
        with torch.no_grad():
            fg = tgt["shape"] > 0
            acc = {
                "obj_shape": (os_.argmax(-1) == tgt["obj_shape"][valid]).float().mean().item(),
                "obj_colour": (oc.argmax(-1) == tgt["obj_colour"][valid]).float().mean().item(),
                "patch_shape_fg": (ls.argmax(-1) == tgt["shape"])[fg].float().mean().item(),
                "count": (lcount.argmax(-1) == tgt["count"]).float().mean().item(),
                "box_l1": ((box - tgt["box"]).abs().mean(-1)[fg]).mean().item(),
            }
        return sum(losses.values()), losses, acc

    # ------------------------------------------------------------------ tasks
    def visual_tokens(self, outs, qf_ids, qf_mask, img_index):
        """Same maths as LionModel.encode_img, with the aggregator run once per image.
        outs: ViT block outputs of the unique images; img_index: sample -> image row."""
        img = self.ln_vision(outs[self.hidden_layer])[img_index]
        B = qf_ids.shape[0]
        q = self.query_tokens.expand(B, -1, -1)
        att = torch.cat([torch.ones(B, q.shape[1], dtype=qf_mask.dtype), qf_mask], dim=1)
        qo = self.Qformer.bert(qf_ids, att, q, img)[:, :q.shape[1]]
        qtok = self.t5_proj(qo)
        h = self.fusion_adapter(outs[self.hidden_layer], [outs[i] for i in self.cross_layers])
        atok = self.adapter_proj(self.ln_adapter(h))[img_index]
        return torch.cat([qtok, atok], dim=1)

    aux_weight = 1.0

    def task_loss(self, outs, batch, hint_id):
        self.t5_model.set_router_idx(batch["router_idx"])
        vis = self.visual_tokens(outs, batch["qf_ids"], batch["qf_mask"], batch["img_index"])
        ids = batch["t5_ids"]
        emb = self.t5_model.shared(ids)
        emb = torch.where((ids == hint_id)[..., None], self.soft_prompt_hint[None, None], emb)
        x = torch.cat([vis, emb], dim=1)
        m = torch.cat([torch.ones(vis.shape[:2], dtype=torch.long), batch["t5_mask"]], dim=1)
        out = self.t5_model(inputs_embeds=x, attention_mask=m, labels=batch["labels"],
                            decoder_attention_mask=batch["dec_mask"])
        lab = batch["labels"]
        with torch.no_grad():
            ok = ((out["logits"].argmax(-1) == lab) | (lab == -100)).all(-1).float()
        loss = out["loss"]
        if "point" in batch and self.aux_weight > 0:
            nq = self.query_tokens.shape[1]
            P = batch["point"].shape[1]
            ph = out["encoder_hidden"][:, nq + 1:nq + 1 + P]           # aggregator patch tokens
            lp = F.binary_cross_entropy_with_logits(self.aux_llm["point"](ph).squeeze(-1), batch["point"])
            fg = batch["patch_fg"][batch["img_index"]]
            bx = torch.sigmoid(self.aux_llm["box"](ph))
            lb = ((bx - batch["patch_box"][batch["img_index"]]).abs().sum(-1) * fg).sum() / fg.sum().clamp(min=1)
            loss = loss + self.aux_weight * (lp + lb)
            if "pair" in batch and batch["pair"].sum() > 0:
                sel = batch["pair"] > 0
                la = F.binary_cross_entropy_with_logits(self.aux_rel["point_a"](ph[sel]).squeeze(-1),
                                                        batch["point_a"][sel])
                lb2 = F.binary_cross_entropy_with_logits(self.aux_rel["point_b"](ph[sel]).squeeze(-1),
                                                         batch["point_b"][sel])
                lr = F.binary_cross_entropy_with_logits(self.aux_rel["rel_xy"](ph[sel]), batch["rel_xy"][sel])
                loss = loss + self.aux_weight * (la + lb2 + lr)
        return loss, ok


def fan_in_init(module):
    """Linear weights N(0, 1/fan_in), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=m.in_features ** -0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def make_tagger(cfg):
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(1234)
        tag = RAMTagger(cfg["tagger"]).init_weights()
        # tagging head, image_proj, wordvec_proj: fan-in init (see TinyLion)
        for mod in (tag.tagging_head, tag.image_proj, tag.wordvec_proj, tag.fc):
            fan_in_init(mod)
        return tag
