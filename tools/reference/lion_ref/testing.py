"""Helpers for tests and tiny models: a tiny model.json config and tiny tokenizer files.

tiny_config(**over) -> model.json dict with every stage small (CPU-fast).
write_tiny_tokenizers(dir) -> (spiece path, vocab path): trains a small sentencepiece
    unigram model (pad 0, eos 1, unk 2, no bos, like T5's) and writes a small WordPiece
    vocab.txt (BERT layout: [PAD]=0, [unused..], [UNK], [CLS], [SEP], [MASK], chars, words).
"""
import copy
import os

TINY_CORPUS = [
    "a dog is sitting on the grass next to a man",
    "what is in the image? describe the picture in detail",
    "according to the tags, you are allowed to use or partially use the following tags",
    "the cat sleeps on a red sofa in the living room",
    "answer: [0.440,0.060,0.650,0.367] a person holding an umbrella",
    "two people are riding bikes down the street",
    "there is a pet and a man, a woman and a child playing",
    "please give the bounding box of the region described by the sentence",
    "According to the tags: What is in the Image? Answer the Question.",
]


def tiny_config(**over):
    cfg = {
        "format": "lion-model", "format_version": 1, "name": "test-tiny-lion",
        "visual_input": "ALL",
        "vision": {"file": "vision.safetensors", "image_size": 28, "patch_size": 14, "dim": 32,
                   "depth": 4, "heads": 4, "mlp_hidden": 64, "ln_eps": 1e-6,
                   "intermediate_layers": [1, 2, 3], "resize": "bicubic",
                   "mean": [0.48145466, 0.4578275, 0.40821073],
                   "std": [0.26862954, 0.26130258, 0.27577711]},
        "tagger": {"file": "tagger.safetensors", "image_size": 32, "patch_size": 4, "embed_dim": 8,
                   "depths": [2, 2], "heads": [2, 4], "window": 4, "mlp_ratio": 4.0, "ln_eps": 1e-5,
                   "embed_out": 16, "head": {"hidden": 24, "heads": 4, "layers": 2,
                                             "intermediate": 32, "ln_eps": 1e-12},
                   "resize": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "tags": ["dog", "man", "pet", "cat", "grass"],
                   "thresholds": [0.5, 0.5, 0.5, 0.5, 0.5], "delete_tags": []},
        "aggregator": {"file": "aggregator.safetensors", "vision_width": 32,
                       "qformer": {"hidden": 24, "layers": 2, "heads": 4, "intermediate": 40,
                                   "ln_eps": 1e-12, "cross_attention_freq": 2, "num_query_tokens": 4,
                                   "vocab_size": None, "max_position": 128, "max_text_len": 128,
                                   "vocab": "vocab.txt"},
                       "fusion": {"blocks": 2, "heads": 4, "intermediate": 48, "ln_eps": 1e-12,
                                  "hidden_layer": 3, "cross_layers": [2, 1]},
                       "proj_hidden": 128},
        "llm": {"file": "llm.safetensors", "d_model": 16, "d_ff": 32, "d_kv": 4, "heads": 4,
                "encoder_layers": 2, "decoder_layers": 2, "vocab_size": None,
                "rel_buckets": 32, "rel_max_distance": 128, "ln_eps": 1e-6, "ff_act": "gelu",
                "adapters": {"num": 2, "bottleneck": 8}, "spiece": "spiece.model",
                "pad_id": 0, "eos_id": 1, "decoder_start_id": 0,
                "tag_prompt": "According to <extra_id_0>, you are allowed to use or partially use the following tags: [{}]. ",
                "soft_prompt_token": "<extra_id_0>", "max_text_len": 128,
                "generation": {"num_beams": 5, "max_new_tokens": 8, "min_length": 1,
                               "repetition_penalty": 1.5, "length_penalty": 1.0, "top_p": 0.9,
                               "temperature": 1.0, "do_sample": False}},
    }
    for k, v in over.items():
        cfg[k] = v
    if cfg.get("visual_input", "ALL") != "ALL":      # upstream: 2 adapters only for ALL
        cfg["llm"]["adapters"]["num"] = 1
    return copy.deepcopy(cfg)


def write_tiny_tokenizers(d, spm_vocab=90):
    import sentencepiece as spm
    os.makedirs(d, exist_ok=True)
    corpus = os.path.join(d, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(4):
            f.write("\n".join(TINY_CORPUS) + "\n")
    prefix = os.path.join(d, "spiece")
    spm.SentencePieceTrainer.Train(
        input=corpus, model_prefix=prefix, vocab_size=spm_vocab, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        minloglevel=2, hard_vocab_limit=False)
    os.remove(corpus)
    if os.path.exists(prefix + ".vocab"):
        os.remove(prefix + ".vocab")
    words = sorted(set(w for s in TINY_CORPUS for w in s.replace("?", " ").replace(",", " ")
                       .replace(":", " ").replace("[", " ").replace("]", " ").split()))
    vocab = ["[PAD]"] + ["[unused%d]" % i for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~abcdefghijklmnopqrstuvwxyz")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += ["un", "##aff", "##able", "play", "##ing", "hello", "world", "the", "cafe"]
    vocab += [w for w in words if w not in vocab]
    seen, out = set(), []
    for w in vocab:
        if w not in seen:
            seen.add(w)
            out.append(w)
    vpath = os.path.join(d, "vocab.txt")
    with open(vpath, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return prefix + ".model", vpath


def fill_vocab_sizes(cfg, spiece_path, vocab_path):
    """Set llm.vocab_size (spm size + 100 extra ids) and qformer.vocab_size (vocab + [DEC])."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor()
    sp.Load(spiece_path)
    cfg["llm"]["vocab_size"] = sp.GetPieceSize() + 100
    with open(vocab_path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    cfg["aggregator"]["qformer"]["vocab_size"] = n + 1
    return cfg


def tiny_model(d, seed=0, **over):
    """Build a random tiny LionModel with tokenizers in directory d (files written there)."""
    from .lion import LionModel
    from .tokenizers import BertTokenizer, T5Tokenizer
    sp, vp = write_tiny_tokenizers(d)
    cfg = fill_vocab_sizes(tiny_config(**over), sp, vp)
    m = LionModel(cfg).init_weights(seed).eval()
    m.set_tokenizers(T5Tokenizer(sp), BertTokenizer(vp))
    m.model_dir = d
    return m


def decisive_llm(t5, lm_scale, eos_scale=1.0):
    """Make a random T5 (+ adapters) a useful generation test subject, in place, drawing
    from torch's global generator (the caller seeds it): router ratios in [0, 1) and
    adapters of std 0.1 (both start near zero, which would hide them), and logits made peaky
    by scaling the lm_head, so that no token choice flips on float rounding between C and
    PyTorch; eos_scale > 1 makes </s> (id 1) likely enough that stopping is exercised."""
    import torch
    with torch.no_grad():
        for n, p in t5.named_parameters():
            if "router_ratio" in n:
                p.copy_(torch.rand_like(p))
            elif "adapters" in n and not n.endswith(".scale"):
                p.normal_(0, 0.1)
        t5.lm_head.weight.mul_(lm_scale)
        if eos_scale != 1.0:
            t5.lm_head.weight[1].mul_(eos_scale)
    return t5
