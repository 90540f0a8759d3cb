#!/usr/bin/env python3
"""pink-convert: turn Pink's released files into our model directory (docs/model-format.md,
family "pink").

    tools/convert/pink_convert.py --pink Pink_base/ --llama Llama-2-7b-chat-hf/ \\
        --clip clip-vit-large-patch14/ --out models/pink-base [--dtype f16|bf16|f32]

Inputs, as upstream loads them (pink/train/train.py, demo.py, inference.ipynb):
  --pink   Pink's checkpoint directory (HF SY-Xuan/Pink_base, Pink_object365, Pink_RefCOCO):
           config.json (PinkConfig: a LlamaConfig plus clip_select_layer, adapter_*, crop_size),
           saved_parameters.pth (pink_trainer._save: torch.save of the trained parameters -
           mm_projector, adapters, model.embed_tokens.weight and lm_head.weight with the added
           tokens' rows), the tokenizer files (tokenizer.model, tokenizer_config.json,
           added_tokens.json)
  --llama  the Llama-2-7b-chat-hf directory: config.json, tokenizer.model, weights
           (*.safetensors or pytorch_model*.bin, sharded with an index or not)
  --clip   the openai/clip-vit-large-patch14 directory: config.json (CLIPConfig or
           CLIPVisionConfig), weights, preprocessor_config.json (mean/std, optional)
Upstream's loading order is kept: the LLaMA and CLIP weights first, then every key of
saved_parameters.pth over them (from_pretrained(state_dict=llama + saved parameters); the CLIP
tower comes from --clip, Pink's "vision_model.vision_model.X" being CLIP's "vision_model.X").

Every dimension is read from the files: CLIP's from its config.json (HF defaults for what it
leaves out), LLaMA's from --llama's config.json (Pink's config.json repeats them: they must
agree), Pink's options from its config.json (PinkConfig's defaults for what it leaves out), the
vocabulary from the embedding's rows, the adapter width from the adapter tensors; the
tokenizer's added tokens from Pink's tokenizer files, its `legacy` flag from Pink's
tokenizer_config.json (else --llama's, else HF 4.38's default true).

Outputs: vision.safetensors (the CLIP tower up to the selected layer, its adapters, mm_projector),
llm.safetensors (the LLaMA decoder with its adapters), tokenizer.model, model.json. Keys keep
Pink's state-dict names (clip.c and llama.c bind them). CLIP layers after the selected one,
post_layernorm, the text tower and the rotary buffers are not written: nothing reads them.

Memory: the tensor lists are read first (ckpt_reader: safetensors headers, lazy torch zip
unpickling); all checks run on names and shapes; then each output's header is written and the
tensors are copied one at a time (read, cast, written at their offset, freed), with progress
lines. Every failure is one line, ``pink-convert: error: <file>: ...`` naming the tensor and
the expected and found shapes where there is one, and exit status 2.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import lion_convert as lc  # noqa: E402
from ckpt_reader import CkptError, fmt_shape  # noqa: E402
from lion_convert import ConvertError, need, open_pth, read_json, shape_error  # noqa: E402
from pink_ref import prompt as pink_prompt  # noqa: E402
from pink_ref.config import llama_config, pink_options, vision_config  # noqa: E402

PROG = "pink-convert"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]   # upstream's transforms.Normalize (demo.py, BaseDataset)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
VISION_PREFIX = "vision_model.vision_model."       # Pink's name of CLIP's "vision_model."
# upstream inference (demo.py, inference.ipynb, pink/eval): greedy, up to 1024 new tokens
GENERATION = {"num_beams": 1, "max_new_tokens": 1024, "min_length": 0, "repetition_penalty": 1.0,
              "length_penalty": 1.0, "top_p": 1.0, "temperature": 1.0, "do_sample": False}


def log(msg):
    bar = lc._BAR   # lion_convert's bar on a terminal: clear its line, its next update redraws it
    if bar is not None and bar.stream is sys.stderr and bar.done < bar.total:
        sys.stderr.write("\r\033[K")
        bar.last_draw = 0.0
    sys.stderr.write("%s: %s\n" % (PROG, msg))
    sys.stderr.flush()


lc.log = log   # the helpers reused from lion_convert (open_hf_dir, open_pth) report as pink-convert


# ------------------------------------------------------------------ configs

def read_pink_dir(d):
    if not os.path.isdir(d):
        raise ConvertError("Pink checkpoint directory not found: %s" % d)
    cfg_p = os.path.join(d, "config.json")
    cfg = read_json(cfg_p, "Pink")
    ckpt_p = os.path.join(d, "saved_parameters.pth")
    if not os.path.isfile(ckpt_p):
        raise ConvertError("Pink: missing %s (pink_trainer.py saves the trained parameters there)" % ckpt_p)
    return cfg, cfg_p, open_pth(ckpt_p, "Pink checkpoint")


def check_same(pcfg, pcfg_p, lcfg, lcfg_p, keys):
    """Pink's config.json is a LlamaConfig too: the LLaMA dimensions it repeats must agree."""
    for k in keys:
        if k in pcfg and pcfg[k] is not None and k in lcfg and lcfg[k] is not None and pcfg[k] != lcfg[k]:
            raise ConvertError("%s: %s %r, but %s says %r" % (pcfg_p, k, pcfg[k], lcfg_p, lcfg[k]))


