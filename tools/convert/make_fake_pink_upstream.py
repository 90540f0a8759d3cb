#!/usr/bin/env python3
"""Random Pink upstream files in the released layouts, at tiny sizes, for tests of
pink_convert.py (and of the C model code on a converted directory).

    make_fake_pink_upstream.py OUT [--seed N] [--llama-format safetensors|bin] [--legacy true|false]

writes
  OUT/clip/    openai/clip-vit-large-patch14's layout: config.json (a CLIPConfig with
               vision_config and text_config), preprocessor_config.json, model.safetensors
               holding CLIPModel's keys (vision_model.*, text_model.*, visual_projection,
               text_projection, logit_scale, the position_ids buffers)
  OUT/llama/   Llama-2-7b-chat-hf's layout: config.json (LlamaConfig), tokenizer.model (a
               LLaMA-style SentencePiece BPE trained here: byte fallback, identity normalizer,
               unk 0 bos 1 eos 2), tokenizer_config.json, generation_config.json, the weights as
               two safetensors shards + model.safetensors.index.json (or pytorch_model-*.bin +
               pytorch_model.bin.index.json, with the rotary inv_freq buffers old .bin files hold)
  OUT/pink/    Pink_base's layout (pink/train/pink_trainer.py _save): config.json (PinkConfig:
               the LlamaConfig plus clip_select_layer, adapter_*, crop_size, num_patches,
               im_patch_token), saved_parameters.pth (torch.save of the trained parameters:
               mm_projector, the CLIP adapters of the layers up to the selected one, the LLaMA
               adapters, and model.embed_tokens.weight / lm_head.weight with rows for the 13
               added tokens), tokenizer.model, tokenizer_config.json (added_tokens_decoder,
               legacy), added_tokens.json, special_tokens_map.json

Sizes: CLIP 28 px / 14 px patches (4 patches), width 32, 3 layers, 4 heads; LLaMA width 48,
2 layers, 6 heads, 2 key/value heads, MLP 96; adapters of dim 4 in attention and MLP on both
towers, SiLU in the LLaMA attention adapters (adapter_non_linear). Every tensor is random (the
adapters' up-projections too, which upstream initialises to zero), and the LLaMA file's
embedding rows differ from Pink's, so a converter that takes a tensor from the wrong file shows.
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import torch  # noqa: E402

from lion_ref.safetensors_io import save_file  # noqa: E402
from pink_ref.clip import PinkVision  # noqa: E402
from pink_ref.llama import LlamaForCausalLM  # noqa: E402
from pink_ref.tokenizer import PINK_ADDED_TOKENS  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_config():
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=28, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=16,
                  model_type="clip_vision_model")
    text = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=50, max_position_embeddings=8, model_type="clip_text_model")
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16,
            "vision_config": vision, "text_config": text}


def llama_config(vocab):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 48,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
            "vocab_size": vocab, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "tie_word_embeddings": False, "torch_dtype": "float16"}


def pink_config(llama, vocab, patches, im_patch):
    c = dict(llama)
    c.update({"architectures": ["PinkModel"], "model_type": "pink", "vocab_size": vocab,
              "llama_path": "/path/to/Llama-2-7b-chat-hf", "clip_path": "openai/clip-vit-large-patch14",
              "clip_select_layer": -2, "adapter_vision_enable": True, "adapter_vision_dim": 4,
              "adapter_vision_scale": 1.0, "adapter_vision_dropout": 0.1, "adapter_attn": True,
              "adapter_mlp": True, "adapter_llm_enable": True, "adapter_llm_dim": 4, "adapter_llm_scale": 1.0,
              "adapter_llm_dropout": 0.1, "adapter_non_linear": True, "crop_size": 28, "num_patches": patches,
              "im_patch_token": im_patch, "use_cache": False})
    return c


def train_tokenizer(d, seed):
    """A LLaMA-style BPE (Llama-2's trainer settings at a tiny vocabulary)."""
    import sentencepiece as spm
    rng = random.Random(seed)
    words = ("the a of to in is on at with dog cat man woman left right red blue green where describe image "
             "region answer question picture table car tree sky person holding standing coordinates "
             "café über naïve 日本 語 😀").split()
    corpus = os.path.join(d, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(3000):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
                    + " [0.%03d,0.%03d]\n" % (rng.randint(0, 999), rng.randint(0, 999)))
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(d, "tokenizer"), model_type="bpe",
                                   vocab_size=400, byte_fallback=True, split_digits=True,
                                   normalization_rule_name="identity", add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, num_threads=1,
                                   minloglevel=2, shuffle_input_sentence=False)
    os.remove(corpus)
    os.remove(os.path.join(d, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    return sp.get_piece_size()


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


def tokenizer_config(legacy, added=None):
    c = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
         "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer", "sp_model_kwargs": {}}
    if legacy is not None:
        c["legacy"] = legacy
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])}
    for t, i in (added or {}).items():
        decoder[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True}
    c["added_tokens_decoder"] = decoder
    return c


