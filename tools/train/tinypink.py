"""The tiny Pink: configuration, tokenizer, requests and the training-time wrapper.

Every exported module is the project's PyTorch reference of Pink (tools/reference/pink_ref):
``PinkVision`` (CLIP ViT with Pink's adapters + mm_projector) and ``LlamaForCausalLM`` (LLaMA
with Pink's adapters), under Pink's state-dict names. This file adds what training needs:

  * the tokenizer: a LLaMA-style SentencePiece BPE (byte fallback, identity normalizer, unk 0,
    bos 1, eos 2) trained on the shapes world's Pink prompts, with Pink's 13 added tokens after
    the pieces (pink_ref.tokenizer.PINK_ADDED_TOKENS);
  * the mapping of the world's LION-style task samples (world.task_samples) to Pink's tasks
    (caption, vqa, rec, region_caption) and their prompts (pink_ref.prompt);
  * ``TinyPink``: the two reference modules plus training-only heads (never exported): dense
    per-patch / per-object targets on the CLIP features and pointer heads in the LLaMA; and a
    batched teacher-forced loss that runs the prompt prefix every question of an image shares
    (bos, the system message with the 64 image tokens) once per image and the rest of each
    sequence on top of its KV cache;
  * ``PinkDir``: a model directory (model.json family "pink") back into the reference modules,
    with Pink's greedy generation (evaluate_pink.py, the C test's fixture).
"""
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(os.path.dirname(HERE), "reference")
for p in (REF, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from pink_ref import prompt as pink_prompt  # noqa: E402
from pink_ref.clip import PinkVision  # noqa: E402
from pink_ref.llama import LlamaForCausalLM  # noqa: E402
from pink_ref.tokenizer import PINK_ADDED_TOKENS, LlamaTokenizer  # noqa: E402

import world  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]   # upstream's Normalize (Pink's BaseDataset, demo.py)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# The tiny model. CLIP: the world's native 64 px in 8 px patches (64 image tokens; objects span
# 2..4 patches), pre-LN, quick_gelu, class token, features from hidden_states[-2] as Pink reads
# them (so of the 5 layers 4 run and are exported). LLaMA: SwiGLU, RMSNorm, rotary, untied head.
# Adapters as released Pink trains them (pink/train/train.py defaults + the released configs):
# dim 8, in attention only, linear, on both towers.
CLIP = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=5, num_attention_heads=4,
            image_size=world.IMAGE_SIZE, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            num_channels=3)
LLAMA = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=512,
             hidden_act="silu", tie_word_embeddings=False)
PINK = dict(clip_select_layer=-2, adapter_vision_enable=True, adapter_vision_dim=8, adapter_vision_scale=1.0,
            adapter_attn=True, adapter_mlp=False, adapter_llm_enable=True, adapter_llm_dim=8,
            adapter_llm_scale=1.0, adapter_non_linear=False, crop_size=world.IMAGE_SIZE)
