#!/usr/bin/env python3
"""Write tiny checkpoints in the layouts of LION's released upstream files.

    python3 tools/convert/make_fake_upstream.py OUT_DIR [--seed 0]

Creates in OUT_DIR:
  eva_vit_g.pth          plain state dict, EVA keys, one block MORE than LION uses
                         (upstream drops the 40th block)
  bert/                  config.json + vocab.txt (bert-base-uncased layout)
  t5/                    config.json, spiece.model, sharded safetensors
                         (model-00001-of-00002.safetensors ... + model.safetensors.index.json)
  t5_bin/                the same weights as a single pytorch_model.bin (with the tied
                         encoder/decoder.embed_tokens copies HF .bin files carry)
  ram_swin_large_14m.pth {"model": RAM keys, incl. non-tagging extras (tag_encoder.*,
                         text_decoder.*, relative_position_index, attn_mask, class_threshold)
                         and the tagging head stored under the legacy "vision_multi" name}
  ram_tag_list.txt, ram_tag_list_threshold.txt
  LION-FlanT5-XL.pth     {"model": LION's own parameters (Q-Former, projections,
                         aggregator, adapters, soft prompt) + extras (Qformer.cls.*, position_ids)}
  reference.pt           the full reference state dict + model.json dict (for tests)
  convert_args.txt       the lion_convert options that match these files
Returns (python API ``make(out_dir, seed)``) the LionModel these files encode.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

from lion_ref.safetensors_io import save_file  # noqa: E402
from lion_ref.testing import tiny_model  # noqa: E402


def make(out, seed=0, visual_input="ALL"):
    os.makedirs(out, exist_ok=True)
    tokdir = os.path.join(out, "_tok")
    over = {"visual_input": visual_input}
    m = tiny_model(tokdir, seed=seed, **over)
    if visual_input != "ALL":
        pass
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
    json.dump({"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
               "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": q["hidden"],
               "initializer_range": 0.02, "intermediate_size": q["intermediate"],
               "layer_norm_eps": 1e-12, "max_position_embeddings": q["max_position"],
               "model_type": "bert", "num_attention_heads": q["heads"],
               "num_hidden_layers": q["layers"], "pad_token_id": 0, "type_vocab_size": 2,
               "vocab_size": nvocab}, open(os.path.join(bdir, "config.json"), "w"), indent=1)

    # ---- T5 dirs
    l = cfg["llm"]
    t5cfg = {"architectures": ["T5ForConditionalGeneration"], "d_ff": l["d_ff"], "d_kv": l["d_kv"],
             "d_model": l["d_model"], "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
             "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
             "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
             "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_decoder_layers": l["decoder_layers"],
             "num_heads": l["heads"], "num_layers": l["encoder_layers"], "pad_token_id": 0,
             "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
             "tie_word_embeddings": False, "vocab_size": l["vocab_size"]}
    t5 = {k[len("t5_model."):]: v for k, v in sd.items()
          if k.startswith("t5_model.") and ".adapter." not in k}
    for dname in ("t5", "t5_bin"):
        d = os.path.join(out, dname)
        os.makedirs(d, exist_ok=True)
        json.dump(t5cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
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
    json.dump({"metadata": {"total_size": 0}, "weight_map": wmap},
              open(os.path.join(out, "t5", "model.safetensors.index.json"), "w"), indent=1)
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
    with open(os.path.join(out, "ram_tag_list.txt"), "w") as f:
        f.write("\n".join(cfg["tagger"]["tags"]) + "\n")
    with open(os.path.join(out, "ram_tag_list_threshold.txt"), "w") as f:
        f.write("\n".join(str(x) for x in cfg["tagger"]["thresholds"]) + "\n")

    # ---- LION checkpoint
    lion = {k: v for k, v in sd.items()
            if not k.startswith("visual_encoder.") and not k.startswith("ram.")
            and (not k.startswith("t5_model.") or ".adapter." in k)}
    if "Qformer.bert.embeddings.word_embeddings.weight" in lion:
        lion["Qformer.cls.predictions.bias"] = torch.zeros(7)
        lion["Qformer.bert.embeddings.position_ids"] = torch.arange(q["max_position"])[None]
    torch.save({"model": lion, "config": {"note": "fake"}}, os.path.join(out, "LION-FlanT5-XL.pth"))

    f = cfg["aggregator"]["fusion"]
    args = ["--vit-heads", str(cfg["vision"]["heads"]), "--fusion-heads", str(f["heads"]),
            "--fusion-layers", ",".join(str(x) for x in [f["hidden_layer"]] + f["cross_layers"]),
            "--ram-image-size", str(cfg["tagger"]["image_size"]),
            "--ram-head-heads", str(cfg["tagger"]["head"]["heads"])]
    with open(os.path.join(out, "convert_args.txt"), "w") as fh:
        fh.write(" ".join(args) + "\n")
    torch.save({"state_dict": sd, "cfg": cfg}, os.path.join(out, "reference.pt"))
    m.load_state_dict(sd)
    return m, args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--visual-input", default="ALL", choices=["ALL", "QFORMER", "AGGREGATOR"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    _, args = make(a.out, a.seed, a.visual_input)
    print("wrote fake upstream files to %s; convert with: %s" % (a.out, " ".join(args)))


if __name__ == "__main__":
    main()
