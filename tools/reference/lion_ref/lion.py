"""The whole LION model (``models/lion_t5.py`` LIONT5InstructAdapter, inference path).

    model = LionModel(cfg)                    # cfg = model.json dict (docs/model-format.md)
    model = load_model_dir("models/tiny-lion")  # model.json + 4 safetensors + tokenizers
    save_model_dir(model, "out_dir", "f32")    # writes model.json, 4 stage files, tokenizers
    text = model.generate(pil_image, "What is in the image?", category="image_level")

Top-level module names equal the upstream ones so ``state_dict()`` keys are upstream keys:
``visual_encoder`` (EVA), ``query_tokens``, ``ln_vision``, ``Qformer.bert``, ``t5_proj``,
``fusion_adapter``, ``ln_adapter``, ``adapter_proj``, ``t5_model``, ``soft_prompt_hint``;
RAM lives in ``ram`` (a separate namespace: its keys are RAM's own, without ``ram.``,
in tagger.safetensors).
"""
import copy
import json
import os
import shutil

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .aggregator import VisionAggregator
from .eva_vit import EvaViT
from .qformer import QFormer
from .ram import RAMTagger, format_tags
from .safetensors_io import load_file, save_file
from .t5 import T5ForConditionalGeneration

STAGES = ("vision", "tagger", "aggregator", "llm")
DEFAULT_TAG_PROMPT = ("According to <extra_id_0>, you are allowed to use or partially use "
                      "the following tags: [{}]. ")
DEFAULT_GENERATION = {"num_beams": 5, "max_new_tokens": 256, "min_length": 1,
                      "repetition_penalty": 1.5, "length_penalty": 1.0, "top_p": 0.9,
                      "temperature": 1.0, "do_sample": False, "top_k": 50}


# ------------------------------------------------------------------ preprocessing

