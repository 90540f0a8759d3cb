#!/usr/bin/env python3
"""lion-convert: turn LION's released upstream files into our model directory
(docs/model-format.md).

    tools/convert/lion-convert --eva eva_vit_g.pth --bert BERT_DIR --t5 T5_DIR \\
        --ram ram_swin_large_14m.pth --ram-tags ram_tag_list.txt \\
        --ram-thresholds ram_tag_list_threshold.txt --lion LION-FlanT5-XL.pth \\
        --out models/lion-xl --dtype f16

Every dimension the files determine is read from them: tensor shapes, the T5 and BERT
config.json, RAM's stored Swin buffers (attention masks -> input size).  Only what no file
stores has a flag with upstream's value as default: the EVA ViT head count (no EVA tensor
has a per-head axis; upstream's ViT-g has head dim 88, so width/88 = 16 is the default),
the aggregator's head count (upstream: 16, the ViT's), the RAM tagging head's head count
(q2l_config.json, not in the checkpoint: 4), and which ViT layers feed the aggregator
(upstream code: outputs 38, 28, 18 of the 39-block ViT-g; see fusion_layers()).  A flag that
is given is checked against the files.

Memory: nothing is loaded whole.  The files are first read for their tensor names, dtypes
and shapes only (ckpt_reader: lazy torch zip unpickling, safetensors headers); every check
runs on those; then each output file's header is written with all offsets, and the
sources are converted one at a time, one tensor at a time (read, cast, written at its
offset, freed), so the peak resident set stays near the largest single tensor.

Every failure is one line, ``lion-convert: error: <file>: ...`` naming the tensor and the
expected and found shapes where there is one, and exit status 2.  Keys the tagging path /
inference does not use (RAM's tag_encoder/text_decoder, Qformer.cls, buffers) are dropped.
Upstream loading order is kept: the LION checkpoint is loaded last (strict=False), so any
key it holds overrides the base checkpoints.
"""
import argparse
import glob
import json
import math
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from ckpt_reader import CkptError, fmt_shape, open_source  # noqa: E402
from lion_ref.safetensors_io import StreamWriter  # noqa: E402

EVA_HEAD_DIM = 88          # EVA ViT-g: width 1408, 16 heads
RAM_HEAD_HEADS = 4         # RAM q2l_config.json num_attention_heads


class ConvertError(Exception):
    pass


# ------------------------------------------------------------------ progress

class Progress:
    """Bar with rate and ETA on a TTY; plain lines (every ~10%) otherwise."""

    def __init__(self, total, label, unit="MB", scale=1e6, stream=None):
        self.total, self.label, self.unit, self.scale = max(total, 1), label, unit, scale
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.t0, self.last_pct, self.last_draw = 0, time.time(), -1, 0.0
        global _BAR
        _BAR = self if self.tty else None

    def update(self, n):
        self.done += n
        now = time.time()
        el = max(now - self.t0, 1e-6)
        rate = self.done / el
        eta = (self.total - self.done) / rate if rate > 0 else 0
        pct = int(100 * self.done / self.total)
        if self.tty:
            if now - self.last_draw < 0.1 and self.done < self.total:
                return
            self.last_draw = now
            w = 30
            fill = int(w * self.done / self.total)
            self.stream.write("\r%-12s [%s%s] %3d%% %.1f/%.1f %s  %.1f %s/s  ETA %ds " % (
                self.label, "#" * fill, "." * (w - fill), pct, self.done / self.scale,
                self.total / self.scale, self.unit, rate / self.scale, self.unit, int(eta)))
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // 10 != self.last_pct // 10 or self.done >= self.total:
            if pct != self.last_pct:
                self.stream.write("%s: %d%% (%.1f/%.1f %s, %.1f %s/s, ETA %ds)\n" % (
                    self.label, pct, self.done / self.scale, self.total / self.scale, self.unit,
                    rate / self.scale, self.unit, int(eta)))
                self.stream.flush()
        self.last_pct = pct


_BAR = None       # the bar being drawn on a terminal, if any