def tokenizer_settings(pink_dir, llama_dir, n_pieces, sp):
    """legacy, add_bos, add_eos, clean_up and the added tokens [(content, id)], HF's way."""
    def cfg_of(d):
        p = os.path.join(d, "tokenizer_config.json")
        return (read_json(p, "tokenizer"), p) if os.path.isfile(p) else ({}, None)
    pt, pt_p = cfg_of(pink_dir)
    lt, _ = cfg_of(llama_dir)
    merged = dict(lt)
    merged.update(pt)
    legacy = merged.get("legacy")
    if legacy is None:
        legacy = True   # transformers 4.38's LlamaTokenizer when tokenizer_config.json has none
    added = {}
    for src in ("added_tokens_decoder",):
        for sid, t in (pt.get(src) or {}).items():
            content = t.get("content") if isinstance(t, dict) else None
            if content is None or not str(sid).lstrip("-").isdigit():
                raise ConvertError("%s: %s entry %r is not {\"content\": ...} under an id" % (pt_p, src, sid))
            added[content] = int(sid)
    at_p = os.path.join(pink_dir, "added_tokens.json")
    if os.path.isfile(at_p):
        for content, tid in read_json(at_p, "tokenizer").items():
            if not isinstance(tid, int):
                raise ConvertError("%s: id of %r is not an integer" % (at_p, content))
            if content in added and added[content] != tid:
                raise ConvertError("%s: %r has id %d, but %s says %d" % (at_p, content, tid, pt_p, added[content]))
            added[content] = tid
    out = []
    for content, tid in sorted(added.items(), key=lambda kv: kv[1]):
        if tid < n_pieces:   # a piece of the model itself (<unk>, <s>, </s>): not an added token
            if sp.id_to_piece(tid) != content:
                raise ConvertError("added token %r has id %d, which is the piece %r of tokenizer.model"
                                   % (content, tid, sp.id_to_piece(tid)))
            continue
        out.append((content, tid))
    return {"legacy": bool(legacy), "add_bos": bool(merged.get("add_bos_token", True)),
            "add_eos": bool(merged.get("add_eos_token", False)),
            "clean_up": bool(merged.get("clean_up_tokenization_spaces", False))}, out


# ------------------------------------------------------------------ plan

def count_layers(keys, prefix):
    return lc.count_index(keys, prefix)