def make(out, seed=0, llama_format="safetensors", legacy=False):
    torch.manual_seed(seed)
    dirs = {k: os.path.join(out, k) for k in ("clip", "llama", "pink")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    pieces = train_tokenizer(dirs["llama"], seed)
    vocab = pieces + len(PINK_ADDED_TOKENS)
    added = {t: pieces + i for i, t in enumerate(PINK_ADDED_TOKENS)}
    ccfg = clip_config()
    lcfg = llama_config(pieces)
    v = ccfg["vision_config"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    pcfg = pink_config(lcfg, vocab, patches, added["<im_patch>"])

    vision = PinkVision(pcfg, ccfg).init_weights()
    llm = LlamaForCausalLM(pcfg).init_weights()
    vs, ls = vision.state_dict(), llm.state_dict()

    # ---- CLIP: CLIPModel's keys; Pink's "vision_model.vision_model.X" is CLIP's "vision_model.X"
    clip = {}
    for k, t in vs.items():
        if k.startswith("vision_model.vision_model.") and ".adapter_" not in k:
            clip[k[len("vision_model."):]] = t
    d = v["hidden_size"]
    clip["vision_model.post_layernorm.weight"] = torch.ones(d) + 0.1 * torch.randn(d)
    clip["vision_model.post_layernorm.bias"] = 0.1 * torch.randn(d)
    clip["vision_model.embeddings.position_ids"] = torch.arange(patches + 1)[None]
    clip["visual_projection.weight"] = torch.randn(16, d)
    clip["text_projection.weight"] = torch.randn(16, 24)
    clip["logit_scale"] = torch.tensor(2.6592)
    clip["text_model.embeddings.token_embedding.weight"] = torch.randn(50, 24)
    clip["text_model.embeddings.position_embedding.weight"] = torch.randn(8, 24)
    clip["text_model.final_layer_norm.weight"] = torch.ones(24)
    save_file({k: t.contiguous() for k, t in clip.items()}, os.path.join(dirs["clip"], "model.safetensors"))
    write_json(os.path.join(dirs["clip"], "config.json"), ccfg)
    write_json(os.path.join(dirs["clip"], "preprocessor_config.json"),
               {"crop_size": v["image_size"], "do_center_crop": True, "do_normalize": True, "do_resize": True,
                "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3, "size": v["image_size"]})

    # ---- Llama-2 HF dir: the base weights (f16 as released), its own 32000-style embedding
    base = {k: t.to(torch.float16) for k, t in ls.items() if ".adapter_" not in k}
    base["model.embed_tokens.weight"] = torch.randn(pieces, lcfg["hidden_size"]).half()
    base["lm_head.weight"] = torch.randn(pieces, lcfg["hidden_size"]).half()
    names = sorted(base)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    wmap = {}
    for i, part in enumerate(shards):
        if llama_format == "bin":
            fn = "pytorch_model-%05d-of-%05d.bin" % (i + 1, len(shards))
            sd = {k: base[k] for k in part}
            for k in part:  # old HF .bin files hold the rotary buffers
                if k.endswith("self_attn.q_proj.weight"):
                    hd = lcfg["hidden_size"] // lcfg["num_attention_heads"]
                    sd[k.replace("q_proj.weight", "rotary_emb.inv_freq")] = 1.0 / (
                        10000 ** (torch.arange(0, hd, 2).float() / hd))
            torch.save(sd, os.path.join(dirs["llama"], fn))
            wmap.update({k: fn for k in sd})
        else:
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
            save_file({k: base[k].contiguous() for k in part}, os.path.join(dirs["llama"], fn))
            wmap.update({k: fn for k in part})
    idx = "pytorch_model.bin.index.json" if llama_format == "bin" else "model.safetensors.index.json"
    write_json(os.path.join(dirs["llama"], idx), {"metadata": {"total_size": 0}, "weight_map": wmap})
    write_json(os.path.join(dirs["llama"], "config.json"), lcfg)
    write_json(os.path.join(dirs["llama"], "tokenizer_config.json"), tokenizer_config(False))
    write_json(os.path.join(dirs["llama"], "generation_config.json"),
               {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, "temperature": 0.6, "top_p": 0.9})

    # ---- Pink's checkpoint: what requires_grad in stage 2, plus the embeddings (pink_trainer._save)
    saved = {"mm_projector.weight": vs["mm_projector.weight"], "mm_projector.bias": vs["mm_projector.bias"]}
    for k, t in vs.items():
        if ".adapter_" in k:
            saved[k] = t
    for k, t in ls.items():
        if ".adapter_" in k:
            saved[k] = t
    saved["model.embed_tokens.weight"] = ls["model.embed_tokens.weight"].to(torch.bfloat16)
    saved["lm_head.weight"] = ls["lm_head.weight"].to(torch.bfloat16)
    torch.save(saved, os.path.join(dirs["pink"], "saved_parameters.pth"))
    write_json(os.path.join(dirs["pink"], "config.json"), pcfg)
    import shutil
    shutil.copyfile(os.path.join(dirs["llama"], "tokenizer.model"), os.path.join(dirs["pink"], "tokenizer.model"))
    write_json(os.path.join(dirs["pink"], "tokenizer_config.json"), tokenizer_config(legacy, added))
    write_json(os.path.join(dirs["pink"], "added_tokens.json"), added)
    write_json(os.path.join(dirs["pink"], "special_tokens_map.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    return dirs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llama-format", default="safetensors", choices=["safetensors", "bin"])
    ap.add_argument("--legacy", default="false", choices=["true", "false", "absent"],
                    help="the \"legacy\" of Pink's tokenizer_config.json")
    a = ap.parse_args(argv)
    legacy = {"true": True, "false": False, "absent": None}[a.legacy]
    dirs = make(a.out, a.seed, a.llama_format, legacy)
    print("make_fake_pink_upstream: wrote %s" % ", ".join(sorted(dirs.values())))


if __name__ == "__main__":
    main()