def log(msg):
    bar = _BAR
    if bar is not None and bar.stream is sys.stderr and bar.done < bar.total:
        sys.stderr.write("\r\033[K")      # clear the bar's line; its next update redraws it
        bar.last_draw = 0.0
    sys.stderr.write("lion-convert: %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------ sources

def open_pth(path, what):
    if not os.path.isfile(path):
        raise ConvertError("%s file not found: %s" % (what, path))
    log("reading %s tensor list (%s, %.1f MB)" % (what, path, os.path.getsize(path) / 1e6))
    try:
        return open_source(path, what)
    except CkptError as e:
        raise ConvertError(str(e))


def read_json(path, what):
    if not os.path.isfile(path):
        raise ConvertError("%s: missing %s" % (what, path))
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError("%s: cannot read (%s)" % (path, e))
    if not isinstance(obj, dict):
        raise ConvertError("%s: not a JSON object" % path)
    return obj


def open_hf_dir(d, what):
    """config.json + weight files (safetensors or pytorch_model*.bin, sharded or not).
    Returns (config, [sources], {key: source}) - later shards win, as HF loading does."""
    if not os.path.isdir(d):
        raise ConvertError("%s directory not found: %s" % (what, d))
    cfg = read_json(os.path.join(d, "config.json"), what)
    files = []
    for idx in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = os.path.join(d, idx)
        if os.path.isfile(p):
            wm = read_json(p, what).get("weight_map")
            if not isinstance(wm, dict):
                raise ConvertError("%s: no weight_map object" % p)
            files = sorted(set(wm.values()))
            for fn in files:
                if not os.path.isfile(os.path.join(d, fn)):
                    raise ConvertError("%s: shard %s listed in %s is missing" % (what, fn, p))
            break
    if not files:
        if os.path.isfile(os.path.join(d, "model.safetensors")):
            files = ["model.safetensors"]
        elif os.path.isfile(os.path.join(d, "pytorch_model.bin")):
            files = ["pytorch_model.bin"]
        else:
            files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "*.safetensors")))
    if not files:
        raise ConvertError("%s: no weights (*.safetensors or pytorch_model*.bin) in %s" % (what, d))
    srcs, where = [], {}
    for fn in files:
        p = os.path.join(d, fn)
        log("reading %s tensor list (%s, %.1f MB)" % (what, p, os.path.getsize(p) / 1e6))
        try:
            s = open_source(p, what)
        except CkptError as e:
            raise ConvertError(str(e))
        srcs.append(s)
        for k in s.infos:
            where[k] = s
    return cfg, srcs, where


# ------------------------------------------------------------------ helpers

def need(infos, key, path, what=None):
    if key not in infos:
        raise ConvertError("%s: missing tensor '%s'%s" % (path, key, " (%s)" % what if what else ""))
    return infos[key]


def shape_error(path, key, expected, found, why=""):
    return ConvertError("%s: tensor '%s': expected shape %s, found %s%s" % (
        path, key, expected if isinstance(expected, str) else fmt_shape(expected), fmt_shape(found),
        " (%s)" % why if why else ""))


def cfg_int(cfg, key, path, default=None, required=True):
    v = cfg.get(key, default)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConvertError("%s: %s: expected a positive integer, found %r" % (path, key, v))
    return v


def count_index(keys, prefix):
    n = -1
    for k in keys:
        if k.startswith(prefix):
            rest = k[len(prefix):].split(".", 1)[0]
            if rest.isdigit():
                n = max(n, int(rest))
    return n + 1


def parse_layers(s):
    try:
        return [int(x) for x in s.split(",")]
    except ValueError:
        raise ConvertError("--fusion-layers %r: expected comma-separated block indices, e.g. 38,28,18" % s)


def fusion_layers(depth, blocks):
    """Upstream's choice of ViT outputs for the aggregator, as a rule of the depth.

    LION's code reads outputs [38] (hidden, also the Q-Former's input: the last block of
    the 39-block ViT-g) and [28], [18] (cross-attended by fusion blocks 0 and 1): the last
    block, then every 10th block before it.  For other depths the stride scales with the
    depth, round(10 * depth / 39) (at least 1), so 39 blocks give exactly [38, 28, 18].
    Returns [hidden, cross_0, ..., cross_{blocks-1}] or None when the ViT is too shallow."""
    stride = max(1, int(round(10.0 * depth / 39.0)))
    fl = [depth - 1 - k * stride for k in range(blocks + 1)]
    return fl if min(fl) >= 0 else None


def odd_square_side(n):
    """w for n == (2w-1)^2, else None."""
    r = int(round(math.sqrt(n)))
    if r * r != n or r % 2 == 0:
        return None
    return (r + 1) // 2


# ------------------------------------------------------------------ dimensions

