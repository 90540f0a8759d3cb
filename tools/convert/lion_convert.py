#!/usr/bin/env python3
"""lion-convert: turn LION's released upstream files into our model directory
(docs/model-format.md).

    tools/convert/lion-convert --eva eva_vit_g.pth --bert BERT_DIR --t5 T5_DIR \\
        --ram ram_swin_large_14m.pth --ram-tags ram_tag_list.txt \\
        --ram-thresholds ram_tag_list_threshold.txt --lion LION-FlanT5-XL.pth \\
        --out models/lion-xl --dtype f16

Dimensions come from the files (tensor shapes + config.json); what the files cannot tell
(attention head counts of the ViT / aggregator / RAM head, RAM's input size, which ViT
layers feed the aggregator) defaults to upstream's values and can be overridden.
Every tensor the model needs is checked for presence and shape; a missing or mismatched
key stops the conversion with a message naming the key and the file it should come from.
Keys the tagging path / inference does not use (RAM's tag_encoder/text_decoder,
Qformer.cls, buffers) are dropped.  Upstream loading order is kept: the LION checkpoint is
loaded last (strict=False), so any key it holds overrides the base checkpoints.
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

import torch  # noqa: E402

from lion_ref.safetensors_io import load_file as st_load, save_file  # noqa: E402


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


def log(msg):
    sys.stderr.write("lion-convert: %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------ readers

def load_pth(path, what):
    if not os.path.isfile(path):
        raise ConvertError("%s file not found: %s" % (what, path))
    log("reading %s (%s, %.1f MB)" % (what, path, os.path.getsize(path) / 1e6))
    try:
        ck = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ConvertError("%s: cannot read %s: %s" % (what, path, e))
    if isinstance(ck, dict) and "model" in ck and isinstance(ck["model"], dict):
        ck = ck["model"]
    elif isinstance(ck, dict) and "state_dict" in ck and isinstance(ck["state_dict"], dict):
        ck = ck["state_dict"]
    if not isinstance(ck, dict):
        raise ConvertError("%s: %s does not hold a state dict" % (what, path))
    return {k: v for k, v in ck.items() if torch.is_tensor(v)}


def load_hf_dir(d, what):
    """config.json + weights (safetensors or pytorch_model*.bin, sharded or not)."""
    if not os.path.isdir(d):
        raise ConvertError("%s directory not found: %s" % (what, d))
    cfgp = os.path.join(d, "config.json")
    if not os.path.isfile(cfgp):
        raise ConvertError("%s: missing %s" % (what, cfgp))
    cfg = json.load(open(cfgp))
    files = []
    for idx in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = os.path.join(d, idx)
        if os.path.isfile(p):
            wm = json.load(open(p))["weight_map"]
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
    sd, origin = {}, {}
    for fn in files:
        p = os.path.join(d, fn)
        log("reading %s weights %s (%.1f MB)" % (what, p, os.path.getsize(p) / 1e6))
        part = st_load(p, None) if fn.endswith(".safetensors") else load_pth(p, what)
        for k, v in part.items():
            sd[k] = v
            origin[k] = p
    return cfg, sd, origin


# ------------------------------------------------------------------ helpers

def need(sd, key, src):
    if key not in sd:
        raise ConvertError("missing key '%s' in %s" % (key, src))
    return sd[key]


def count_index(keys, prefix):
    n = -1
    for k in keys:
        if k.startswith(prefix):
            rest = k[len(prefix):].split(".", 1)[0]
            if rest.isdigit():
                n = max(n, int(rest))
    return n + 1


def parse_layers(s):
    return [int(x) for x in s.split(",")]


# ------------------------------------------------------------------ conversion

def build(a):
    t0 = time.time()
    tensors = {}   # final key -> (tensor, source file)
    # ---------------- EVA
    eva = load_pth(a.eva, "EVA ViT")
    pe = need(eva, "patch_embed.proj.weight", a.eva)
    dim, patch = pe.shape[0], pe.shape[-1]
    npos = need(eva, "pos_embed", a.eva).shape[1]
    grid = int(round(math.sqrt(npos - 1)))
    if grid * grid != npos - 1:
        raise ConvertError("%s: pos_embed has %d positions, not 1 + a square" % (a.eva, npos))
    nblocks = count_index(eva, "blocks.")
    depth = a.vit_depth if a.vit_depth else nblocks - 1
    if depth > nblocks:
        raise ConvertError("%s holds %d blocks, --vit-depth %d asks for more" % (a.eva, nblocks, depth))
    heads = a.vit_heads or (dim // 88 if dim % 88 == 0 else 0)
    if not heads:
        raise ConvertError("cannot derive ViT heads from width %d (upstream: width/88); pass --vit-heads" % dim)
    mlp = need(eva, "blocks.0.mlp.fc1.weight", a.eva).shape[0]
    for k, v in eva.items():
        if k.startswith("blocks."):
            if int(k.split(".")[1]) >= depth:
                continue
        elif k not in ("cls_token", "pos_embed") and not k.startswith("patch_embed."):
            continue
        tensors["visual_encoder." + k] = (v, a.eva)
    vision = {"file": "vision.safetensors", "image_size": grid * patch, "patch_size": patch,
              "dim": dim, "depth": depth, "heads": heads, "mlp_hidden": mlp, "ln_eps": 1e-6,
              "resize": "bicubic", "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711]}

    # ---------------- LION checkpoint (read early: decides visual_input, adapters)
    lion = load_pth(a.lion, "LION checkpoint")
    has_q = any(k.startswith("Qformer.bert.") for k in lion)
    has_f = any(k.startswith("fusion_adapter.") for k in lion)
    vi = a.visual_input or ("ALL" if has_q and has_f else "QFORMER" if has_q else "AGGREGATOR"
                            if has_f else None)
    if vi is None:
        raise ConvertError("%s holds neither Qformer.bert.* nor fusion_adapter.* keys" % a.lion)

    # ---------------- fusion layer choice
    if a.fusion_layers:
        fl = parse_layers(a.fusion_layers)
    else:
        fl = [depth - 1, depth - 11, depth - 21]
        if min(fl) < 0:
            raise ConvertError("ViT depth %d too small for upstream layers; pass --fusion-layers" % depth)
    if max(fl) >= depth or min(fl) < 0:
        raise ConvertError("--fusion-layers %s out of range for ViT depth %d" % (fl, depth))
    vision["intermediate_layers"] = sorted(set(fl))

    # ---------------- BERT (Q-Former config + vocab)
    bcfg_p = os.path.join(a.bert, "config.json")
    vocab_p = os.path.join(a.bert, "vocab.txt")
    for p in (bcfg_p, vocab_p):
        if not os.path.isfile(p):
            raise ConvertError("BERT: missing %s" % p)
    bcfg = json.load(open(bcfg_p))
    nvocab = sum(1 for _ in open(vocab_p, encoding="utf-8"))
    aggregator = {"file": "aggregator.safetensors", "vision_width": dim}
    if vi != "AGGREGATOR":
        aggregator["qformer"] = {
            "hidden": bcfg["hidden_size"], "layers": bcfg["num_hidden_layers"],
            "heads": bcfg["num_attention_heads"], "intermediate": bcfg["intermediate_size"],
            "ln_eps": bcfg.get("layer_norm_eps", 1e-12), "cross_attention_freq": a.cross_attention_freq,
            "num_query_tokens": need(lion, "query_tokens", a.lion).shape[1],
            "vocab_size": nvocab + 1, "max_position": bcfg.get("max_position_embeddings", 512),
            # upstream truncates the instruction at 128; never past the position table
            "max_text_len": min(128, bcfg.get("max_position_embeddings", 512)), "vocab": "vocab.txt"}
    if vi != "QFORMER":
        w = need(lion, "fusion_adapter.blocks.0.intermediate.dense.weight", a.lion)
        aggregator["fusion"] = {"blocks": count_index(lion, "fusion_adapter.blocks."),
                                "heads": a.fusion_heads or heads, "intermediate": w.shape[0],
                                "ln_eps": 1e-12, "hidden_layer": fl[0], "cross_layers": fl[1:]}
        aggregator["proj_hidden"] = need(lion, "adapter_proj.0.weight", a.lion).shape[0]
        if len(fl) - 1 != aggregator["fusion"]["blocks"]:
            raise ConvertError("--fusion-layers gives %d cross layers but %s has %d fusion blocks" % (
                len(fl) - 1, a.lion, aggregator["fusion"]["blocks"]))
    else:
        aggregator["fusion"] = {"hidden_layer": fl[0], "cross_layers": []}

    # ---------------- T5
    tcfg, t5sd, t5origin = load_hf_dir(a.t5, "T5")
    spm_p = os.path.join(a.t5, "spiece.model")
    if not os.path.isfile(spm_p):
        raise ConvertError("T5: missing %s" % spm_p)
    nad = count_index(lion, "t5_model.encoder.block.0.layer.1.adapter.adapters.")
    ffp = tcfg.get("feed_forward_proj", "relu")
    if not ffp.startswith("gated"):
        raise ConvertError("T5 %s: feed_forward_proj %r is not gated (FlanT5 is gated-gelu)" % (a.t5, ffp))
    llm = {"file": "llm.safetensors", "d_model": tcfg["d_model"], "d_ff": tcfg["d_ff"],
           "d_kv": tcfg["d_kv"], "heads": tcfg["num_heads"], "encoder_layers": tcfg["num_layers"],
           "decoder_layers": tcfg.get("num_decoder_layers") or tcfg["num_layers"],
           "vocab_size": tcfg["vocab_size"],
           "rel_buckets": tcfg.get("relative_attention_num_buckets", 32),
           "rel_max_distance": tcfg.get("relative_attention_max_distance", 128),
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
            lion, "t5_model.encoder.block.0.layer.1.adapter.adapters.0.down_proj.weight", a.lion).shape[0]
    else:
        raise ConvertError("%s holds no t5_model.*.adapter.* keys (mixture of adapters)" % a.lion)
    if "soft_prompt_hint" not in lion:
        raise ConvertError("missing key 'soft_prompt_hint' in %s" % a.lion)
    emb = t5sd.get("shared.weight")
    for k, v in t5sd.items():
        if k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if emb is not None and v.shape == emb.shape:
                continue
            if emb is None:
                k = "shared.weight"
        tensors["t5_model." + k] = (v, t5origin[k] if k in t5origin else a.t5)

    # ---------------- RAM
    ram = load_pth(a.ram, "RAM")
    ramk = {}
    for k, v in ram.items():
        if k.startswith("vision_multi."):
            k = "tagging_head." + k[len("vision_multi."):]
        if k.endswith("relative_position_index") or k.endswith("attn_mask"):
            continue
        if k.startswith("visual_encoder.") or k.startswith("image_proj.") or k == "label_embed" \
                or k.startswith("wordvec_proj.") or k.startswith("fc."):
            ramk[k] = v
        elif k.startswith("tagging_head.encoder.layer.") and ".attention." not in k:
            ramk[k] = v
    rp = need(ramk, "visual_encoder.patch_embed.proj.weight", a.ram)
    nst = count_index(ramk, "visual_encoder.layers.")
    depths = [count_index(ramk, "visual_encoder.layers.%d.blocks." % i) for i in range(nst)]
    rheads = [need(ramk, "visual_encoder.layers.%d.blocks.0.attn.relative_position_bias_table" % i,
                   a.ram).shape[1] for i in range(nst)]
    tbl = ramk["visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    win = (int(round(math.sqrt(tbl))) + 1) // 2
    if (2 * win - 1) ** 2 != tbl:
        raise ConvertError("%s: relative_position_bias_table size %d is not (2w-1)^2" % (a.ram, tbl))
    le = need(ramk, "label_embed", a.ram)
    tags = open(a.ram_tags, encoding="utf-8").read().splitlines() if os.path.isfile(a.ram_tags) else None
    if tags is None:
        raise ConvertError("RAM tag list not found: %s" % a.ram_tags)
    if not os.path.isfile(a.ram_thresholds):
        raise ConvertError("RAM threshold list not found: %s" % a.ram_thresholds)
    th = [float(s.strip()) for s in open(a.ram_thresholds, encoding="utf-8") if s.strip()]
    if len(tags) != le.shape[0]:
        raise ConvertError("%s has %d tags but label_embed in %s has %d rows" % (
            a.ram_tags, len(tags), a.ram, le.shape[0]))
    if len(th) != len(tags):
        raise ConvertError("%s has %d thresholds for %d tags" % (a.ram_thresholds, len(th), len(tags)))
    hid = need(ramk, "fc.weight", a.ram).shape[1]
    tagger = {"file": "tagger.safetensors", "image_size": a.ram_image_size, "patch_size": rp.shape[-1],
              "embed_dim": rp.shape[0], "depths": depths, "heads": rheads, "window": win,
              "mlp_ratio": need(ramk, "visual_encoder.layers.0.blocks.0.mlp.fc1.weight", a.ram).shape[0]
              / rp.shape[0], "ln_eps": 1e-5, "embed_out": le.shape[1],
              "head": {"hidden": hid, "heads": a.ram_head_heads,
                       "layers": count_index(ramk, "tagging_head.encoder.layer."),
                       "intermediate": need(ramk, "tagging_head.encoder.layer.0.intermediate.dense.weight",
                                            a.ram).shape[0], "ln_eps": 1e-12},
              "resize": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "tags": tags, "thresholds": th, "delete_tags": []}
    for k, v in ramk.items():
        tensors["ram." + k] = (v, a.ram)

    # ---------------- LION keys (last: overrides, like upstream's strict=False load)
    for k, v in lion.items():
        if k.startswith("Qformer.cls.") or k.endswith("position_ids") or k.startswith("ram_model."):
            continue
        if k.startswith("t5_model.") and k[len("t5_model."):] in ("encoder.embed_tokens.weight",
                                                                   "decoder.embed_tokens.weight"):
            continue
        tensors[k] = (v, a.lion)

    cfg = {"format": "lion-model", "format_version": 1, "name": a.name or os.path.basename(
        os.path.abspath(a.out)), "visual_input": vi, "vision": vision, "tagger": tagger,
        "aggregator": aggregator, "llm": llm}
    log("read all inputs in %.1fs" % (time.time() - t0))
    return cfg, tensors, spm_p, vocab_p


SOURCES = {"visual_encoder.": "--eva", "ram.": "--ram", "t5_model.": "--t5 (HF T5 dir)"}


def expected_source(key, a):
    if ".adapter." in key or key == "soft_prompt_hint":
        return a.lion
    for p, opt in SOURCES.items():
        if key.startswith(p):
            return {"--eva": a.eva, "--ram": a.ram}.get(opt, a.t5)
    return a.lion


def check(cfg, tensors, a):
    from lion_ref.lion import LionModel
    with _MetaMode():   # shapes only: no memory for the real 4-12 B parameters
        model = LionModel(cfg)
    exp = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k, shp in exp.items():
        if k not in tensors:
            src = expected_source(k, a)
            raise ConvertError("missing key '%s' in %s" % (k[4:] if k.startswith("ram.") else k, src))
        t, src = tensors[k]
        if tuple(t.shape) != shp:
            raise ConvertError("shape mismatch for '%s' in %s: file has %s, model.json dimensions need %s"
                               % (k[4:] if k.startswith("ram.") else k, src, list(t.shape), list(shp)))
    dropped = sorted(set(tensors) - set(exp))
    if dropped:
        log("dropping %d keys the model does not use (e.g. %s)" % (len(dropped), ", ".join(dropped[:3])))
    return model, {k: tensors[k][0] for k in exp}


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


def write(cfg, model_keys, spm_p, vocab_p, out, dtype):
    from lion_ref.lion import STAGES
    os.makedirs(out, exist_ok=True)
    stages = {s: {} for s in STAGES}
    for k, t in model_keys.items():
        if k.startswith("ram."):
            stages["tagger"][k[4:]] = t
        elif k.startswith("visual_encoder."):
            stages["vision"][k] = t
        elif k.startswith("t5_model.") or k == "soft_prompt_hint":
            stages["llm"][k] = t
        else:
            stages["aggregator"][k] = t
    esz = {"f32": 4, "f16": 2, "bf16": 2}[dtype]
    total = sum(t.numel() * esz for st in stages.values() for t in st.values())
    bar = Progress(total, "writing")
    tdt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    for s in STAGES:
        cast = {}
        for k, t in stages[s].items():
            cast[k] = t.to(tdt) if t.is_floating_point() else t
            bar.update(t.numel() * esz)
        fn = os.path.join(out, cfg[s]["file"])
        save_file(cast, fn, {"format": "lion-model", "stage": s, "dtype": dtype})
        log("wrote %s (%d tensors, %.1f MB)" % (fn, len(cast), os.path.getsize(fn) / 1e6))
    shutil.copyfile(spm_p, os.path.join(out, "spiece.model"))
    shutil.copyfile(vocab_p, os.path.join(out, "vocab.txt"))
    with open(os.path.join(out, "model.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    log("wrote %s" % os.path.join(out, "model.json"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="lion-convert", description="Convert LION upstream checkpoints "
                                 "into a model directory (docs/model-format.md).")
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
    ap.add_argument("--vit-depth", type=int, default=0, help="default: blocks in --eva minus 1 (39)")
    ap.add_argument("--vit-heads", type=int, default=0, help="default: width/88 (16)")
    ap.add_argument("--fusion-heads", type=int, default=0, help="default: ViT heads (16)")
    ap.add_argument("--fusion-layers", default=None,
                    help="hidden,cross1,cross2 ViT block indices (default depth-1,depth-11,depth-21 = 38,28,18)")
    ap.add_argument("--cross-attention-freq", type=int, default=2)
    ap.add_argument("--ram-image-size", type=int, default=384)
    ap.add_argument("--ram-head-heads", type=int, default=4, help="q2l_config num_attention_heads (4)")
    return ap.parse_args(argv)


def convert(argv=None):
    a = parse_args(argv)
    t0 = time.time()
    cfg, tensors, spm_p, vocab_p = build(a)
    model, keys = check(cfg, tensors, a)
    write(cfg, keys, spm_p, vocab_p, a.out, a.dtype)
    log("done in %.1fs" % (time.time() - t0))
    return cfg


def main(argv=None):
    try:
        convert(argv)
    except ConvertError as e:
        sys.stderr.write("lion-convert: error: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
