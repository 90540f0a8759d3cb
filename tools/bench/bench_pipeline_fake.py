#!/usr/bin/python3
"""bench_pipeline's source writer: random LION checkpoints in the released upstream files'
layouts, at true LION-FlanT5-XL widths, with the depths truncated.

    bench_pipeline_fake.py plan OUT_DIR [depth options]   prints a JSON plan (config, bytes)
    bench_pipeline_fake.py make OUT_DIR [depth options]   writes the files

Depth options: --vit-blocks N (EVA ViT-g blocks LION uses; the file holds N + 1, as upstream),
--qformer-layers N, --t5-encoder-layers N, --t5-decoder-layers N, --swin-depths A,B,C,D,
--seed S.  Widths, heads, vocabularies, image sizes and everything else are
tools/convert/make_fake_upstream.py's ``xl`` preset (its ``make_xl`` writes the files; this
module only shortens its config), so the files convert with tools/convert/lion-convert and the
options in OUT_DIR/convert_args.txt, and no size flag.

Not a tool on its own: tools/bench/bench_pipeline runs it in a child process (torch is loaded
there and leaves with it).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "convert"))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

# RAM's checkpoint carries a BERT-base-sized tag_encoder and text_decoder that LION does not
# use (make_xl writes them, the converter drops them): 2 x 12 layers of 768 with cross-attention
RAM_EXTRA_LAYERS = 24
RAM_EXTRA_LAYER_PARAMS = 2 * (4 * 768 * 768 + 4 * 768 + 2 * 768) + 2 * 768 * 3072 + 3072 + 768 + 2 * 768


def depth_args(ap):
    ap.add_argument("--vit-blocks", type=int, default=4)
    ap.add_argument("--qformer-layers", type=int, default=12)
    ap.add_argument("--t5-encoder-layers", type=int, default=2)
    ap.add_argument("--t5-decoder-layers", type=int, default=2)
    ap.add_argument("--swin-depths", default="2,2,2,2")
    ap.add_argument("--seed", type=int, default=0)


def swin_depths(text):
    d = [int(x) for x in text.split(",") if x.strip()]
    if len(d) != 4 or min(d) < 1:
        raise ValueError("--swin-depths: four positive counts (Swin-L has 4 stages: 2,2,18,2)")
    return d


def config_fn(mfu, a):
    """xl_config with the depths of a: the same signature, for make_xl to call."""
    base = mfu.xl_config
    depths = swin_depths(a.swin_depths)

    def cfg_fn(visual_input="ALL", t5_layers=None):
        cfg = base(visual_input, t5_layers)
        v, agg = cfg["vision"], cfg["aggregator"]
        fl = mfu._fusion_rule(a.vit_blocks, agg["fusion"]["blocks"])
        if fl is None:
            raise ValueError("--vit-blocks %d: the aggregator reads %d distinct ViT outputs; at least %d blocks"
                             % (a.vit_blocks, agg["fusion"]["blocks"] + 1, agg["fusion"]["blocks"] + 1))
        v["depth"] = a.vit_blocks
        v["intermediate_layers"] = sorted(set(fl))
        agg["fusion"].update(hidden_layer=fl[0], cross_layers=fl[1:])
        if a.qformer_layers < agg["qformer"]["cross_attention_freq"]:
            raise ValueError("--qformer-layers %d: at least %d (the cross-attention frequency, so that the "
                             "converter can read it)" % (a.qformer_layers, agg["qformer"]["cross_attention_freq"]))
        agg["qformer"]["layers"] = a.qformer_layers
        cfg["llm"].update(encoder_layers=a.t5_encoder_layers, decoder_layers=a.t5_decoder_layers)
        cfg["tagger"]["depths"] = depths
        return cfg

    return cfg_fn


def plan(mfu, a):
    """The config and the bytes the sources and a converted model take (for progress bars)."""
    import torch
    from lion_convert import _MetaMode
    from lion_ref.lion import LionModel
    cfg = config_fn(mfu, a)()
    with _MetaMode():
        meta = LionModel(cfg)
    numel = {"vision": 0, "t5": 0, "tagger": 0, "lion": 0}
    for k, p in meta.named_parameters():
        n = p.numel()
        if k.startswith("visual_encoder."):
            numel["vision"] += n
        elif k.startswith("ram."):
            numel["tagger"] += n
        elif k.startswith("t5_model.") and ".adapter." not in k:
            numel["t5"] += n
        else:
            numel["lion"] += n
    total = sum(numel.values())
    vit_file = numel["vision"] * (a.vit_blocks + 1) / a.vit_blocks  # one block more in the file
    src = 2 * vit_file + 4 * (numel["t5"] + numel["tagger"] + numel["lion"]
                              + RAM_EXTRA_LAYERS * RAM_EXTRA_LAYER_PARAMS)
    del meta, torch
    return {"config": {k: cfg[k] for k in ("vision", "aggregator", "llm", "tagger")},
            "params": numel, "source_bytes": int(src),
            "converted_bytes": {"f32": 4 * total, "f16": 2 * total, "bf16": 2 * total}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["plan", "make"])
    ap.add_argument("out")
    depth_args(ap)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    import make_fake_upstream as mfu
    try:
        if a.what == "plan":
            p = plan(mfu, a)
            for k in ("tags", "thresholds"):
                p["config"]["tagger"].pop(k, None)
            print(json.dumps(p))
            return 0
        mfu.xl_config = config_fn(mfu, a)  # make_xl looks it up by name at call time
        mfu.make_xl(a.out, a.seed, "ALL", None, log=lambda m: print(m, flush=True))
    except ValueError as e:
        sys.stderr.write("bench_pipeline_fake: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
