#!/usr/bin/env python3
"""Write random checkpoints in the layouts of LION's released upstream files.

    python3 tools/convert/make_fake_upstream.py OUT_DIR [--seed 0] [--size tiny|small-a|small-b|xl]
                                                [--visual-input ALL] [--t5-layers N]

Sizes: ``tiny`` (default; the test model of lion_ref.testing), ``small-a`` / ``small-b``
(two other small shapes: ViT width 176 / 264 with EVA's head dim 88, other depths, T5
widths and layer counts, RAM input sizes, Swin windows and depths, Q-Former
cross-attention frequencies; they convert with no size flags), ``xl`` (full
LION-FlanT5-XL: EVA ViT-g 40 blocks f16, FlanT5-XL 24+24 f32 in HF's two 10 GB shards, RAM
Swin-L @384 f32 with BERT-base-sized tag_encoder/text_decoder extras, Q-Former + aggregator
+ adapters f32; about 16 GB).  ``xl`` is written one file / one T5 tensor at a time (peak
memory about the EVA file, 2 GB); it writes no reference.pt (``--t5-layers N`` truncates the
T5 to N + N layers).

Creates in OUT_DIR:
  eva_vit_g.pth          plain state dict, EVA keys, one block MORE than LION uses
                         (upstream drops the 40th block)
  bert/                  config.json + vocab.txt (bert-base-uncased layout)
  t5/                    config.json, spiece.model, sharded safetensors
                         (model-00001-of-00002.safetensors ... + model.safetensors.index.json)
  t5_bin/                the same weights as a single pytorch_model.bin (with the tied
                         encoder/decoder.embed_tokens copies HF .bin files carry; not for xl)
  ram_swin_large_14m.pth {"model": RAM keys, incl. non-tagging extras (tag_encoder.*,
                         text_decoder.*, relative_position_index, attn_mask, class_threshold)
                         and the tagging head stored under the legacy "vision_multi" name}
  ram_tag_list.txt, ram_tag_list_threshold.txt
  LION-FlanT5-XL.pth     {"model": LION's own parameters (Q-Former, projections,
                         aggregator, adapters, soft prompt) + extras (Qformer.cls.*, position_ids)}
  reference.pt           the full reference state dict + model.json dict (for tests; not for xl)
  convert_args.txt       the lion_convert options these files need (what no file stores
                         and differs from upstream's defaults: tiny needs --vit-heads 4)
Returns (python API ``make(out_dir, seed, visual_input, size)``) the LionModel these files
encode and the list of options (``make_xl`` returns the model.json dict instead).
"""
import argparse
import copy
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)

from lion_ref.safetensors_io import StreamWriter, save_file  # noqa: E402
from lion_ref.testing import tiny_config, tiny_model  # noqa: E402

EVA_HEAD_DIM = 88


def _fusion_rule(depth, blocks):
    import lion_convert
    return lion_convert.fusion_layers(depth, blocks)


def _small(vision, qformer, fusion, proj_hidden, llm, tagger):
    """A full config from tiny_config with sections updated (fusion layers by upstream's rule)."""
    base = tiny_config()
    v = dict(base["vision"], **vision)
    fl = _fusion_rule(v["depth"], fusion.get("blocks", 2))
    v["intermediate_layers"] = sorted(set(fl))
    agg = copy.deepcopy(base["aggregator"])
    agg["vision_width"] = v["dim"]
    agg["qformer"].update(qformer)
    agg["fusion"].update(fusion, hidden_layer=fl[0], cross_layers=fl[1:])
    agg["proj_hidden"] = proj_hidden
    l = copy.deepcopy(base["llm"])
    l.update({k: v_ for k, v_ in llm.items() if k != "bottleneck"})
    l["adapters"]["bottleneck"] = llm.get("bottleneck", 8)
    t = copy.deepcopy(base["tagger"])
    hd = t["head"]
    hd.update(tagger.pop("head", {}))
    t.update(tagger)
    return {"vision": v, "aggregator": agg, "llm": l, "tagger": t}