def preprocess(image, size, resample, mean, std):
    """PIL image -> [3,size,size] float tensor: convert RGB, PIL resize to (size,size)
    (what torchvision Resize((s,s)) does on PIL images), /255, normalize."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        raise TypeError("expected a PIL image")
    rs = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[resample]
    im = image.convert("RGB").resize((size, size), rs)
    a = torch.from_numpy(np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0)
    a = a.permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (a - m) / s


class _QformerBox(nn.Module):
    """Holds ``bert`` so that keys read ``Qformer.bert.*`` as upstream."""

    def __init__(self, cfg):
        super().__init__()
        self.bert = QFormer(cfg)


def _llm_cfg(cfg):
    c = dict(cfg["llm"])
    return c


class LionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        self.visual_input = cfg.get("visual_input", "ALL")
        assert self.visual_input in ("ALL", "QFORMER", "AGGREGATOR")
        v, a, l = cfg["vision"], cfg["aggregator"], cfg["llm"]
        d_model = l["d_model"]
        self.visual_encoder = EvaViT(v)
        W = v["dim"]
        if self.visual_input != "AGGREGATOR":
            q = dict(a["qformer"])
            q["encoder_width"] = a.get("vision_width", W)
            self.query_tokens = nn.Parameter(torch.zeros(1, q["num_query_tokens"], q["hidden"]))
            self.ln_vision = nn.LayerNorm(W)
            self.Qformer = _QformerBox(q)
            self.t5_proj = nn.Linear(q["hidden"], d_model)
        if self.visual_input != "QFORMER":
            agg = VisionAggregator({"vision_width": W, "d_model": d_model,
                                    "proj_hidden": a.get("proj_hidden", 4 * W),
                                    "fusion": a["fusion"]})
            self.fusion_adapter, self.ln_adapter, self.adapter_proj = \
                agg.fusion_adapter, agg.ln_adapter, agg.adapter_proj
        self.hidden_layer = a.get("fusion", {}).get("hidden_layer", v["depth"] - 1)
        self.cross_layers = list(a.get("fusion", {}).get("cross_layers", []))
        self.t5_model = T5ForConditionalGeneration(_llm_cfg(cfg))
        self.enable_tags = l.get("soft_prompt_token", "<extra_id_0>") is not None
        if self.enable_tags:
            self.soft_prompt_hint = nn.Parameter(torch.zeros(d_model))
        self.ram = RAMTagger(cfg["tagger"]) if cfg.get("tagger") else None
        self.t5_tok = None
        self.bert_tok = None

    # -------------------------------------------------------------- init / io
    def init_weights(self, seed=0):
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.visual_encoder.init_weights()
            if hasattr(self, "Qformer"):
                self.Qformer.bert.init_weights()
                nn.init.normal_(self.query_tokens, std=0.02)
                nn.init.normal_(self.t5_proj.weight, std=0.02)
                nn.init.zeros_(self.t5_proj.bias)
            if hasattr(self, "fusion_adapter"):
                from .bert import bert_init
                bert_init(self.fusion_adapter)
                bert_init(self.adapter_proj)
            self.t5_model.init_weights()
            if self.enable_tags:
                nn.init.normal_(self.soft_prompt_hint, std=1.0)
            if self.ram is not None:
                self.ram.init_weights()
        return self

    def stage_state_dicts(self):
        """{stage: {upstream key: tensor}} split as docs/model-format.md says."""
        sd = self.state_dict()
        out = {s: {} for s in STAGES}
        for k, t in sd.items():
            if k.startswith("ram."):
                out["tagger"][k[4:]] = t
            elif k.startswith("visual_encoder."):
                out["vision"][k] = t
            elif k.startswith("t5_model.") or k == "soft_prompt_hint":
                out["llm"][k] = t
            else:
                out["aggregator"][k] = t
        return out

    def load_stage_state_dicts(self, stages, strict=True):
        full = {}
        for s, sd in stages.items():
            for k, t in sd.items():
                full[("ram." + k) if s == "tagger" else k] = t
        return self.load_state_dict(full, strict=strict)

    def set_tokenizers(self, t5_tok, bert_tok):
        self.t5_tok, self.bert_tok = t5_tok, bert_tok

    # -------------------------------------------------------------- pipeline
    def preprocess(self, image):
        v = self.cfg["vision"]
        return preprocess(image, v["image_size"], v.get("resize", "bicubic"),
                          v.get("mean", [0.48145466, 0.4578275, 0.40821073]),
                          v.get("std", [0.26862954, 0.26130258, 0.27577711]))

    def preprocess_ram(self, image):
        t = self.cfg["tagger"]
        return preprocess(image, t["image_size"], t.get("resize", "bilinear"),
                          t.get("mean", [0.485, 0.456, 0.406]), t.get("std", [0.229, 0.224, 0.225]))

    def vit_outputs(self, pixels):
        return self.visual_encoder(pixels)

    def encode_img(self, pixels, questions, vit_outs=None):
        """pixels [B,3,H,W]; questions: list of B strings (Q-Former instruction text).
        Returns visual tokens [B, Nv, d_model] = [Q-Former (t5_proj) ; aggregator]."""
        outs = self.vit_outputs(pixels) if vit_outs is None else vit_outs
        parts = []
        if self.visual_input != "AGGREGATOR":
            img = self.ln_vision(outs[self.hidden_layer])
            ids, mask = self.bert_tok(list(questions), max_length=self.cfg["aggregator"]["qformer"]
                                      .get("max_text_len", 128))
            qt = self.query_tokens.expand(img.shape[0], -1, -1)
            qmask = torch.cat([torch.ones(qt.shape[:2], dtype=torch.long), mask], dim=1)
            h = self.Qformer.bert(ids, qmask, qt, img)
            parts.append(self.t5_proj(h[:, :qt.shape[1]]))
        if self.visual_input != "QFORMER":
            hdn = self.fusion_adapter(outs[self.hidden_layer], [outs[i] for i in self.cross_layers])
            parts.append(self.adapter_proj(self.ln_adapter(hdn)))
        return torch.cat(parts, dim=1)

    def generate_tags(self, images):
        """PIL images -> LION tag strings ("dog, man, pet")."""
        px = torch.stack([self.preprocess_ram(im) for im in images])
        return self.ram.tags(px)

    def build_prompt(self, question, tags):
        if not self.enable_tags:
            return question
        tp = self.cfg["llm"].get("tag_prompt", DEFAULT_TAG_PROMPT)
        return tp.format(tags) + question

    def text_embeds(self, prompts, max_length=None):
        ids, mask = self.t5_tok(prompts, max_length=max_length)
        emb = self.t5_model.shared(ids)
        if self.enable_tags:
            sp_id = self.t5_tok.convert_tokens_to_ids(self.cfg["llm"].get("soft_prompt_token",
                                                                           "<extra_id_0>"))
            pos = ids == sp_id
            emb = torch.where(pos[..., None], self.soft_prompt_hint.to(emb.dtype)[None, None], emb)
        return ids, emb, mask

    def prepare_inputs(self, pixels, questions, tags=None, images=None):
        """-> (inputs_embeds [B, Nv+T, d], attention_mask [B, Nv+T], prompt ids [B,T])."""
        vis = self.encode_img(pixels, questions)
        if self.enable_tags and tags is None:
            assert images is not None and self.ram is not None, "need tags or images for RAM"
            tags = self.generate_tags(images)
        prompts = [self.build_prompt(q, t) for q, t in zip(questions, tags or [None] * len(questions))]
        ids, emb, mask = self.text_embeds(prompts)
        x = torch.cat([vis, emb], dim=1)
        m = torch.cat([torch.ones(vis.shape[:2], dtype=torch.long), mask], dim=1)
        return x, m, ids

    @staticmethod
    def router_idx_for(category):
        return 0 if category == "region_level" else 1

    @torch.no_grad()
    def generate(self, images, questions, tags=None, category="image_level", **gen):
        """images: PIL image or list; questions: str or list. Returns list of strings
        (or a str for single inputs). gen overrides model.json generation defaults:
        num_beams, max_new_tokens, min_length, repetition_penalty, length_penalty,
        do_sample, top_p, top_k, temperature, seed."""
        single = not isinstance(images, (list, tuple))
        if single:
            images, questions = [images], [questions]
            if tags is not None and isinstance(tags, str):
                tags = [tags]
        pixels = torch.stack([self.preprocess(im) for im in images])
        x, m, _ = self.prepare_inputs(pixels, list(questions), tags, images)
        self.t5_model.set_router_idx(self.router_idx_for(category))
        seqs = generate_ids(self.t5_model, x, m, **self.gen_config(**gen))
        out = self.t5_tok.batch_decode(seqs, skip_special_tokens=True)
        return out[0] if single else out

    def gen_config(self, **over):
        g = dict(DEFAULT_GENERATION)
        g.update(self.cfg["llm"].get("generation", {}))
        g.update({k: v for k, v in over.items() if v is not None})
        return g

    def forward_loss(self, pixels, questions, answers, tags=None, category="image_level"):
        """Training loss as upstream forward(): prompt left-truncated to max_text_len,
        answers right-truncated, pad -> -100."""
        vis = self.encode_img(pixels, questions)
        prompts = [self.build_prompt(q, t) for q, t in zip(questions, tags or [None] * len(questions))]
        L = self.cfg["llm"].get("max_text_len", 128)
        ids, emb, mask = self.text_embeds(prompts, max_length=L)
        out_ids, out_mask = self.t5_tok(answers, max_length=L, truncation_side="right")
        labels = out_ids.masked_fill(out_ids == self.t5_tok.pad_id, -100)
        x = torch.cat([vis, emb], dim=1)
        m = torch.cat([torch.ones(vis.shape[:2], dtype=torch.long), mask], dim=1)
        self.t5_model.set_router_idx(self.router_idx_for(category))
        return self.t5_model(inputs_embeds=x, attention_mask=m, labels=labels,
                             decoder_attention_mask=out_mask)["loss"]


# ------------------------------------------------------------------ generation (HF 4.42)

def repetition_penalty(scores, seqs, penalty):
    """HF RepetitionPenaltyLogitsProcessor: for each token present in seqs (start token
    included), score<0 -> score*penalty else score/penalty."""
    if penalty == 1.0:
        return scores
    s = torch.gather(scores, 1, seqs)
    s = torch.where(s < 0, s * penalty, s / penalty)
    return scores.scatter(1, seqs, s)


def process_logits(scores, seqs, g, eos_id):
    scores = repetition_penalty(scores, seqs, g.get("repetition_penalty", 1.0))
    if seqs.shape[1] < g.get("min_length", 0):
        scores = scores.clone()
        scores[:, eos_id] = -float("inf")
    return scores


def warp_logits(scores, g):
    t = g.get("temperature", 1.0)
    if t is not None and t != 1.0:
        scores = scores / t
    k = g.get("top_k", 50)
    if k:
        k = min(k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    p = g.get("top_p", 1.0)
    if p is not None and p < 1.0:
        srt, idx = torch.sort(scores, descending=False)
        cum = srt.softmax(-1).cumsum(-1)
        rm = cum <= (1 - p)
        rm[..., -1:] = False
        rm = rm.scatter(1, idx, rm)
        scores = scores.masked_fill(rm, -float("inf"))
    return scores


def _reorder(past, idx):
    return [((sk[idx], sv[idx]), (ck[idx], cv[idx])) for (sk, sv), (ck, cv) in past]


@torch.no_grad()
def generate_ids(t5, inputs_embeds, attention_mask, **g):
    """HF-4.42-equivalent generate for an encoder-decoder: greedy (num_beams 1),
    multinomial sampling (do_sample, num_beams 1: temperature -> top_k -> top_p), or beam
    search (num_beams > 1, BeamSearchScorer, early_stopping=False).  Returns a list of
    token-id lists that start with decoder_start_id (as HF's output does)."""
    g = dict(DEFAULT_GENERATION, **g)
    nb = int(g.get("num_beams", 1))
    if g.get("do_sample") and nb > 1:
        raise NotImplementedError("beam sampling (do_sample with num_beams > 1) is not implemented")
    enc = t5.encode(inputs_embeds, attention_mask)
    if nb == 1:
        return _greedy_or_sample(t5, enc, attention_mask, g)
    return [_beam_search(t5, enc[i:i + 1], attention_mask[i:i + 1], g, nb)
            for i in range(enc.shape[0])]


def _greedy_or_sample(t5, enc, mask, g):
    B = enc.shape[0]
    start, eos, pad = t5.decoder_start_id, t5.eos_id, t5.pad_id
    max_len = 1 + g["max_new_tokens"]
    seqs = torch.full((B, 1), start, dtype=torch.long)
    unfinished = torch.ones(B, dtype=torch.long)
    gen = None
    if g.get("do_sample"):
        gen = torch.Generator().manual_seed(int(g.get("seed", 0) or 0))
    past = None
    while seqs.shape[1] < max_len:
        logits, past = t5.decode(seqs[:, -1:], enc, mask, past)
        scores = process_logits(logits[:, -1].float(), seqs, g, eos)
        if gen is not None:
            probs = torch.softmax(warp_logits(scores, g), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        else:
            nxt = scores.argmax(-1)
        nxt = nxt * unfinished + pad * (1 - unfinished)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        unfinished = unfinished & (nxt != eos).long()
        if unfinished.max() == 0:
            break
    return [s.tolist() for s in seqs]


class _Hyps:
    def __init__(self, nb, lp):
        self.nb, self.lp, self.beams, self.worst = nb, lp, [], 1e9

    def add(self, hyp, sum_logprobs, gen_len):
        score = sum_logprobs / (gen_len ** self.lp)
        if len(self.beams) < self.nb or score > self.worst:
            self.beams.append((score, hyp))
            if len(self.beams) > self.nb:
                srt = sorted([(s, i) for i, (s, _) in enumerate(self.beams)])
                del self.beams[srt[0][1]]
                self.worst = srt[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum, cur_len):
        if len(self.beams) < self.nb:
            return False
        return self.worst >= best_sum / (cur_len ** self.lp)


def _beam_search(t5, enc, mask, g, nb):
    start, eos, pad = t5.decoder_start_id, t5.eos_id, t5.pad_id
    max_len = 1 + g["max_new_tokens"]
    lp = g.get("length_penalty", 1.0)
    enc = enc.expand(nb, -1, -1)
    mask = mask.expand(nb, -1)
    seqs = torch.full((nb, 1), start, dtype=torch.long)
    beam_scores = torch.full((nb,), -1e9)
    beam_scores[0] = 0.0
    hyps = _Hyps(nb, lp)
    done = False
    past = None
    while True:
        logits, past = t5.decode(seqs[:, -1:], enc, mask, past)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)
        logp = process_logits(logp, seqs, g, eos)
        V = logp.shape[-1]
        scores = (logp + beam_scores[:, None]).view(-1)
        top_s, top_t = torch.topk(scores, 2 * nb)
        cur_len = seqs.shape[1] + 1
        nxt_scores, nxt_tokens, nxt_beams = [], [], []
        for rank, (s, t) in enumerate(zip(top_s.tolist(), top_t.tolist())):
            beam, tok = t // V, t % V
            if tok == eos:
                if rank >= nb:
                    continue
                hyps.add(seqs[beam].tolist(), s, cur_len - 1)
            else:
                nxt_scores.append(s)
                nxt_tokens.append(tok)
                nxt_beams.append(beam)
            if len(nxt_scores) == nb:
                break
        done = hyps.is_done(max(top_s.tolist()), cur_len - 1)
        bi = torch.tensor(nxt_beams)
        seqs = torch.cat([seqs[bi], torch.tensor(nxt_tokens)[:, None]], dim=1)
        beam_scores = torch.tensor(nxt_scores)
        past = _reorder(past, bi)
        if done or seqs.shape[1] >= max_len:
            break
    if not done:
        for b in range(nb):
            hyps.add(seqs[b].tolist(), beam_scores[b].item(), seqs.shape[1] - 1)
    best = sorted(hyps.beams, key=lambda x: x[0])[-1][1]
    if len(best) < max_len:
        best = best + [eos]
    return best


# ------------------------------------------------------------------ model directory

def _tokenizers_for(cfg, path):
    from .tokenizers import BertTokenizer, T5Tokenizer
    l, a = cfg["llm"], cfg["aggregator"]
    t5 = T5Tokenizer(os.path.join(path, l.get("spiece", "spiece.model")))
    bert = None
    if "qformer" in a and cfg.get("visual_input", "ALL") != "AGGREGATOR":
        bert = BertTokenizer(os.path.join(path, a["qformer"].get("vocab", "vocab.txt")),
                             max_length=a["qformer"].get("max_text_len", 128))
    return t5, bert


def load_model_dir(path, dtype=torch.float32, strict=True, with_tokenizers=True):
    with open(os.path.join(path, "model.json"), "r", encoding="utf-8") as f:
        cfg = json.load(f)
    model = LionModel(cfg)
    stages = {}
    for s in STAGES:
        sec = cfg.get(s)
        if not sec:
            continue
        stages[s] = load_file(os.path.join(path, sec.get("file", s + ".safetensors")), dtype)
    res = model.load_stage_state_dicts(stages, strict=strict)
    if with_tokenizers:
        model.set_tokenizers(*_tokenizers_for(cfg, path))
    model.model_dir = path
    return model.eval()


def save_model_dir(model, path, dtype="f32", spiece=None, vocab=None):
    """Write model.json + the 4 stage files (+ copy tokenizer files when given or when the
    model was loaded from a directory)."""
    os.makedirs(path, exist_ok=True)
    cfg = copy.deepcopy(model.cfg)
    sds = model.stage_state_dicts()
    for s in STAGES:
        if s not in cfg or not cfg[s]:
            continue
        fn = cfg[s].setdefault("file", s + ".safetensors")
        save_file(sds[s], os.path.join(path, fn), {"format": "lion-model", "stage": s}, dtype)
    src = getattr(model, "model_dir", None)
    for given, name in ((spiece, cfg["llm"].get("spiece", "spiece.model")),
                        (vocab, cfg["aggregator"].get("qformer", {}).get("vocab", "vocab.txt"))):
        srcf = given or (os.path.join(src, name) if src else None)
        dst = os.path.join(path, name)
        if srcf and os.path.exists(srcf) and os.path.abspath(srcf) != os.path.abspath(dst):
            shutil.copyfile(srcf, dst)
    with open(os.path.join(path, "model.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    return path