IMAGE_TOKENS = (CLIP["image_size"] // CLIP["patch_size"]) ** 2
POINT_LAYER = 2   # pointer heads read the output of the second LLaMA layer
POINT_DIM = 64
# Llama-2-7b-chat-hf's tokenizer_config.json says legacy false; Pink's copy keeps it
LEGACY = False
BPE_VOCAB = 560   # pieces incl. 3 specials, 256 byte pieces and the 17 coordinates: whole words


def clip_config():
    return dict(CLIP)


def pink_config(vocab_size):
    """Pink's config.json: a LlamaConfig plus Pink's own fields."""
    c = dict(LLAMA)
    c.update(PINK)
    c.update({"vocab_size": vocab_size, "num_patches": IMAGE_TOKENS, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0})
    return c


# ---------------------------------------------------------------- requests

# The LION instructions world.task_samples writes, and the Pink task each maps to. The llm
# stage maps a LION-style request the same way (caption; vqa with the question; rec with the
# expression; region_caption with the box).
_LION = [
    ("caption", re.compile(r"^A short image caption:$")),
    ("vqa", re.compile(r"^Question: (.+?) Short answer:$")),
    ("rec", re.compile(r"^Please provide the bounding box coordinate of the region this sentence describes: (.+?)\.$")),
    ("region_caption", re.compile(r"^Please provide a short description for this region: (\[.+\])\.$")),
]


def pink_request(instruction):
    """LION instruction -> (task, text, box): text for vqa / rec, box (4 floats in [0,1]) for
    region_caption."""
    for task, rx in _LION:
        m = rx.match(instruction)
        if not m:
            continue
        if task == "caption":
            return task, None, None
        if task == "region_caption":
            box = world.parse_box(m.group(1))
            if box is None:
                break
            return task, None, box
        return task, m.group(1), None
    raise ValueError("not one of the world's LION instructions: %r" % instruction)


def prompt_text(instruction):
    task, text, box = pink_request(instruction)
    return pink_prompt.prompt_text(task, text, box, image_tokens=IMAGE_TOKENS)


# ---------------------------------------------------------------- tokenizer

_CUT = re.compile("(" + "|".join(re.escape(t) for t in PINK_ADDED_TOKENS + ["<s>", "</s>", "<unk>"]) + ")")
COORDS = [world.fmt_coord(k * world.GRID / world.IMAGE_SIZE) for k in range(world.IMAGE_SIZE // world.GRID + 1)]


def tokenizer_segments(text):
    """The pieces of text BPE sees when the tokenizer (legacy=False) encodes `text`: cut at the
    added and special tokens (matched whole), the whole text with one leading space (HF puts
    "▁" in front), and cut at newlines (the trainer reads lines; "\\n" becomes the byte piece
    <0x0A>, which never merges)."""
    out = []
    for part in _CUT.split(" " + text):
        if not part or _CUT.fullmatch(part):
            continue
        out.extend(s for s in part.split("\n") if s)
    return out


def corpus_lines(n_scenes=1500, seed=4242):
    """The world's Pink conversations (prompt + answer) as tokenizer segments."""
    import random
    rng = random.Random(seed)
    lines = []
    for i in range(n_scenes):
        sc = world.make_scene(777_000_000 + i)
        for s in world.task_samples(sc, rng):
            lines.extend(tokenizer_segments(prompt_text(s["question"]) + " " + s["answer"]))
    return lines


def build_tokenizer(out_path, vocab_size=BPE_VOCAB):
    """Trains tokenizer.model (SentencePiece BPE, Llama-2's trainer settings where they matter:
    byte fallback, identity normalization, no extra-whitespace removal, unk/bos/eos 0/1/2).
    Differences, for this tiny world: the 17 box coordinates ("0.000" .. "1.000") are
    user-defined pieces, so each is one token (Llama splits digits; a box would take 25 tokens
    instead of 9); the trainer sees the exact segments the tokenizer encodes, without a dummy
    prefix, so that words right after a mark token ("<des>the red circle") get their own pieces
    too; the saved model has add_dummy_prefix on, as Llama's (legacy=False loads it off)."""
    import io
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    lines = corpus_lines()
    tmp = out_path + ".corpus.txt"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            input=tmp, model_writer=buf, model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
            normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
            split_digits=False, user_defined_symbols=COORDS, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            character_coverage=1.0, num_threads=1, minloglevel=2, shuffle_input_sentence=False,
            input_sentence_size=0, max_sentencepiece_length=16)
    finally:
        os.remove(tmp)
    m = pb.ModelProto()
    m.ParseFromString(buf.getvalue())
    m.normalizer_spec.add_dummy_prefix = True
    m.trainer_spec.input[:] = []          # the temporary corpus path: keeps the file reproducible
    m.trainer_spec.model_prefix = ""
    with open(out_path, "wb") as f:
        f.write(m.SerializeToString())
    return out_path


def load_tokenizer(model_file):
    return LlamaTokenizer(model_file, legacy=LEGACY, added_tokens=PINK_ADDED_TOKENS)


class Encoder:
    """Prompt and answer ids of the world's samples, Pink's way.

    The prompt is pink_ref.prompt's (what a served request gets). Training sequences are the
    prompt ids followed by the answer as upstream's llamav2 training conversation tokenizes it
    ("... [/INST] {answer} </s>": the ids of prompt + " " + answer past the prompt's) and eos.
    Upstream's text also has a space before "</s>", which Llama's tokenizer turns into a lone
    "▁" piece the model then learns to emit before eos; it is left out here so answers decode
    without a trailing space."""

    def __init__(self, tok):
        self.tok = tok
        self.eos = tok.eos
        self._cache = {}
        ids0, self.image_offset = self.prompt("A short image caption:")
        ids1, _ = self.prompt("Question: What color is the circle? Short answer:")
        n = 0
        while ids0[n] == ids1[n]:
            n += 1
        # the ids every prompt starts with: bos, the system message with the image tokens
        self.prefix = ids0[:n]
        assert self.image_offset + IMAGE_TOKENS <= n

    def prompt(self, instruction):
        r = self._cache.get(instruction)
        if r is None:
            task, text, box = pink_request(instruction)
            r = pink_prompt.prompt_ids(self.tok, task, text, box, image_tokens=IMAGE_TOKENS)
            if len(self._cache) < 200000:
                self._cache[instruction] = r
        return r

    def sequence(self, instruction, answer):
        """(ids, n_prompt): prompt + answer + eos."""
        ids, _ = self.prompt(instruction)
        full = self.tok.encode(prompt_text(instruction) + " " + answer)
        if full[:len(ids)] != ids:
            raise ValueError("the answer's ids change the prompt's: %r" % answer)
        return full + [self.eos], len(ids)


# ---------------------------------------------------------------- model

class TinyPink(nn.Module):
    """``vision`` (PinkVision: keys vision_model.vision_model.*, mm_projector.*) and ``llm``
    (LlamaForCausalLM: model.*, lm_head.*), plus auxiliary heads (``aux.*``, not exported)."""

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.pcfg = pink_config(vocab_size)
        self.ccfg = clip_config()
        self.vision = PinkVision(self.pcfg, self.ccfg)
        self.llm = LlamaForCausalLM(self.pcfg)
        d = CLIP["hidden_size"]
        # per patch: colour / shape class of the object covering it (0 = background), its box,
        # and whether an object's centre lies in it (one per object: what counting needs)
        # and per object, its shape and colour from its patches pooled by cover (so that the
        # object's patches together name its shape, not only the ones at its edges)
        self.aux = nn.ModuleDict({"colour": nn.Linear(d, len(world.COLOURS) + 1),
                                  "shape": nn.Linear(d, len(world.SHAPES) + 1),
                                  "box": nn.Linear(d, 4), "centre": nn.Linear(d, 1),
                                  "obj_shape": nn.Linear(d, len(world.SHAPES)),
                                  "obj_colour": nn.Linear(d, len(world.COLOURS))})
        # pointer heads in the LLM (after layer POINT_LAYER): from the hidden state of every
        # position that predicts an answer token to the image tokens' hidden states, "which
        # patches show what the question is about" (union of the objects; for relations also the
        # first- and second-named object apart). Without them the decoder learned to look up an
        # object by colour but not by shape or by colour and shape together (colour VQA 0.65,
        # relations at chance, REC 0.17 after 1100 steps).
        e = LLAMA["hidden_size"]
        self.point = nn.ModuleDict({k: nn.Linear(e, POINT_DIM) for k in
                                    ("q", "k", "q_a", "k_a", "q_b", "k_b")})
        self.init_weights()

    def init_weights(self):
        """Fan-in initialisation of every matrix (std fan_in^-0.5), the residual branches' output
        projections scaled by (2 * layers)^-0.5, token embeddings std 1 (RMSNorm follows), the
        adapters' up-projection zero as upstream (an adapter starts as the identity)."""
        nl = LLAMA["num_hidden_layers"]
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "tune_adapter_b" in name:
                    p.zero_()
                elif name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
                    p.fill_(1.0) if name.endswith("weight") else p.zero_()
                elif "embed_tokens" in name:
                    p.normal_(0, 1.0)
                elif "position_embedding" in name or "class_embedding" in name:
                    p.normal_(0, 0.1)
                elif p.dim() >= 2:
                    std = p[0].numel() ** -0.5
                    if name.endswith(("o_proj.weight", "down_proj.weight", "out_proj.weight", "fc2.weight")):
                        std *= (2 * nl) ** -0.5
                    p.normal_(0, std)
                else:
                    p.zero_()

    def exported_state(self):
        """{name: tensor} of the Pink model (vision + llm), without the auxiliary heads."""
        sd = {}
        sd.update(self.vision.state_dict())
        sd.update(self.llm.state_dict())
        return sd

    def prefix_cache(self, prefix_embeds):
        """Runs the shared prompt prefix [B, P, d]; returns every layer's (k, v) and the hidden
        states after layer POINT_LAYER."""
        x, past, mid = prefix_embeds, [], None
        for i, layer in enumerate(self.llm.model.layers):
            x, kv = layer(x)
            past.append(kv)
            if i + 1 == POINT_LAYER:
                mid = x
        return past, mid

    def suffix_logits(self, batch, enc):
        """(CLIP features [I,P,dc], logits [Q,S,V] at every suffix position). The prefix (bos,
        system message, image tokens) runs once per image; each sequence's suffix attends to its
        image's prefix keys / values, which is the full sequence's causal attention."""
        features, vtok = self.vision(batch["pixels"])
        pre = torch.tensor(enc.prefix)[None].expand(vtok.shape[0], -1)
        x = self.llm.embed(pre)
        at = enc.image_offset
        x = torch.cat([x[:, :at], vtok, x[:, at + IMAGE_TOKENS:]], dim=1)
        past, pmid = self.prefix_cache(x)
        idx = batch["img_index"]
        past = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in past]
        h = self.llm.embed(batch["suffix"])
        for i, (layer, kv) in enumerate(zip(self.llm.model.layers, past)):
            h, _ = layer(h, kv)
            if i + 1 == POINT_LAYER:
                smid = h
        self._mid = (pmid[:, at:at + IMAGE_TOKENS], smid)   # for point_loss
        return features, self.llm.lm_head(self.llm.model.norm(h)).float()

    def point_loss(self, batch):
        """BCE of the pointer scores at the answer-predicting positions against the patches of
        the objects the question is about (and for relations, of each named object)."""
        img, suf = self._mid
        img = img[batch["img_index"]]                       # [Q, 64, d]
        at = (batch["labels"] != -100).float()               # [Q, S]
        scale = POINT_DIM ** -0.5
        loss = 0.0
        for q, k, tgt, rows in (("q", "k", batch["point"], None), ("q_a", "k_a", batch["point_a"], batch["pair"]),
                                ("q_b", "k_b", batch["point_b"], batch["pair"])):
            sc = torch.einsum("qsd,qpd->qsp", self.point[q](suf), self.point[k](img)) * scale
            bce = F.binary_cross_entropy_with_logits(sc, tgt[:, None, :].expand_as(sc), reduction="none").mean(-1)
            m = at if rows is None else at * rows[:, None]
            loss = loss + (bce * m).sum() / m.sum().clamp(min=1)
        return loss

    def loss(self, batch, enc):
        """Teacher-forced cross-entropy on the answer tokens (+ eos) and the auxiliary loss.

        batch: pixels [I,3,H,W], img_index [Q] (image of each sequence), suffix [Q,S] (ids
        after the shared prefix, right-padded), labels [Q,S] (-100 outside the answer), tasks;
        dense targets for the auxiliary heads."""
        features, logits = self.suffix_logits(batch, enc)
        labels = batch["labels"]
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        tok = (labels != -100).float()
        per_seq = (ce * tok).sum(1) / tok.sum(1).clamp(min=1)
        lm = per_seq.mean()
        # whole-answer teacher-forced accuracy per sequence (progress lines)
        ok = ((logits.argmax(-1) == labels) | (labels == -100)).all(1)
        aux, aux_acc = self.aux_loss(features, batch)
        return lm, aux + self.point_loss(batch), ok, aux_acc

    def aux_loss(self, features, b):
        c = self.aux["colour"](features)
        s = self.aux["shape"](features)
        loss = F.cross_entropy(c.transpose(1, 2), b["colour"]) + F.cross_entropy(s.transpose(1, 2), b["shape"])
        fg = (b["colour"] > 0).float()
        box = torch.sigmoid(self.aux["box"](features))
        loss = loss + 4.0 * ((box - b["box"]).abs().sum(-1) * fg).sum() / fg.sum().clamp(min=1)
        cen = self.aux["centre"](features).squeeze(-1)
        loss = loss + F.binary_cross_entropy_with_logits(cen, b["centre"], pos_weight=torch.tensor(8.0))
        w = b["obj_cover"]                                   # [I, K, P]
        valid = b["obj_shape"] >= 0
        pooled = (w @ features) / w.sum(-1).clamp(min=1e-6)[..., None]
        os_, oc = self.aux["obj_shape"](pooled[valid]), self.aux["obj_colour"](pooled[valid])
        loss = loss + 2.0 * F.cross_entropy(os_, b["obj_shape"][valid]) + F.cross_entropy(oc, b["obj_colour"][valid])
        with torch.no_grad():
            acc = {"patch_shape": float(((s.argmax(-1) == b["shape"]).float() * fg).sum() / fg.sum().clamp(min=1)),
                   "obj_shape": float((os_.argmax(-1) == b["obj_shape"][valid]).float().mean()),
                   "count": float(((cen > 0).float().sum(1) == b["centre"].sum(1)).float().mean())}
        return loss, acc


# ---------------------------------------------------------------- a model directory (model.json family "pink")

class PinkDir:
    """A Pink model directory as the C stages load it, in the reference modules: model.json's
    pink section back into HF-style config dicts, vision.safetensors (the CLIP layers up to the
    selected one, adapters, mm_projector) into PinkVision, llm.safetensors into
    LlamaForCausalLM, the tokenizer with model.json's settings and added tokens."""

    def __init__(self, path):
        import json
        from lion_ref.safetensors_io import load_file
        self.path = path
        with open(os.path.join(path, "model.json")) as f:
            self.cfg = json.load(f)
        if self.cfg.get("family") != "pink":
            raise ValueError("%s: not a Pink model directory" % path)
        pk = self.cfg["pink"]
        v, lm, t = pk["vision"], pk["llm"], pk["tokenizer"]
        self.ccfg = dict(hidden_size=v["dim"], intermediate_size=v["mlp_hidden"], num_hidden_layers=v["layers"],
                         num_attention_heads=v["heads"], image_size=v["image_size"], patch_size=v["patch_size"],
                         hidden_act=v["act"], layer_norm_eps=v["ln_eps"])
        va, la = v["adapter"], lm["adapter"]
        if va.get("dim") and la.get("dim") and (va["attn"], va["mlp"]) != (la["attn"], la["mlp"]):
            raise ValueError("PinkConfig has one adapter_attn / adapter_mlp for both towers")
        either = va if va.get("dim") else la
        self.pcfg = dict(hidden_size=lm["dim"], intermediate_size=lm["hidden"], num_hidden_layers=lm["layers"],
                         num_attention_heads=lm["heads"], num_key_value_heads=lm["kv_heads"],
                         vocab_size=lm["vocab_size"], rms_norm_eps=lm["rms_eps"], rope_theta=lm["rope_theta"],
                         clip_select_layer=v["select_layer"], adapter_vision_enable=bool(va.get("dim")),
                         adapter_vision_dim=va.get("dim") or 8, adapter_llm_enable=bool(la.get("dim")),
                         adapter_llm_dim=la.get("dim") or 8, adapter_attn=bool(either.get("attn", True)),
                         adapter_mlp=bool(either.get("mlp", False)), adapter_non_linear=bool(la.get("silu", False)))
        self.vision = PinkVision(self.pcfg, self.ccfg).eval()
        self.llm = LlamaForCausalLM(self.pcfg).eval()
        run = self.vision.layers_run()
        vsd = load_file(os.path.join(path, v["file"]))
        r = self.vision.load_state_dict(vsd, strict=False)
        layer = "vision_model.vision_model.encoder.layers."
        bad = [k for k in r.missing_keys if not (k.startswith("vision_model.vision_model.post_layernorm.") or (
            k.startswith(layer) and int(k[len(layer):].split(".")[0]) >= run))]
        if bad or r.unexpected_keys:
            raise ValueError("%s: vision weights do not match: missing %s, unexpected %s" % (
                path, bad[:4], list(r.unexpected_keys)[:4]))
        self.llm.load_state_dict(load_file(os.path.join(path, lm["file"])), strict=True)
        self.tok = LlamaTokenizer(os.path.join(path, t["file"]), legacy=t["legacy"],
                                  added_tokens=[(a["content"], a["id"]) for a in t["added_tokens"]],
                                  add_bos=t["add_bos"], add_eos=t["add_eos"],
                                  clean_up_tokenization_spaces=t["clean_up_spaces"])
        self.prompt_cfg = pk["prompt"]
        self.gen = dict(lm["generation"])
        self.max_positions = lm["max_positions"]
        self.mean, self.std, self.resize = v["mean"], v["std"], v["resize"]

    def pixels(self, image):
        from lion_ref.lion import preprocess
        return preprocess(image, self.ccfg["image_size"], self.resize, self.mean, self.std)

    def prompt_ids(self, task, text=None, box=None):
        p = self.prompt_cfg
        return pink_prompt.prompt_ids(self.tok, task, text, box, image_tokens=p["image_tokens"], system=p["system"],
                                      image_token=p["image_token"], tasks=p["tasks"], decimals=p["box_decimals"])

    @torch.no_grad()
    def image_tokens(self, pixels):
        """pixels [B,3,H,W] -> (features, mm_projector tokens)."""
        return self.vision(pixels)

    @torch.no_grad()
    def generate(self, vtokens, task, text=None, box=None, max_new_tokens=None):
        """Pink's generation as upstream's demo runs it (model.json's generation: greedy, no
        penalties): the prompt with the image tokens' embeddings replaced by vtokens [P, d],
        then the argmax token at every step with the KV cache, until eos or max_new_tokens (or
        the position limit). Returns (answer ids without eos, text, prompt ids)."""
        g = self.gen
        if g.get("num_beams", 1) != 1 or g.get("do_sample") or g.get("repetition_penalty", 1.0) != 1.0:
            raise NotImplementedError("only greedy generation is implemented here")
        ids, at = self.prompt_ids(task, text, box)
        x = self.llm.embed(torch.tensor([ids]))
        x[0, at:at + vtokens.shape[0]] = vtokens
        limit = min(max_new_tokens or g["max_new_tokens"], self.max_positions - len(ids))
        out = []
        logits, past = self.llm(inputs_embeds=x)
        for _ in range(limit):
            nxt = int(torch.argmax(logits[0, -1]))
            if nxt == self.tok.eos:
                break
            out.append(nxt)
            logits, past = self.llm(input_ids=torch.tensor([[nxt]]), past=past)
        return out, self.tok.decode(out), ids