SIZES = {
    "tiny": None,
    # ViT 176 wide (2 heads of 88), 5 blocks (6 in the file), 3x3 patches; Q-Former with
    # cross-attention in every layer; T5 24 wide, 3 + 2 layers; RAM 48 px, window 3,
    # 3 Swin stages (12x12, 6x6, 3x3 grids)
    "small-a": lambda: _small(
        {"image_size": 42, "patch_size": 14, "dim": 176, "depth": 5, "heads": 2, "mlp_hidden": 96},
        {"hidden": 24, "layers": 3, "heads": 4, "intermediate": 40, "cross_attention_freq": 1,
         "num_query_tokens": 3},
        {"blocks": 2, "heads": 2, "intermediate": 64}, 96,
        {"d_model": 24, "d_ff": 40, "d_kv": 6, "heads": 4, "encoder_layers": 3, "decoder_layers": 2,
         "bottleneck": 8},
        {"image_size": 48, "patch_size": 4, "embed_dim": 8, "depths": [2, 2, 2], "heads": [1, 2, 4],
         "window": 3, "embed_out": 12, "head": {"hidden": 16, "heads": 4, "layers": 1, "intermediate": 24}}),
    # ViT 264 wide (3 heads of 88), 8 blocks (9 in the file), patch 8 at 32 px; Q-Former 32
    # wide, 2 heads; T5 32 wide, 2 + 3 layers; RAM 56 px, window 7, depths [2, 4], MLP ratio 2
    "small-b": lambda: _small(
        {"image_size": 32, "patch_size": 8, "dim": 264, "depth": 8, "heads": 3, "mlp_hidden": 128},
        {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 48, "cross_attention_freq": 2,
         "num_query_tokens": 5},
        {"blocks": 2, "heads": 3, "intermediate": 40}, 80,
        {"d_model": 32, "d_ff": 48, "d_kv": 8, "heads": 2, "encoder_layers": 2, "decoder_layers": 3,
         "bottleneck": 4},
        {"image_size": 56, "patch_size": 4, "embed_dim": 12, "depths": [2, 4], "heads": [3, 6],
         "window": 7, "mlp_ratio": 2.0, "embed_out": 20,
         "head": {"hidden": 24, "heads": 4, "layers": 2, "intermediate": 32}}),
}


def needed_args(cfg):
    """lion_convert options for what the files cannot tell, where it differs from the defaults."""
    v, f = cfg["vision"], cfg["aggregator"]["fusion"]
    args = []
    if v["dim"] % EVA_HEAD_DIM or v["dim"] // EVA_HEAD_DIM != v["heads"]:
        args += ["--vit-heads", str(v["heads"])]
    if cfg["visual_input"] != "QFORMER":
        if f["heads"] != v["heads"]:
            args += ["--fusion-heads", str(f["heads"])]
        fl = [f["hidden_layer"]] + list(f["cross_layers"])
        if fl != _fusion_rule(v["depth"], f["blocks"]):
            args += ["--fusion-layers", ",".join(str(x) for x in fl)]
    if cfg["tagger"]["head"]["heads"] != 4:
        args += ["--ram-head-heads", str(cfg["tagger"]["head"]["heads"])]
    return args


def _dump_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def _t5_config(l):
    return {"architectures": ["T5ForConditionalGeneration"], "d_ff": l["d_ff"], "d_kv": l["d_kv"],
            "d_model": l["d_model"], "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
            "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
            "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
            "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_decoder_layers": l["decoder_layers"],
            "num_heads": l["heads"], "num_layers": l["encoder_layers"], "pad_token_id": 0,
            "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
            "tie_word_embeddings": False, "vocab_size": l["vocab_size"]}


def _bert_config(q, nvocab):
    return {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": q["hidden"],
            "initializer_range": 0.02, "intermediate_size": q["intermediate"],
            "layer_norm_eps": 1e-12, "max_position_embeddings": q["max_position"],
            "model_type": "bert", "num_attention_heads": q["heads"],
            "num_hidden_layers": q["layers"], "pad_token_id": 0, "type_vocab_size": 2,
            "vocab_size": nvocab}