def build(a):
    t0 = time.time()
    pcfg, pcfg_p, pink = read_pink_dir(a.pink)
    P = pink.infos
    lcfg, lsrcs, lwhere = lc.open_hf_dir(a.llama, "LLaMA")
    lcfg_p = os.path.join(a.llama, "config.json")
    ccfg, csrcs, cwhere = lc.open_hf_dir(a.clip, "CLIP")
    ccfg_p = os.path.join(a.clip, "config.json")

    # ---------------- dimensions
    check_same(pcfg, pcfg_p, lcfg, lcfg_p, ("hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                                            "rope_theta", "max_position_embeddings"))
    try:
        L = llama_config(lcfg)
        V = vision_config(ccfg)
    except ValueError as e:
        raise ConvertError("%s: %s" % (lcfg_p if "LLaMA" in str(e) else ccfg_p, e))
    opts = pink_options(pcfg)
    emb = P.get("model.embed_tokens.weight") or (lwhere["model.embed_tokens.weight"].infos[
        "model.embed_tokens.weight"] if "model.embed_tokens.weight" in lwhere else None)
    if emb is None:
        raise ConvertError("%s: missing tensor 'model.embed_tokens.weight' (nor in %s)" % (pink.path, a.llama))
    vocab = emb.shape[0]
    if pcfg.get("vocab_size") not in (None, vocab):
        raise ConvertError("%s: vocab_size %r, but tensor 'model.embed_tokens.weight' of %s has %d rows" % (
            pcfg_p, pcfg["vocab_size"], emb.path, vocab))
    nl = count_layers(lwhere, "model.layers.")
    if nl != L["num_hidden_layers"]:
        raise ConvertError("%s: num_hidden_layers %d, but the weights in %s hold %d layers (model.layers.N.*)" % (
            lcfg_p, L["num_hidden_layers"], a.llama, nl))
    ncl = count_layers(cwhere, "vision_model.encoder.layers.")
    if ncl != V["num_hidden_layers"]:
        raise ConvertError("%s: num_hidden_layers %d, but the weights in %s hold %d CLIP vision layers "
                           "(vision_model.encoder.layers.N.*)" % (ccfg_p, V["num_hidden_layers"], a.clip, ncl))
    crop = opts["crop_size"]
    if crop != V["image_size"]:
        # upstream: CLIPVisionModel.from_pretrained(clip_path, image_size=crop_size,
        # ignore_mismatched_sizes=True) re-initialises the position embedding; only a checkpoint
        # that holds it can be converted
        pe = VISION_PREFIX + "embeddings.position_embedding.weight"
        if pe not in P:
            raise ConvertError("%s: crop_size %d differs from %s's image_size %d and %s holds no '%s' for it"
                               % (pcfg_p, crop, ccfg_p, V["image_size"], pink.path, pe))
        V["image_size"] = crop
    sel = opts["clip_select_layer"]
    run = sel if sel >= 0 else V["num_hidden_layers"] + 1 + sel
    if not 0 <= run <= V["num_hidden_layers"]:
        raise ConvertError("%s: clip_select_layer %d is outside the %d CLIP layers" % (pcfg_p, sel,
                                                                                      V["num_hidden_layers"]))

    def adapter_dim(prefix, enabled, default):
        ks = [k for k in P if k.startswith(prefix) and ".adapter_" in k and k.endswith("tune_adapter_a.weight")]
        if not enabled:
            if ks:
                raise ConvertError("%s: %s tensors (e.g. '%s') but %s says the adapters are off" % (
                    pink.path, prefix + "*adapter_*", ks[0], pcfg_p))
            return 0
        if not ks:
            raise ConvertError("%s: missing tensor '%s' (%s enables the adapters)" % (
                pink.path, prefix + "layers.0.adapter_attn.tune_adapter_a.weight", pcfg_p))
        dim = P[ks[0]].shape[0]
        if dim != default:
            raise ConvertError("%s: tensor '%s' has %d rows, but %s says adapter dim %d" % (
                pink.path, ks[0], dim, pcfg_p, default))
        return dim
    vad = adapter_dim(VISION_PREFIX + "encoder.", opts["adapter_vision_enable"], opts["adapter_vision_dim"])
    lad = adapter_dim("model.", opts["adapter_llm_enable"], opts["adapter_llm_dim"])

    # ---------------- tokenizer
    tok_p = os.path.join(a.pink, "tokenizer.model")
    if not os.path.isfile(tok_p):
        tok_p = os.path.join(a.llama, "tokenizer.model")
    if not os.path.isfile(tok_p):
        raise ConvertError("no tokenizer.model in %s or %s" % (a.pink, a.llama))
    import sentencepiece as spm
    try:
        sp = spm.SentencePieceProcessor(model_file=tok_p)
    except (RuntimeError, OSError) as e:
        raise ConvertError("%s: not a SentencePiece model (%s)" % (tok_p, " ".join(str(e).split())[:200]))
    n_pieces = sp.get_piece_size()
    tset, added = tokenizer_settings(a.pink, a.llama, n_pieces, sp)
    ids = {c: i for c, i in added}
    image_token = pink_prompt.IMAGE_TOKEN
    if image_token not in ids:
        raise ConvertError("the tokenizer in %s has no added token %s (Pink's initialize_vision_tokenizer adds it)"
                           % (a.pink, image_token))
    if pcfg.get("im_patch_token") not in (None, ids[image_token]):
        raise ConvertError("%s: im_patch_token %r, but the tokenizer gives %s the id %d" % (
            pcfg_p, pcfg["im_patch_token"], image_token, ids[image_token]))
    top = max([n_pieces] + [i + 1 for i in ids.values()])
    if top > vocab:
        raise ConvertError("the tokenizer has %d tokens with the added ones, but tensor 'model.embed_tokens.weight' "
                           "of %s has %d rows" % (top, emb.path, vocab))
    patches = (V["image_size"] // V["patch_size"]) ** 2
    if pcfg.get("num_patches") not in (None, patches):
        raise ConvertError("%s: num_patches %r, but CLIP's %d px images in %d px patches give %d" % (
            pcfg_p, pcfg["num_patches"], V["image_size"], V["patch_size"], patches))

    # ---------------- plan: output key -> (source, name in it); Pink's keys last, overriding
    plan = {}
    for k, s in cwhere.items():
        if k.startswith("vision_model."):
            plan[VISION_PREFIX + k[len("vision_model."):]] = (s, k)
    for k, s in lwhere.items():
        plan[k] = (s, k)
    for k in P:
        plan[k] = (pink, k)

    pp = dict(pcfg)
    pp.update({"vocab_size": vocab, "hidden_size": L["hidden_size"]})
    ccfg_eff = dict(V)
    exp_v, exp_l = expected_shapes(pp, ccfg_eff, L, vocab, run)
    for exp in (exp_v, exp_l):
        for k, shp in exp.items():
            if k not in plan:
                raise ConvertError("%s: missing tensor '%s'" % (expected_source(k, a), source_name(k, a)))
            s, name = plan[k]
            found = s.infos[name].shape
            if tuple(found) != tuple(shp):
                raise shape_error(s.path, name, shp, found, "expected from the dimensions read from the configs")
    used = set(exp_v) | set(exp_l)
    dropped = sorted(k for k in plan if k not in used)
    if dropped:
        log("not written: %d keys nothing reads (e.g. %s)" % (len(dropped), ", ".join(dropped[:3])))

    cfg = {"format": "lion-model", "format_version": 1, "family": "pink",
           "name": a.name or os.path.basename(os.path.abspath(a.out)),
           "pink": {
               "vision": {"file": "vision.safetensors", "image_size": V["image_size"], "patch_size": V["patch_size"],
                          "dim": V["hidden_size"], "layers": V["num_hidden_layers"],
                          "heads": V["num_attention_heads"], "mlp_hidden": V["intermediate_size"],
                          "ln_eps": V["layer_norm_eps"], "act": V["hidden_act"], "select_layer": sel,
                          "adapter": ({"dim": vad, "attn": bool(opts["adapter_attn"]), "mlp": bool(opts["adapter_mlp"])}
                                      if vad else {"dim": 0}),
                          "proj_dim": L["hidden_size"], "resize": "bicubic"},
               "llm": {"file": "llm.safetensors", "dim": L["hidden_size"], "hidden": L["intermediate_size"],
                       "layers": L["num_hidden_layers"], "heads": L["num_attention_heads"],
                       "kv_heads": L["num_key_value_heads"], "vocab_size": vocab,
                       "max_positions": lc.cfg_int(lcfg, "max_position_embeddings", lcfg_p, 4096),
                       "rms_eps": L["rms_norm_eps"], "rope_theta": float(L["rope_theta"]),
                       "adapter": ({"dim": lad, "attn": bool(opts["adapter_attn"]), "mlp": bool(opts["adapter_mlp"]),
                                    "silu": bool(opts["adapter_non_linear"])} if lad else {"dim": 0}),
                       "generation": dict(GENERATION)},
               "tokenizer": {"file": "tokenizer.model", "legacy": tset["legacy"], "add_bos": tset["add_bos"],
                             "add_eos": tset["add_eos"], "clean_up_spaces": tset["clean_up"],
                             "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
                             "pad_id": sp.unk_id(),   # train.py: tokenizer.pad_token = tokenizer.unk_token
                             "added_tokens": [{"content": c, "id": i} for c, i in added]},
               "prompt": {"template": "llamav2", "system": pink_prompt.SYSTEM, "image_token": image_token,
                          "image_tokens": patches, "box_decimals": pink_prompt.BOX_DECIMALS,
                          "tasks": dict(pink_prompt.TASKS)}}}
    mean, std = CLIP_MEAN, CLIP_STD
    pre_p = os.path.join(a.clip, "preprocessor_config.json")
    if os.path.isfile(pre_p):
        pre = read_json(pre_p, "CLIP")
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    cfg["pink"]["vision"]["mean"], cfg["pink"]["vision"]["std"] = list(mean), list(std)
    if patches >= cfg["pink"]["llm"]["max_positions"]:
        raise ConvertError("%s: max_position_embeddings %d leaves no room after the %d image tokens" % (
            lcfg_p, cfg["pink"]["llm"]["max_positions"], patches))
    sources = csrcs + lsrcs + [pink]
    log("read the tensor lists in %.1fs: CLIP %d x %d (%d heads, %d of %d layers run), LLaMA %d x %d (%d heads, %d "
        "kv), vocabulary %d (%d added tokens), adapters %d / %d" % (
            time.time() - t0, V["hidden_size"], V["num_hidden_layers"], V["num_attention_heads"], run,
            V["num_hidden_layers"], L["hidden_size"], L["num_hidden_layers"], L["num_attention_heads"],
            L["num_key_value_heads"], vocab, len(added), vad, lad))
    return cfg, plan, exp_v, exp_l, sources, tok_p


def expected_shapes(pcfg, vcfg, L, vocab, run):
    """{key: shape} of the vision file (layers < run only, no post_layernorm) and of the llm file,
    from pink_ref's modules built on the meta device (shapes only, no memory)."""
    from pink_ref.clip import PinkVision
    from pink_ref.llama import LlamaForCausalLM
    try:
        with lc._MetaMode():
            vision = PinkVision(pcfg, vcfg)
            llm = LlamaForCausalLM(pcfg)
    except Exception as e:  # noqa: BLE001
        raise ConvertError("the dimensions read from the configs do not make a Pink model (%s: %s)" % (
            type(e).__name__, e))
    ev = {}
    for k, v in vision.state_dict().items():
        if k.startswith(VISION_PREFIX + "encoder.layers."):
            if int(k[len(VISION_PREFIX + "encoder.layers."):].split(".")[0]) >= run:
                continue
        elif k.startswith(VISION_PREFIX + "post_layernorm."):
            continue
        ev[k] = tuple(v.shape)
    return ev, {k: tuple(v.shape) for k, v in llm.state_dict().items()}


def expected_source(key, a):
    if key.startswith("mm_projector.") or ".adapter_" in key:
        return os.path.join(a.pink, "saved_parameters.pth")
    if key.startswith(VISION_PREFIX):
        return a.clip
    return a.llama


def source_name(key, a):
    if key.startswith(VISION_PREFIX) and ".adapter_" not in key:
        return "vision_model." + key[len(VISION_PREFIX):]
    return key


# ------------------------------------------------------------------ write

def write(cfg, plan, exp_v, exp_l, sources, tok_p, out, dtype):
    tdt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    stages = {"vision": exp_v, "llm": exp_l}
    paths = {s: os.path.join(out, cfg["pink"][s]["file"]) for s in stages}
    entries = {s: [(k, tdt, shp) for k, shp in exp.items()] for s, exp in stages.items()}
    dest = {}
    for s, exp in stages.items():
        for k in exp:
            src, name = plan[k]
            dest.setdefault((id(src), name), []).append((s, k, tdt))
    lc.write_model(out, cfg, paths, entries, dest, sources,
                   lambda s: {"format": "lion-model", "family": "pink", "stage": s, "dtype": dtype},
                   [(tok_p, "tokenizer.model")])


# ------------------------------------------------------------------ main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description="Convert Pink's released checkpoint (+ the Llama-2 and "
                                 "CLIP HF directories) into a model directory (docs/model-format.md).")
    ap.add_argument("--pink", required=True, help="Pink checkpoint dir (config.json, saved_parameters.pth, tokenizer)")
    ap.add_argument("--llama", required=True, help="Llama-2-7b-chat-hf dir (config.json, tokenizer.model, weights)")
    ap.add_argument("--clip", required=True, help="openai/clip-vit-large-patch14 dir (config.json, weights)")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--name", default=None)
    return ap.parse_args(argv)


def convert(argv=None):
    a = parse_args(argv)
    t0 = time.time()
    cfg, plan, exp_v, exp_l, sources, tok_p = build(a)
    write(cfg, plan, exp_v, exp_l, sources, tok_p, a.out, a.dtype)
    log("done in %.1fs" % (time.time() - t0))
    return cfg


def main(argv=None):
    try:
        convert(argv)
    except (ConvertError, CkptError) as e:
        sys.stderr.write("%s: error: %s\n" % (PROG, e))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % PROG)
        return 130
    except Exception as e:  # noqa: BLE001  one line, never a traceback (LION_CONVERT_DEBUG=1 shows it)
        if os.environ.get("LION_CONVERT_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        sys.stderr.write("%s: error: unexpected %s: %s (LION_CONVERT_DEBUG=1 for a traceback)\n"
                         % (PROG, type(e).__name__, msg[:500]))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