def vit_dims(a, eva):
    p = a.eva
    pe = need(eva.infos, "patch_embed.proj.weight", p, "EVA patch embedding").shape
    if len(pe) != 4 or pe[1] != 3 or pe[2] != pe[3]:
        raise shape_error(p, "patch_embed.proj.weight", "[width, 3, patch, patch]", pe)
    dim, patch = pe[0], pe[-1]
    pos = need(eva.infos, "pos_embed", p).shape
    grid = int(round(math.sqrt(max(pos[1] - 1, 0)))) if len(pos) == 3 else 0
    if len(pos) != 3 or pos[0] != 1 or pos[2] != dim or grid < 1 or grid * grid != pos[1] - 1:
        raise shape_error(p, "pos_embed", "[1, 1 + grid*grid, %d]" % dim, pos,
                          "one CLS position plus a square patch grid, width from patch_embed.proj.weight")
    nblocks = count_index(eva.infos, "blocks.")
    if nblocks == 0:
        raise ConvertError("%s: no blocks.N.* tensors: not an EVA ViT checkpoint" % p)
    if a.vit_depth:
        if not 1 <= a.vit_depth <= nblocks:
            raise ConvertError("--vit-depth %d: %s holds blocks.0 to blocks.%d (%d blocks)" % (
                a.vit_depth, p, nblocks - 1, nblocks))
        depth = a.vit_depth
    else:
        if nblocks < 2:
            raise ConvertError("%s holds 1 block; upstream drops the last block of eva_vit_g "
                               "(40 -> 39): pass --vit-depth 1 to keep it" % p)
        depth = nblocks - 1
    if a.vit_heads:
        heads = a.vit_heads
        if heads < 1 or dim % heads:
            raise ConvertError("--vit-heads %d does not divide the ViT width %d (%s: tensor "
                               "'patch_embed.proj.weight' %s)" % (heads, dim, p, fmt_shape(pe)))
        if dim % EVA_HEAD_DIM == 0 and heads != dim // EVA_HEAD_DIM:
            log("warning: --vit-heads %d gives head dim %d; EVA ViT-g's is %d (%d heads at width %d)"
                % (heads, dim // heads, EVA_HEAD_DIM, dim // EVA_HEAD_DIM, dim))
    else:
        if dim % EVA_HEAD_DIM:
            raise ConvertError("cannot tell the ViT head count: %s stores none (tensor "
                               "'patch_embed.proj.weight' %s: width %d) and %d is not a multiple of "
                               "EVA ViT-g's head dim %d; pass --vit-heads" % (
                                   p, fmt_shape(pe), dim, dim, EVA_HEAD_DIM))
        heads = dim // EVA_HEAD_DIM
    mlp = need(eva.infos, "blocks.0.mlp.fc1.weight", p).shape
    if len(mlp) != 2 or mlp[1] != dim:
        raise shape_error(p, "blocks.0.mlp.fc1.weight", "[mlp_hidden, %d]" % dim, mlp)
    return {"file": "vision.safetensors", "image_size": grid * patch, "patch_size": patch,
            "dim": dim, "depth": depth, "heads": heads, "mlp_hidden": mlp[0], "ln_eps": 1e-6,
            "resize": "bicubic", "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711]}


def choose_fusion_layers(a, depth, nfb, lion_path):
    if a.fusion_layers:
        fl = parse_layers(a.fusion_layers)
        if nfb and len(fl) != nfb + 1:
            raise ConvertError("--fusion-layers %s names %d layers but %s has %d fusion blocks "
                               "(fusion_adapter.blocks.0-%d): give hidden + one per block" % (
                                   a.fusion_layers, len(fl), lion_path, nfb, nfb - 1))
        if max(fl) >= depth or min(fl) < 0:
            raise ConvertError("--fusion-layers %s out of range for the ViT's %d blocks (0..%d)" % (
                a.fusion_layers, depth, depth - 1))
        return fl
    fl = fusion_layers(depth, nfb or 2)
    if fl is None:
        raise ConvertError("ViT depth %d is too shallow for %d fusion blocks (%s); pass --fusion-layers"
                           % (depth, nfb or 2, lion_path))
    return fl


def qformer_cross_freq(a, lion):
    p = a.lion
    n = count_index(lion.infos, "Qformer.bert.encoder.layer.")
    has = [i for i in range(n)
           if "Qformer.bert.encoder.layer.%d.crossattention.self.query.weight" % i in lion.infos]
    if not has:
        raise ConvertError("%s: missing tensor 'Qformer.bert.encoder.layer.0.crossattention.self.query.weight' "
                           "(no Q-Former layer has cross-attention)" % p)
    freq = None
    for f in range(1, n + 1):
        if [i for i in range(n) if i % f == 0] == has:
            freq = f
            break
    if freq is None:
        raise ConvertError("%s: Q-Former layers %s have cross-attention: not every k-th layer "
                           "(upstream: layer %% cross_attention_freq == 0)" % (p, has))
    if a.cross_attention_freq and a.cross_attention_freq != freq:
        raise ConvertError("--cross-attention-freq %d does not match %s: layers %s have cross-attention "
                           "(tensor 'Qformer.bert.encoder.layer.N.crossattention.*'), i.e. frequency %d" % (
                               a.cross_attention_freq, p, has, freq))
    return n, freq


def ram_geometry(a, ram, patch, nst):
    """Swin window and RAM input size from the checkpoint: every stage's relative position
    table gives its (effective) window; a stored attn_mask [nW, w*w, w*w] of a shifted
    block gives its stage's grid (sqrt(nW) * w); a stage whose table is smaller than the
    first stage's window ran clamped to its own grid.  image = grid_i * 2^i * patch."""
    p = a.ram
    wins, tkeys = [], []
    for i in range(nst):
        k = "visual_encoder.layers.%d.blocks.0.attn.relative_position_bias_table" % i
        t = need(ram.infos, k, p).shape
        w = odd_square_side(t[0]) if len(t) == 2 else None
        if w is None:
            raise shape_error(p, k, "[(2*window-1)^2, heads]", t)
        wins.append(w)
        tkeys.append(k)
    window = wins[0]
    evidence = []      # (image size, key, shape, explanation)
    for i in range(nst):
        for j in range(count_index(ram.infos, "visual_encoder.layers.%d.blocks." % i)):
            k = "visual_encoder.layers.%d.blocks.%d.attn_mask" % (i, j)
            if k not in ram.infos:
                continue
            s = ram.infos[k].shape
            w = wins[i]
            side = int(round(math.sqrt(s[0]))) if len(s) == 3 else 0
            if len(s) != 3 or s[1] != w * w or s[2] != w * w or side * side != s[0]:
                raise shape_error(p, k, "[windows, %d, %d]" % (w * w, w * w), s,
                                  "a square number of %dx%d windows" % (w, w))
            evidence.append((side * w * 2 ** i * patch, k, s, "a %dx%d patch grid at stage %d" % (
                side * w, side * w, i)))
    for i in range(1, nst):
        if wins[i] < window:
            evidence.append((wins[i] * 2 ** i * patch, tkeys[i], ram.infos[tkeys[i]].shape,
                             "stage %d's window clamped to its %dx%d grid" % (i, wins[i], wins[i])))
    sizes = sorted(set(e[0] for e in evidence))
    if len(sizes) > 1:
        e0 = [e for e in evidence if e[0] == sizes[0]][0]
        e1 = [e for e in evidence if e[0] == sizes[1]][0]
        raise ConvertError("%s: tensors disagree on the input size: '%s' %s means %d (%s), '%s' %s means %d (%s)"
                           % (p, e0[1], fmt_shape(e0[2]), e0[0], e0[3], e1[1], fmt_shape(e1[2]), e1[0], e1[3]))
    if a.ram_image_size:
        size = a.ram_image_size
        if sizes and size != sizes[0]:
            e = evidence[0]
            raise ConvertError("--ram-image-size %d does not match %s: tensor '%s' has shape %s, %s, "
                               "i.e. image size %d; drop the flag" % (size, p, e[1], fmt_shape(e[2]), e[3], e[0]))
    elif sizes:
        size = sizes[0]
    else:
        raise ConvertError("cannot tell RAM's input size: %s stores no Swin attn_mask buffers and no "
                           "clamped window; pass --ram-image-size (384 for ram_swin_large_14m)" % p)
    # the size must give the tables the file holds
    if size % patch:
        raise ConvertError("RAM input size %d is not a multiple of the patch %d (%s: tensor "
                           "'visual_encoder.patch_embed.proj.weight')" % (size, patch, p))
    res = size // patch
    for i in range(nst):
        r = res >> i
        if (res % (1 << i)) or r < 1 or (i < nst - 1 and r % 2):
            raise ConvertError("RAM input size %d: %dx%d patch grid cannot be halved %d times for %d "
                               "Swin stages (%s)" % (size, res, res, nst - 1, nst, p))
        w = min(window, r)
        if r > window and r % window:
            raise ConvertError("RAM input size %d: stage %d's %dx%d grid is not a multiple of the "
                               "window %d (%s: tensor '%s')" % (size, i, r, r, window, p, tkeys[0]))
        if wins[i] != w:
            t = ram.infos[tkeys[i]].shape
            raise shape_error(p, tkeys[i], [(2 * w - 1) ** 2, t[1]], t,
                              "input size %d gives stage %d a %dx%d grid, window %d" % (size, i, r, r, w))
    return window, size


# ------------------------------------------------------------------ plan

class Plan:
    def __init__(self):
        self.entries = {}     # final key -> (source, name in source)

    def put(self, key, src, name):
        self.entries[key] = (src, name)


def build(a):
    t0 = time.time()
    plan = Plan()
    # ---------------- EVA
    eva = open_pth(a.eva, "EVA ViT")
    vision = vit_dims(a, eva)
    dim, depth, heads = vision["dim"], vision["depth"], vision["heads"]
    for k in eva.infos:
        if k.startswith("blocks."):
            if int(k.split(".")[1]) >= depth:
                continue
        elif k not in ("cls_token", "pos_embed") and not k.startswith("patch_embed."):
            continue
        plan.put("visual_encoder." + k, eva, k)

    # ---------------- LION checkpoint (read early: decides visual_input, adapters)
    lion = open_pth(a.lion, "LION checkpoint")
    L = lion.infos
    has_q = any(k.startswith("Qformer.bert.") for k in L)
    has_f = any(k.startswith("fusion_adapter.") for k in L)
    vi = a.visual_input or ("ALL" if has_q and has_f else "QFORMER" if has_q else "AGGREGATOR"
                            if has_f else None)
    if vi is None:
        raise ConvertError("%s holds neither Qformer.bert.* nor fusion_adapter.* tensors" % a.lion)
    nfb = count_index(L, "fusion_adapter.blocks.") if vi != "QFORMER" else 0
    if vi != "QFORMER" and nfb == 0:
        raise ConvertError("%s: missing tensor 'fusion_adapter.blocks.0.attention.self.query.weight' "
                           "(visual input %s needs the aggregator)" % (a.lion, vi))
    fl = choose_fusion_layers(a, depth, nfb, a.lion)
    vision["intermediate_layers"] = sorted(set(fl))

    # ---------------- BERT (Q-Former config + vocab)
    bcfg_p = os.path.join(a.bert, "config.json")
    vocab_p = os.path.join(a.bert, "vocab.txt")
    if not os.path.isfile(vocab_p):
        raise ConvertError("BERT: missing %s" % vocab_p)
    bcfg = read_json(bcfg_p, "BERT")
    with open(vocab_p, encoding="utf-8") as f:
        nvocab = sum(1 for _ in f)
    aggregator = {"file": "aggregator.safetensors", "vision_width": dim}
    if vi != "AGGREGATOR":
        hidden = cfg_int(bcfg, "hidden_size", bcfg_p)
        qheads = cfg_int(bcfg, "num_attention_heads", bcfg_p)
        qlayers = cfg_int(bcfg, "num_hidden_layers", bcfg_p)
        if hidden % qheads:
            raise ConvertError("%s: num_attention_heads %d does not divide hidden_size %d" % (bcfg_p, qheads, hidden))
        nql, freq = qformer_cross_freq(a, lion)
        if nql != qlayers:
            raise ConvertError("%s: num_hidden_layers %d, but %s holds %d Q-Former layers "
                               "(Qformer.bert.encoder.layer.0-%d)" % (bcfg_p, qlayers, a.lion, nql, nql - 1))
        qt = need(L, "query_tokens", a.lion).shape
        if len(qt) != 3 or qt[0] != 1 or qt[2] != hidden:
            raise shape_error(a.lion, "query_tokens", "[1, queries, %d]" % hidden, qt,
                              "hidden_size from %s" % bcfg_p)
        maxpos = cfg_int(bcfg, "max_position_embeddings", bcfg_p, 512)
        aggregator["qformer"] = {
            "hidden": hidden, "layers": qlayers, "heads": qheads,
            "intermediate": cfg_int(bcfg, "intermediate_size", bcfg_p),
            "ln_eps": bcfg.get("layer_norm_eps", 1e-12), "cross_attention_freq": freq,
            "num_query_tokens": qt[1], "vocab_size": nvocab + 1, "max_position": maxpos,
            # upstream truncates the instruction at 128; never past the position table
            "max_text_len": min(128, maxpos), "vocab": "vocab.txt"}
    if vi != "QFORMER":
        fheads = a.fusion_heads or heads
        if dim % fheads:
            raise ConvertError("--fusion-heads %d does not divide the aggregator width %d (%s: tensor "
                               "'patch_embed.proj.weight')" % (fheads, dim, a.eva))
        w = need(L, "fusion_adapter.blocks.0.intermediate.dense.weight", a.lion).shape
        aggregator["fusion"] = {"blocks": nfb, "heads": fheads, "intermediate": w[0],
                                "ln_eps": 1e-12, "hidden_layer": fl[0], "cross_layers": fl[1:]}
        aggregator["proj_hidden"] = need(L, "adapter_proj.0.weight", a.lion).shape[0]
    else:
        aggregator["fusion"] = {"hidden_layer": fl[0], "cross_layers": []}

    # ---------------- T5
    tcfg, t5srcs, t5where = open_hf_dir(a.t5, "T5")
    tcfg_p = os.path.join(a.t5, "config.json")
    spm_p = os.path.join(a.t5, "spiece.model")
    if not os.path.isfile(spm_p):
        raise ConvertError("T5: missing %s" % spm_p)
    nad = count_index(L, "t5_model.encoder.block.0.layer.1.adapter.adapters.")
    ffp = tcfg.get("feed_forward_proj", "relu")
    if not str(ffp).startswith("gated"):
        raise ConvertError("%s: feed_forward_proj %r is not gated (FlanT5 is gated-gelu)" % (tcfg_p, ffp))
    nenc = cfg_int(tcfg, "num_layers", tcfg_p)
    ndec = cfg_int(tcfg, "num_decoder_layers", tcfg_p, required=False) or nenc
    for stack, n in (("encoder", nenc), ("decoder", ndec)):
        have = count_index(t5where, stack + ".block.")
        if have != n:
            raise ConvertError("%s: %s %d, but the weights in %s hold %d %s blocks (%s.block.N.*)" % (
                tcfg_p, "num_layers" if stack == "encoder" else "num_decoder_layers", n, a.t5, have,
                stack, stack))
    llm = {"file": "llm.safetensors", "d_model": cfg_int(tcfg, "d_model", tcfg_p),
           "d_ff": cfg_int(tcfg, "d_ff", tcfg_p), "d_kv": cfg_int(tcfg, "d_kv", tcfg_p),
           "heads": cfg_int(tcfg, "num_heads", tcfg_p), "encoder_layers": nenc,
           "decoder_layers": ndec, "vocab_size": cfg_int(tcfg, "vocab_size", tcfg_p),
           "rel_buckets": cfg_int(tcfg, "relative_attention_num_buckets", tcfg_p, 32),
           "rel_max_distance": cfg_int(tcfg, "relative_attention_max_distance", tcfg_p, 128),
           "ln_eps": tcfg.get("layer_norm_epsilon", 1e-6), "ff_act": "gelu",
           "adapters": {"num": nad, "bottleneck": 64}, "spiece": "spiece.model",
           "pad_id": tcfg.get("pad_token_id", 0), "eos_id": tcfg.get("eos_token_id", 1),
           "decoder_start_id": tcfg.get("decoder_start_token_id", 0),
           "tag_prompt": "According to <extra_id_0>, you are allowed to use or partially use the following tags: [{}]. ",
           "soft_prompt_token": "<extra_id_0>", "max_text_len": 128,
           "generation": {"num_beams": 5, "max_new_tokens": 256, "min_length": 1,
                          "repetition_penalty": 1.5, "length_penalty": 1.0, "top_p": 0.9,
                          "temperature": 1.0, "do_sample": False}}
    if tcfg.get("tie_word_embeddings", True) is not False:
        llm["tie_word_embeddings"] = True
    if nad > 0:
        llm["adapters"]["bottleneck"] = need(
            L, "t5_model.encoder.block.0.layer.1.adapter.adapters.0.down_proj.weight", a.lion).shape[0]
    else:
        raise ConvertError("%s holds no t5_model.*.adapter.* tensors (mixture of adapters)" % a.lion)
    need(L, "soft_prompt_hint", a.lion)
    emb = t5where.get("shared.weight")
    for k, s in t5where.items():
        name = k
        if k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if emb is not None and s.infos[k].shape == emb.infos["shared.weight"].shape:
                continue
            if emb is None:
                k = "shared.weight"
        plan.put("t5_model." + k, s, name)

    # ---------------- RAM
    ram = open_pth(a.ram, "RAM")
    R = ram.infos
    ramk = {}          # RAM key (tagging_head.* naming) -> name in the file
    for k in R:
        nk = "tagging_head." + k[len("vision_multi."):] if k.startswith("vision_multi.") else k
        if nk.endswith("relative_position_index") or nk.endswith("attn_mask"):
            continue
        if nk.startswith("visual_encoder.") or nk.startswith("image_proj.") or nk == "label_embed" \
                or nk.startswith("wordvec_proj.") or nk.startswith("fc."):
            ramk[nk] = k
        elif nk.startswith("tagging_head.encoder.layer.") and ".attention." not in nk:
            ramk[nk] = k

    def rneed(k):
        return need(R, ramk.get(k, k), a.ram)

    rp = rneed("visual_encoder.patch_embed.proj.weight").shape
    if len(rp) != 4 or rp[1] != 3 or rp[2] != rp[3]:
        raise shape_error(a.ram, "visual_encoder.patch_embed.proj.weight", "[embed, 3, patch, patch]", rp)
    nst = count_index(ramk, "visual_encoder.layers.")
    if nst == 0:
        raise ConvertError("%s: missing tensor 'visual_encoder.layers.0.blocks.0.attn.qkv.weight' "
                           "(no Swin stages)" % a.ram)
    depths = [count_index(ramk, "visual_encoder.layers.%d.blocks." % i) for i in range(nst)]
    rheads = [rneed("visual_encoder.layers.%d.blocks.0.attn.relative_position_bias_table" % i).shape[-1]
              for i in range(nst)]
    win, ram_size = ram_geometry(a, ram, rp[-1], nst)
    le = rneed("label_embed").shape
    if not os.path.isfile(a.ram_tags):
        raise ConvertError("RAM tag list not found: %s" % a.ram_tags)
    with open(a.ram_tags, encoding="utf-8") as f:
        tags = f.read().splitlines()
    if not os.path.isfile(a.ram_thresholds):
        raise ConvertError("RAM threshold list not found: %s" % a.ram_thresholds)
    try:
        with open(a.ram_thresholds, encoding="utf-8") as f:
            th = [float(s.strip()) for s in f if s.strip()]
    except ValueError as e:
        raise ConvertError("%s: not one number per line (%s)" % (a.ram_thresholds, e))
    if len(le) != 2 or len(tags) != le[0]:
        raise ConvertError("%s has %d tags but %s: tensor 'label_embed' has shape %s" % (
            a.ram_tags, len(tags), a.ram, fmt_shape(le)))
    if len(th) != len(tags):
        raise ConvertError("%s has %d thresholds for %d tags" % (a.ram_thresholds, len(th), len(tags)))
    hid = rneed("fc.weight").shape[-1]
    if hid % a.ram_head_heads:
        raise ConvertError("--ram-head-heads %d does not divide the tagging head width %d (%s: tensor "
                           "'fc.weight' %s)" % (a.ram_head_heads, hid, a.ram, fmt_shape(R[ramk["fc.weight"]].shape)))
    fc1 = rneed("visual_encoder.layers.0.blocks.0.mlp.fc1.weight").shape
    tagger = {"file": "tagger.safetensors", "image_size": ram_size, "patch_size": rp[-1],
              "embed_dim": rp[0], "depths": depths, "heads": rheads, "window": win,
              "mlp_ratio": fc1[0] / rp[0], "ln_eps": 1e-5, "embed_out": le[1],
              "head": {"hidden": hid, "heads": a.ram_head_heads,
                       "layers": count_index(ramk, "tagging_head.encoder.layer."),
                       "intermediate": rneed("tagging_head.encoder.layer.0.intermediate.dense.weight").shape[0],
                       "ln_eps": 1e-12},
              "resize": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "tags": tags, "thresholds": th, "delete_tags": []}
    for k, name in ramk.items():
        plan.put("ram." + k, ram, name)

    # ---------------- LION keys (last: overrides, like upstream's strict=False load)
    for k in L:
        if k.startswith("Qformer.cls.") or k.endswith("position_ids") or k.startswith("ram_model."):
            continue
        if k.startswith("t5_model.") and k[len("t5_model."):] in ("encoder.embed_tokens.weight",
                                                                   "decoder.embed_tokens.weight"):
            continue
        plan.put(k, lion, k)

    cfg = {"format": "lion-model", "format_version": 1, "name": a.name or os.path.basename(
        os.path.abspath(a.out)), "visual_input": vi, "vision": vision, "tagger": tagger,
        "aggregator": aggregator, "llm": llm}
    sources = [eva, ram] + t5srcs + [lion]
    log("read the tensor lists in %.1fs: ViT %d x %d (%d heads), T5 d_model %d (%d + %d layers), "
        "RAM %d px, fusion layers %s" % (time.time() - t0, depth, dim, heads, llm["d_model"], nenc, ndec,
                                         ram_size, fl))
    return cfg, plan, sources, spm_p, vocab_p


SOURCES = {"visual_encoder.": "--eva", "ram.": "--ram", "t5_model.": "--t5 (HF T5 dir)"}


def expected_source(key, a):
    if ".adapter." in key or key == "soft_prompt_hint":
        return a.lion
    for p, opt in SOURCES.items():
        if key.startswith(p):
            return {"--eva": a.eva, "--ram": a.ram}.get(opt, a.t5)
    return a.lion


def expected_shapes(cfg):
    """{key: shape} of the model cfg describes, in state_dict order (no weights built)."""
    from lion_ref.lion import LionModel
    try:
        with _MetaMode():   # shapes only: no memory for the real 4-12 B parameters
            model = LionModel(cfg)
    except Exception as e:  # noqa: BLE001
        raise ConvertError("the dimensions read from the files do not make a LION model (%s: %s)" % (
            type(e).__name__, e))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check(cfg, plan, a):
    exp = expected_shapes(cfg)
    for k, shp in exp.items():
        if k not in plan.entries:
            src = expected_source(k, a)
            name = k[4:] if k.startswith("ram.") else k[len("t5_model."):] if (
                src == a.t5) else k[len("visual_encoder."):] if src == a.eva else k
            raise ConvertError("%s: missing tensor '%s'" % (src, name))
        src, name = plan.entries[k]
        found = src.infos[name].shape
        if tuple(found) != shp:
            raise shape_error(src.path, name, shp, found, "expected from the dimensions read from the files")
    dropped = sorted(set(plan.entries) - set(exp))
    if dropped:
        log("dropping %d keys the model does not use (e.g. %s)" % (len(dropped), ", ".join(dropped[:3])))
    return exp


from torch.overrides import TorchFunctionMode  # noqa: E402

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.tensor, torch.arange, torch.full,
              torch.randn, torch.rand}


class _MetaMode(TorchFunctionMode):
    """Build modules on the meta device (torch 1.13 has no `with torch.device`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def stage_of(k):
    if k.startswith("ram."):
        return "tagger", k[4:]
    if k.startswith("visual_encoder."):
        return "vision", k
    if k.startswith("t5_model.") or k == "soft_prompt_hint":
        return "llm", k
    return "aggregator", k


def write(cfg, exp, plan, sources, spm_p, vocab_p, out, dtype):
    from lion_ref.lion import STAGES
    tdt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    entries = {s: [] for s in STAGES}
    dest = {}                     # (source id, name) -> [(stage, out name, out dtype)]
    for k in exp:                 # state_dict order: the layout the reference writer gives
        src, name = plan.entries[k]
        info = src.infos[name]
        s, oname = stage_of(k)
        odt = tdt if info.dtype.is_floating_point else info.dtype
        entries[s].append((oname, odt, info.shape))
        dest.setdefault((id(src), name), []).append((s, oname, odt))
    paths = {s: os.path.join(out, cfg[s]["file"]) for s in STAGES}
    write_model(out, cfg, paths, entries, dest, sources,
                lambda s: {"format": "lion-model", "stage": s, "dtype": dtype},
                [(spm_p, "spiece.model"), (vocab_p, "vocab.txt")])


def write_model(out, cfg, paths, entries, dest, sources, meta_of, copies):
    """Writes a model directory: one safetensors file per stage (paths[stage], its tensors
    entries[stage] = [(name, dtype, shape)] in that order, header metadata meta_of(stage)),
    filled by streaming each source's tensors once (dest[(id(source), its name)] = [(stage,
    out name, out dtype)]), each file written as FILE.part and renamed when whole (all of them
    removed on any failure); then copies [(path, name in out)] and model.json (cfg)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConvertError("cannot create %s (%s)" % (out, e))
    stages = list(paths)
    total = sum(torch.empty((), dtype=dt).element_size() * _numel(sh)
                for s in stages for _, dt, sh in entries[s])
    writers = {}
    try:
        for s in stages:
            try:
                writers[s] = StreamWriter(paths[s] + ".part", entries[s], meta_of(s))
            except OSError as e:
                raise ConvertError("cannot write %s (%s)" % (paths[s] + ".part", e))
        bar = Progress(total, "writing")
        for src in sources:
            names = [n for n in src.infos if (id(src), n) in dest]
            if not names:
                continue
            log("converting %d tensors from %s" % (len(names), src.path))
            try:
                src.open()
                for n in src.order(names):
                    t = src.get(n)
                    for s, oname, odt in dest[(id(src), n)]:
                        c = t.to(odt) if t.dtype != odt else t
                        try:
                            writers[s].write(oname, c)
                        except OSError as e:
                            raise ConvertError("cannot write %s (%s)" % (paths[s] + ".part", e))
                        bar.update(c.numel() * c.element_size())
                        del c
                    del t
            except CkptError as e:
                raise ConvertError(str(e))
            finally:
                src.close()
        for s in stages:
            writers[s].close()
            os.replace(paths[s] + ".part", paths[s])
            log("wrote %s (%d tensors, %.1f MB)" % (paths[s], len(entries[s]), os.path.getsize(paths[s]) / 1e6))
    except BaseException:
        for s, w in writers.items():
            w.abort()
            try:
                os.remove(paths[s] + ".part")
            except OSError:
                pass
        raise
    try:
        for path, name in copies:
            shutil.copyfile(path, os.path.join(out, name))
        with open(os.path.join(out, "model.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=1)
    except OSError as e:
        raise ConvertError("cannot write into %s (%s)" % (out, e))
    log("wrote %s" % os.path.join(out, "model.json"))


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


HELP_EPILOG = """\
Dimensions are read from the files.  What no file stores, and its default (right for the
released LION-FlanT5 files):
  --vit-heads       no EVA tensor has a per-head axis (qkv is [3*width, width]); default
                    width/88, EVA ViT-g's head dim (1408/88 = 16); required when the width is
                    not a multiple of 88.  Checked: must divide the width.
  --fusion-heads    upstream FusionAdapter(num_heads=16), not stored; default the ViT's.
  --fusion-layers   which ViT outputs the aggregator reads is in upstream's code, not its
                    files: [38, 28, 18] for the 39-block ViT-g; default: the last block, then
                    every round(10*depth/39)-th block before it.  Checked: in range, one per
                    fusion block + the hidden layer.
  --ram-head-heads  RAM's q2l_config.json (num_attention_heads 4), not in the checkpoint.
                    Checked: must divide the head width.
Read from the files; a flag is checked against them (or needed when a file lacks the fact):
  --vit-depth (blocks in --eva minus 1: upstream drops EVA's 40th block; checked <= blocks),
  --ram-image-size (from RAM's stored Swin attn_mask buffers / clamped windows),
  --cross-attention-freq (from which Q-Former layers have crossattention tensors).
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="lion-convert", description="Convert LION upstream checkpoints "
                                 "into a model directory (docs/model-format.md).", epilog=HELP_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eva", required=True, help="eva_vit_g.pth")
    ap.add_argument("--bert", required=True, help="bert-base-uncased dir (config.json, vocab.txt)")
    ap.add_argument("--t5", required=True, help="HF FlanT5 dir (config.json, spiece.model, weights)")
    ap.add_argument("--ram", required=True, help="ram_swin_large_14m.pth")
    ap.add_argument("--ram-tags", required=True, help="ram_tag_list.txt")
    ap.add_argument("--ram-thresholds", required=True, help="ram_tag_list_threshold.txt")
    ap.add_argument("--lion", required=True, help="LION-FlanT5-XL.pth / -XXL.pth")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--name", default=None)
    ap.add_argument("--visual-input", default=None, choices=["ALL", "QFORMER", "AGGREGATOR"],
                    help="default: from the LION checkpoint's keys")
    ap.add_argument("--vit-depth", type=int, default=0,
                    help="default: blocks in --eva minus 1 (upstream drops the 40th: 39)")
    ap.add_argument("--vit-heads", type=int, default=0,
                    help="not stored in any file; default width/88, EVA ViT-g's head dim (16)")
    ap.add_argument("--fusion-heads", type=int, default=0,
                    help="not stored in any file; default the ViT's head count (16)")
    ap.add_argument("--fusion-layers", default=None,
                    help="hidden,cross1,cross2 ViT block indices; not stored in any file; default "
                         "upstream's 38,28,18 for 39 blocks (last, then every round(10*depth/39)-th before)")
    ap.add_argument("--cross-attention-freq", type=int, default=0,
                    help="default: read from which Q-Former layers have cross-attention (2)")
    ap.add_argument("--ram-image-size", type=int, default=0,
                    help="default: read from RAM's Swin attn_mask buffers (384); checked against them")
    ap.add_argument("--ram-head-heads", type=int, default=RAM_HEAD_HEADS,
                    help="q2l_config.json num_attention_heads, not in the checkpoint (4)")
    return ap.parse_args(argv)


def convert(argv=None):
    a = parse_args(argv)
    t0 = time.time()
    cfg, plan, sources, spm_p, vocab_p = build(a)
    exp = check(cfg, plan, a)
    write(cfg, exp, plan, sources, spm_p, vocab_p, a.out, a.dtype)
    log("done in %.1fs" % (time.time() - t0))
    return cfg


def main(argv=None):
    try:
        convert(argv)
    except ConvertError as e:
        sys.stderr.write("lion-convert: error: %s\n" % e)
        return 2
    except CkptError as e:
        sys.stderr.write("lion-convert: error: %s\n" % e)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("lion-convert: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001  one line, never a traceback (LION_CONVERT_DEBUG=1 shows it)
        if os.environ.get("LION_CONVERT_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        sys.stderr.write("lion-convert: error: unexpected %s: %s (LION_CONVERT_DEBUG=1 for a traceback)\n"
                         % (type(e).__name__, msg[:500]))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