def make(out, seed=0, visual_input="ALL", size="tiny"):
    if size == "xl":
        raise ValueError("use make_xl for the full-size files")
    os.makedirs(out, exist_ok=True)
    tokdir = os.path.join(out, "_tok")
    over = {"visual_input": visual_input}
    if SIZES[size] is not None:
        over.update(SIZES[size]())
    m = tiny_model(tokdir, seed=seed, **over)
    cfg = m.cfg
    g = torch.Generator().manual_seed(seed + 1)
    sd = {k: v.clone() for k, v in m.state_dict().items()}

    # ---- EVA: add one extra block (blocks.depth) that LION drops
    eva = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    depth = cfg["vision"]["depth"]
    for k in list(eva):
        if k.startswith("blocks.0."):
            eva["blocks.%d.%s" % (depth, k[len("blocks.0."):])] = torch.randn(eva[k].shape, generator=g)
    torch.save(eva, os.path.join(out, "eva_vit_g.pth"))

    # ---- BERT dir
    bdir = os.path.join(out, "bert")
    os.makedirs(bdir, exist_ok=True)
    q = cfg["aggregator"]["qformer"]
    with open(os.path.join(tokdir, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read()
    with open(os.path.join(bdir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write(vocab)
    nvocab = len(vocab.splitlines())
    _dump_json(os.path.join(bdir, "config.json"), _bert_config(q, nvocab))

    # ---- T5 dirs
    t5cfg = _t5_config(cfg["llm"])
    t5 = {k[len("t5_model."):]: v for k, v in sd.items()
          if k.startswith("t5_model.") and ".adapter." not in k}
    for dname in ("t5", "t5_bin"):
        d = os.path.join(out, dname)
        os.makedirs(d, exist_ok=True)
        _dump_json(os.path.join(d, "config.json"), t5cfg)
        with open(os.path.join(tokdir, "spiece.model"), "rb") as src, \
                open(os.path.join(d, "spiece.model"), "wb") as dst:
            dst.write(src.read())
    keys = sorted(t5)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half],
              "model-00002-of-00002.safetensors": keys[half:]}
    wmap = {}
    for fn, ks in shards.items():
        save_file({k: t5[k].to(torch.bfloat16) if k == "shared.weight" else t5[k] for k in ks},
                  os.path.join(out, "t5", fn), {"format": "pt"})
        wmap.update({k: fn for k in ks})
    _dump_json(os.path.join(out, "t5", "model.safetensors.index.json"),
               {"metadata": {"total_size": 0}, "weight_map": wmap})
    tb = dict(t5)
    tb["encoder.embed_tokens.weight"] = t5["shared.weight"]
    tb["decoder.embed_tokens.weight"] = t5["shared.weight"]
    torch.save(tb, os.path.join(out, "t5_bin", "pytorch_model.bin"))
    # the sharded variant stores shared.weight in bf16: make the reference match that
    sd["t5_model.shared.weight"] = t5["shared.weight"].to(torch.bfloat16).float()

    # ---- RAM
    ram = {k[len("ram."):]: v for k, v in sd.items() if k.startswith("ram.")}
    extra = {}
    for k in list(ram):
        if k.startswith("tagging_head."):
            extra["vision_multi." + k[len("tagging_head."):]] = ram.pop(k)
    ram.update(extra)
    for name, mod in m.ram.named_buffers():
        if name.endswith("relative_position_index") or name.endswith("attn_mask"):
            ram["visual_encoder." + name.split("visual_encoder.", 1)[-1]] = mod.clone()
    ram["tag_encoder.encoder.layer.0.attention.self.query.weight"] = torch.randn(4, 4, generator=g)
    ram["text_decoder.cls.predictions.bias"] = torch.randn(7, generator=g)
    ram["class_threshold"] = torch.ones(len(cfg["tagger"]["tags"]))
    torch.save({"model": ram, "epoch": 3}, os.path.join(out, "ram_swin_large_14m.pth"))
    _write_tag_lists(out, cfg["tagger"]["tags"], cfg["tagger"]["thresholds"])

    # ---- LION checkpoint
    lion = {k: v for k, v in sd.items()
            if not k.startswith("visual_encoder.") and not k.startswith("ram.")
            and (not k.startswith("t5_model.") or ".adapter." in k)}
    if "Qformer.bert.embeddings.word_embeddings.weight" in lion:
        lion["Qformer.cls.predictions.bias"] = torch.zeros(7)
        lion["Qformer.bert.embeddings.position_ids"] = torch.arange(q["max_position"])[None]
    torch.save({"model": lion, "config": {"note": "fake"}}, os.path.join(out, "LION-FlanT5-XL.pth"))

    args = needed_args(cfg)
    with open(os.path.join(out, "convert_args.txt"), "w") as fh:
        fh.write(" ".join(args) + "\n")
    torch.save({"state_dict": sd, "cfg": cfg}, os.path.join(out, "reference.pt"))
    m.load_state_dict(sd)
    return m, args


def _write_tag_lists(out, tags, thresholds):
    with open(os.path.join(out, "ram_tag_list.txt"), "w") as f:
        f.write("\n".join(tags) + "\n")
    with open(os.path.join(out, "ram_tag_list_threshold.txt"), "w") as f:
        f.write("\n".join(str(x) for x in thresholds) + "\n")


# ------------------------------------------------------------------ full size (streamed)

def xl_config(visual_input="ALL", t5_layers=None):
    """model.json dict of LION-FlanT5-XL (lion-reference.md: Sizes, data flow)."""
    cfg = tiny_config(visual_input=visual_input)
    cfg["vision"].update(image_size=224, patch_size=14, dim=1408, depth=39, heads=16, mlp_hidden=6144,
                         intermediate_layers=[18, 28, 38])
    ntags = 4585
    cfg["tagger"].update(image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2],
                         heads=[6, 12, 24, 48], window=12, mlp_ratio=4.0, embed_out=512,
                         head={"hidden": 768, "heads": 4, "layers": 2, "intermediate": 3072, "ln_eps": 1e-12},
                         tags=["tag%04d" % i for i in range(ntags)], thresholds=[0.68] * ntags)
    a = cfg["aggregator"]
    a["vision_width"] = 1408
    a["qformer"].update(hidden=768, layers=12, heads=12, intermediate=3072, cross_attention_freq=2,
                        num_query_tokens=32, vocab_size=30523, max_position=512)
    a["fusion"].update(blocks=2, heads=16, intermediate=3072, hidden_layer=38, cross_layers=[28, 18])
    a["proj_hidden"] = 5632
    n = t5_layers or 24
    cfg["llm"].update(d_model=2048, d_ff=5120, d_kv=64, heads=32, encoder_layers=n, decoder_layers=n,
                      vocab_size=32128)
    cfg["llm"]["adapters"]["bottleneck"] = 64
    return cfg


def _rand(shape, dtype, g):
    t = torch.empty(tuple(shape), dtype=torch.float32)
    t.normal_(0.0, 0.02, generator=g)
    return t.to(dtype) if dtype != torch.float32 else t


def _swin_buffers(t):
    """RAM's stored Swin buffers (relative_position_index, attn_mask) for tagger config t."""
    from lion_ref.ram import SwinBlock
    out = {}
    res = t["image_size"] // t["patch_size"]
    for i, d in enumerate(t["depths"]):
        r = res // 2 ** i
        for j in range(d):
            b = SwinBlock(1, r, 1, t["window"], 0 if j % 2 == 0 else t["window"] // 2, 1.0, 1e-5)
            p = "visual_encoder.layers.%d.blocks.%d." % (i, j)
            out[p + "attn.relative_position_index"] = b.attn.relative_position_index.clone()
            if b.attn_mask is not None:
                out[p + "attn_mask"] = b.attn_mask.clone()
    return out


def _bert_layer_shapes(prefix, h, inter, cross):
    s = {}
    for part in (["attention"] + (["crossattention"] if cross else [])):
        for x in ("query", "key", "value"):
            s["%s.%s.self.%s.weight" % (prefix, part, x)] = (h, h)
            s["%s.%s.self.%s.bias" % (prefix, part, x)] = (h,)
        s["%s.%s.output.dense.weight" % (prefix, part)] = (h, h)
        s["%s.%s.output.dense.bias" % (prefix, part)] = (h,)
        s["%s.%s.output.LayerNorm.weight" % (prefix, part)] = (h,)
        s["%s.%s.output.LayerNorm.bias" % (prefix, part)] = (h,)
    s[prefix + ".intermediate.dense.weight"] = (inter, h)
    s[prefix + ".intermediate.dense.bias"] = (inter,)
    s[prefix + ".output.dense.weight"] = (h, inter)
    s[prefix + ".output.dense.bias"] = (h,)
    s[prefix + ".output.LayerNorm.weight"] = (h,)
    s[prefix + ".output.LayerNorm.bias"] = (h,)
    return s


def make_xl(out, seed=0, visual_input="ALL", t5_layers=None, shard_bytes=10 * 1000 ** 3, log=print):
    """Full-size upstream-format files with random weights, one file at a time."""
    from lion_convert import _MetaMode
    from lion_ref.lion import LionModel
    from lion_ref.testing import write_tiny_tokenizers
    os.makedirs(out, exist_ok=True)
    cfg = xl_config(visual_input, t5_layers)
    with _MetaMode():
        meta = LionModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    del meta
    g = torch.Generator().manual_seed(seed)

    def fill(keys, dtype=torch.float32):
        return {k: _rand(shapes[k], dtype, g) for k in keys}

    # tokenizers: tiny spiece (the converter copies it), bert vocab padded to 30522 lines
    tokdir = os.path.join(out, "_tok")
    sp, vp = write_tiny_tokenizers(tokdir)
    vocab = open(vp, encoding="utf-8").read().splitlines()
    vocab += ["[unused%d]" % i for i in range(1000, 1000 + 30522 - len(vocab))]
    bdir = os.path.join(out, "bert")
    os.makedirs(bdir, exist_ok=True)
    with open(os.path.join(bdir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    _dump_json(os.path.join(bdir, "config.json"), _bert_config(cfg["aggregator"]["qformer"], len(vocab)))

    # EVA ViT-g, f16, 40 blocks (the 40th dropped by LION)
    log("writing eva_vit_g.pth")
    ev = {k[len("visual_encoder."):]: k for k in shapes if k.startswith("visual_encoder.")}
    eva = {k: _rand(shapes[full], torch.float16, g) for k, full in ev.items()}
    depth = cfg["vision"]["depth"]
    for k in list(eva):
        if k.startswith("blocks.0."):
            eva["blocks.%d.%s" % (depth, k[len("blocks.0."):])] = _rand(eva[k].shape, torch.float16, g)
    torch.save(eva, os.path.join(out, "eva_vit_g.pth"))
    del eva

    # FlanT5-XL: HF layout, f32, shards of at most shard_bytes, one tensor at a time
    log("writing t5/ shards")
    d = os.path.join(out, "t5")
    os.makedirs(d, exist_ok=True)
    _dump_json(os.path.join(d, "config.json"), _t5_config(cfg["llm"]))
    with open(sp, "rb") as src, open(os.path.join(d, "spiece.model"), "wb") as dst:
        dst.write(src.read())
    t5keys = [k for k in shapes if k.startswith("t5_model.") and ".adapter." not in k]
    groups, cur, size = [], [], 0
    for k in t5keys:
        nb = 4 * _numel(shapes[k])
        if cur and size + nb > shard_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append(k)
        size += nb
    groups.append(cur)
    wmap, total = {}, 0
    for i, ks in enumerate(groups):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(groups))
        ents = [(k[len("t5_model."):], torch.float32, shapes[k]) for k in ks]
        with StreamWriter(os.path.join(d, fn), ents, {"format": "pt"}) as w:
            for k in ks:
                w.write(k[len("t5_model."):], _rand(shapes[k], torch.float32, g))
                wmap[k[len("t5_model."):]] = fn
                total += 4 * _numel(shapes[k])
    _dump_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": wmap})

    # RAM: tagging path + stored buffers + BERT-base-sized extras (tag_encoder, text_decoder)
    log("writing ram_swin_large_14m.pth")
    ram = {}
    for k in shapes:
        if k.startswith("ram."):
            rk = k[4:]
            if rk.startswith("tagging_head."):
                rk = "vision_multi." + rk[len("tagging_head."):]
            ram[rk] = _rand(shapes[k], torch.float32, g)
    ram.update(_swin_buffers(cfg["tagger"]))
    for pre, n in (("tag_encoder.encoder.layer", 12), ("text_decoder.bert.encoder.layer", 12)):
        for i in range(n):
            for k, s in _bert_layer_shapes("%s.%d" % (pre, i), 768, 3072, True).items():
                ram[k] = _rand(s, torch.float32, g)
    ram["class_threshold"] = torch.full((len(cfg["tagger"]["tags"]),), 0.68)
    torch.save({"model": ram, "epoch": 5}, os.path.join(out, "ram_swin_large_14m.pth"))
    del ram
    _write_tag_lists(out, cfg["tagger"]["tags"], cfg["tagger"]["thresholds"])

    # LION's own parameters, f32
    log("writing LION-FlanT5-XL.pth")
    lk = [k for k in shapes if not k.startswith(("visual_encoder.", "ram."))
          and (not k.startswith("t5_model.") or ".adapter." in k)]
    lion = fill(lk)
    if "Qformer.bert.embeddings.word_embeddings.weight" in lion:
        lion["Qformer.cls.predictions.bias"] = torch.zeros(30523)
        lion["Qformer.bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save({"model": lion, "config": {"note": "fake, full size"}}, os.path.join(out, "LION-FlanT5-XL.pth"))
    del lion
    args = needed_args(cfg)
    with open(os.path.join(out, "convert_args.txt"), "w") as fh:
        fh.write(" ".join(args) + "\n")
    return cfg


def _numel(shape):
    n = 1
    for x in shape:
        n *= int(x)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--visual-input", default="ALL", choices=["ALL", "QFORMER", "AGGREGATOR"])
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES) + ["xl"])
    ap.add_argument("--t5-layers", type=int, default=0, help="xl only: N + N T5 layers instead of 24 + 24")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.size == "xl":
        make_xl(a.out, a.seed, a.visual_input, a.t5_layers or None)
        args = open(os.path.join(a.out, "convert_args.txt")).read().split()
    else:
        _, args = make(a.out, a.seed, a.visual_input, a.size)
    print("wrote fake upstream files to %s; convert with: %s" % (a.out, " ".join(args) or "(no extra options)"))


if __name__ == "__main__":
    main()
