#!/usr/bin/env python3
"""Train the tiny Pink on the shapes world and export models/tiny-pink/.

    /usr/bin/python3 tools/train/train_pink.py            # tokenizer, training, export (resumable)
    /usr/bin/python3 tools/train/train_pink.py --smoke    # 3-4 small steps per stage into .train-pink/smoke (~15 s)

Stages (the tiny CLIP and LLaMA are stand-ins for the pretrained towers, so they train too):
  stage0  CLIP alone on auxiliary dense targets of the CLIP features (per patch: colour / shape
          of the covering object, its box, object centres; per object: shape and colour of its
          cover-pooled patches; heads not exported): a stand-in for CLIP's pretraining, so that
          the language side starts on features that already tell the objects apart.
  main    end to end, everything trainable (CLIP, adapters, mm_projector, LLaMA): teacher
          forcing on the answer tokens (+ eos) of Pink's prompts (tinypink.Encoder), every task
          mixed in each batch (image- and region-level alike: Pink has no router), with the
          auxiliary loss kept (weight AUX_WEIGHT) so the CLIP features do not drift, and pointer
          heads in the LLaMA (tinypink.TinyPink.point_loss; not exported).
  main2   more of main at a lower rate.

Deterministic from --seed: every batch is a function of (seed, step), the world of the scene
seed. Checkpoints go to --work (default .train-pink/, git-ignored) every --ckpt-every steps;
rerunning the same command resumes there. Export: the trained weights are written in Pink's
released layouts (a CLIP HF dir, a Llama-2 HF dir, a Pink checkpoint dir with
saved_parameters.pth and the tokenizer files) under --work/upstream, then converted by
tools/convert/pink_convert.py into --out, as a released Pink would be.
"""
import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import pink_threads  # noqa: E402

pink_threads.limit()   # before torch: BLAS threads too (pink_threads.py)
import torch  # noqa: E402

import tinypink  # noqa: E402
import world  # noqa: E402
from train import Progress, fmt_t, lr_at, save_ckpt  # noqa: E402  (tiny LION's helpers)

STEPS = 2000
LR = 1e-3
WARMUP = 100
IMG_PER_BATCH = 12
Q_PER_IMG = 4
AUX_WEIGHT = 0.5
# main2: more of main at a lower rate (its accuracies were still rising at its end); a stage of
# its own so that a finished run resumes into it
STEPS2 = 1500
LR2 = 3e-4
MAIN2_SEEDS = 200_000   # main2's scenes follow main's (main uses step * 12 < 200000)
STAGE0_STEPS = 400
STAGE0_LR = 1e-3
STAGE0_IMAGES = 32
# sampling weights of the world's tasks (more of the ones that need more: boxes, counting)
TASK_WEIGHTS = {"caption": 1.0, "vqa_colour": 1.0, "vqa_shape": 1.5, "count": 2.0, "relation": 1.5,
                "rec": 2.5, "region_caption": 1.0}
TRAIN_SEED_BASE = 2_000_000_000   # scenes never collide with the held-out ones (900000000 + i)
GENERATION_MAX_NEW_TOKENS = 64    # the world's longest answer (a 4-object caption) takes 22 tokens


class Batcher:
    def __init__(self, enc, seed):
        self.enc, self.seed = enc, seed
        self.pad = enc.tok.unk   # Pink's train.py: pad_token = unk_token
        self.patch = tinypink.CLIP["patch_size"]

    def pixels(self, images):
        from lion_ref.lion import preprocess
        s = tinypink.CLIP["image_size"]
        return torch.stack([preprocess(im, s, "bicubic", tinypink.CLIP_MEAN, tinypink.CLIP_STD) for im in images])

    def dense(self, scenes):
        n = world.IMAGE_SIZE // self.patch
        K = world.MAX_OBJECTS
        cols, shps, boxes, cens, covers, osh, ocol = [], [], [], [], [], [], []
        for sc in scenes:
            t = sc.patch_targets(self.patch)
            cols.append(torch.tensor(t["colour"]))
            shps.append(torch.tensor(t["shape"]))
            boxes.append(torch.tensor(t["box"]))
            c = torch.zeros(n * n)
            cov = torch.zeros(K, n * n)
            cov[:len(sc.objects)] = torch.tensor(t["cover"])
            s, col = torch.full((K,), -1, dtype=torch.long), torch.full((K,), -1, dtype=torch.long)
            for k, o in enumerate(sc.objects):
                cx, cy = world.centre(o)
                c[min(n - 1, int(cy // self.patch)) * n + min(n - 1, int(cx // self.patch))] = 1.0
                s[k], col[k] = world.SHAPES.index(o["shape"]), world.COLOURS.index(o["colour"])
            cens.append(c)
            covers.append(cov)
            osh.append(s)
            ocol.append(col)
        return {"colour": torch.stack(cols), "shape": torch.stack(shps), "box": torch.stack(boxes),
                "centre": torch.stack(cens), "obj_cover": torch.stack(covers), "obj_shape": torch.stack(osh),
                "obj_colour": torch.stack(ocol)}

    def stage0(self, step, n_img):
        """CLIP-only batch (the stand-in for CLIP's pretraining): pixels and dense targets."""
        base = TRAIN_SEED_BASE + (self.seed % 1000) * 1_000_000 + 500_000 + step * n_img
        scenes = [world.make_scene(base + i) for i in range(n_img)]
        b = {"pixels": self.pixels([sc.image for sc in scenes])}
        b.update(self.dense(scenes))
        return b

    def batch(self, step, n_img=IMG_PER_BATCH, q_per_img=Q_PER_IMG, offset=0):
        """Task batch of a step; offset: the stage's own range of scene seeds."""
        base = TRAIN_SEED_BASE + (self.seed % 1000) * 1_000_000 + offset + step * n_img
        rng = random.Random(base)
        names = list(TASK_WEIGHTS)
        weights = [TASK_WEIGHTS[t] for t in names]
        scenes, seqs, img_index, tasks, objects = [], [], [], [], []
        for i in range(n_img):
            sc = world.make_scene(base + i)
            scenes.append(sc)
            for _ in range(q_per_img):
                for _try in range(10):
                    s = world.task_samples(sc, rng, tasks=[rng.choices(names, weights)[0]])
                    if s:
                        break
                s = s[0]
                seqs.append(self.enc.sequence(s["question"], s["answer"]))
                img_index.append(i)
                tasks.append(s["task"])
                objects.append(s["objects"])
        P = len(self.enc.prefix)
        S = max(len(ids) for ids, _ in seqs) - P
        suffix = torch.full((len(seqs), S), self.pad, dtype=torch.long)
        labels = torch.full((len(seqs), S), -100, dtype=torch.long)
        for j, (ids, n_prompt) in enumerate(seqs):
            assert ids[:P] == self.enc.prefix
            suf = ids[P:]
            suffix[j, :len(suf)] = torch.tensor(suf)
            # the logits at suffix position k predict ids[P + k + 1]: the answer and eos
            for k in range(len(suf) - 1):
                if P + k + 1 >= n_prompt:
                    labels[j, k] = suf[k + 1]
        b = {"pixels": self.pixels([sc.image for sc in scenes]), "img_index": torch.tensor(img_index),
             "suffix": suffix, "labels": labels, "tasks": tasks}
        b.update(self.dense(scenes))
        b.update(self.pointer(b["obj_cover"], tasks, objects, img_index))
        return b

    def pointer(self, cover, tasks, objects, img_index):
        """Pointer targets per sequence: the patches (cover >= 0.3) of the objects the question
        is about; for relations the first- and second-named object's apart (pair = 1)."""
        Q, P = len(tasks), cover.shape[-1]
        point, a, b, pair = torch.zeros(Q, P), torch.zeros(Q, P), torch.zeros(Q, P), torch.zeros(Q)
        for j, (t, objs, i) in enumerate(zip(tasks, objects, img_index)):
            for k in objs:
                point[j] = torch.maximum(point[j], (cover[i, k] >= 0.3).float())
            if t == "relation":
                a[j], b[j], pair[j] = (cover[i, objs[0]] >= 0.3).float(), (cover[i, objs[1]] >= 0.3).float(), 1.0
        return {"point": point, "point_a": a, "point_b": b, "pair": pair}


def setup(args):
    os.makedirs(args.work, exist_ok=True)
    tok_path = os.path.join(args.work, "tokenizer.model")
    if not os.path.exists(tok_path):
        print("building the tokenizer ...", flush=True)
        tinypink.build_tokenizer(tok_path)
    tok = tinypink.load_tokenizer(tok_path)
    return tok_path, tok, tinypink.Encoder(tok)


def run_stage(args, name, model, enc, steps, state):
    """stage0: CLIP + auxiliary heads on the dense targets alone (a stand-in for CLIP's
    pretraining: the language side then starts on features that already separate the objects);
    main: everything, teacher-forced answers + the auxiliary loss. Resumes from state."""
    path = os.path.join(args.work, "main.pt")
    if name == "stage0":
        params = list(model.vision.parameters()) + list(model.aux.parameters())
        lr = args.stage0_lr
    else:
        params = list(model.parameters())
        lr = args.lr if name == "main" else args.lr2
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    start = 0
    if state.get("stage") == name:
        opt.load_state_dict(state["opt"])
        start = state["step"]
        print("resumed %s at step %d of %d" % (name, start, steps), flush=True)
    batcher = Batcher(enc, args.seed)
    prog = Progress(name, steps, start, every=args.log_every)
    hist = {}
    model.train()
    for step in range(start, steps):
        torch.manual_seed(args.seed * 100000 + step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=min(WARMUP, max(1, steps // 10)))
        if name == "stage0":
            b = batcher.stage0(step, args.stage0_images)
            features, _ = model.vision(b["pixels"])
            loss, aux_acc = model.aux_loss(features, b)
            info = "aux %.3f patch_shape %.2f obj_shape %.2f centres %.2f" % (
                loss.item(), aux_acc["patch_shape"], aux_acc["obj_shape"], aux_acc["count"])
        else:
            b = batcher.batch(step, args.images, args.questions, MAIN2_SEEDS if name == "main2" else 0)
            lm, aux, ok, aux_acc = model.loss(b, enc)
            loss = lm + AUX_WEIGHT * aux
            for t, o in zip(b["tasks"], ok.tolist()):
                h = hist.setdefault(t, [])
                h.append(o)
                del h[:-200]
            info = "lm %.3f aux %.3f obj_shape %.2f centres %.2f | %s" % (
                lm.item(), aux.item(), aux_acc["obj_shape"], aux_acc["count"],
                " ".join("%s %.2f" % (t, sum(h) / len(h)) for t, h in sorted(hist.items())))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        prog.update(step + 1, info)
        stop = args.stop_at and name == "main" and step + 1 >= args.stop_at and step + 1 < steps
        if (step + 1) % args.ckpt_every == 0 or step + 1 == steps or stop:
            save_ckpt(path, {"stage": name, "step": step + 1, "done": state.get("done", []),
                             "model": model.state_dict(), "opt": opt.state_dict()})
        if stop:
            print("stopped at step %d (rerun to resume)" % (step + 1), flush=True)
            return False
    state["done"] = state.get("done", []) + [name]
    state["stage"], state["step"] = None, 0
    save_ckpt(path, {"stage": None, "step": 0, "done": state["done"], "model": model.state_dict()})
    print("%s done (%s this run)" % (name, fmt_t(time.time() - prog.t0)), flush=True)
    return True


def train(args, model, enc):
    path = os.path.join(args.work, "main.pt")
    state = {}
    if os.path.exists(path):
        state = torch.load(path, map_location="cpu")
        model.load_state_dict(state["model"])
    for name, steps in (("stage0", args.stage0_steps), ("main", args.steps), ("main2", args.steps2)):
        if name in state.get("done", []) or steps <= 0:
            continue
        if not run_stage(args, name, model, enc, steps, state):
            return False
    print("training done", flush=True)
    return True


# ------------------------------------------------------------------------ export

def write_upstream(model, tok_path, d):
    """The trained weights in Pink's released layouts (what pink_convert.py reads):
    d/clip (openai/clip-vit-large-patch14's: config.json, model.safetensors with CLIPModel's
    vision keys, preprocessor_config.json), d/llama (Llama-2-7b-chat-hf's: config.json,
    model.safetensors, tokenizer.model), d/pink (Pink_base's: config.json, saved_parameters.pth
    with what Pink trains - mm_projector, the adapters, embed_tokens and lm_head with the added
    tokens' rows - and the tokenizer files)."""
    import shutil
    from lion_ref.safetensors_io import save_file
    sd = {k: v.detach().clone().contiguous() for k, v in model.exported_state().items()}
    pink_keys = [k for k in sd if k.startswith("mm_projector.") or ".adapter_" in k
                 or k in ("model.embed_tokens.weight", "lm_head.weight")]
    vp = "vision_model.vision_model."
    clip_w = {"vision_model." + k[len(vp):]: v for k, v in sd.items() if k.startswith(vp) and ".adapter_" not in k}
    llama_w = {k: v for k, v in sd.items() if k.startswith(("model.", "lm_head.")) and ".adapter_" not in k}
    n_pieces = tok_spm_size(tok_path)
    # Llama-2's own embedding has only the pieces' rows; Pink's saved_parameters add the rest
    llama_w["model.embed_tokens.weight"] = llama_w["model.embed_tokens.weight"][:n_pieces].clone()
    llama_w["lm_head.weight"] = llama_w["lm_head.weight"][:n_pieces].clone()
    for sub in ("clip", "llama", "pink"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    vision = dict(tinypink.clip_config())
    vision["model_type"] = "clip_vision_model"
    dump(os.path.join(d, "clip", "config.json"), {"architectures": ["CLIPVisionModel"], "model_type": "clip",
                                                   "vision_config": vision})
    dump(os.path.join(d, "clip", "preprocessor_config.json"),
         {"crop_size": tinypink.CLIP["image_size"], "image_mean": tinypink.CLIP_MEAN,
          "image_std": tinypink.CLIP_STD, "resample": 3, "size": tinypink.CLIP["image_size"]})
    save_file(clip_w, os.path.join(d, "clip", "model.safetensors"), metadata={"format": "pt"})
    vocab = len(sd["model.embed_tokens.weight"])
    lcfg = dict(tinypink.LLAMA)
    lcfg.update({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": n_pieces,
                 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"})
    dump(os.path.join(d, "llama", "config.json"), lcfg)
    save_file(llama_w, os.path.join(d, "llama", "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tok_path, os.path.join(d, "llama", "tokenizer.model"))
    pcfg = dict(model.pcfg)
    pcfg.update({"architectures": ["PinkModel"], "model_type": "pink", "vocab_size": vocab,
                 "im_patch_token": n_pieces, "torch_dtype": "float32"})
    dump(os.path.join(d, "pink", "config.json"), pcfg)
    torch.save({k: sd[k] for k in pink_keys}, os.path.join(d, "pink", "saved_parameters.pth"))
    shutil.copyfile(tok_path, os.path.join(d, "pink", "tokenizer.model"))
    added = {t: n_pieces + i for i, t in enumerate(tinypink.PINK_ADDED_TOKENS)}
    dump(os.path.join(d, "pink", "added_tokens.json"), added)
    decoder = {str(i): {"content": t, "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])}
    decoder.update({str(i): {"content": t, "special": True} for t, i in added.items()})
    dump(os.path.join(d, "pink", "tokenizer_config.json"),
         {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
          "unk_token": "<unk>", "pad_token": "<unk>", "clean_up_tokenization_spaces": False,
          "legacy": tinypink.LEGACY, "tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": decoder})


def tok_spm_size(path):
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=path).get_piece_size()


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def export(args, model, tok_path, info):
    sys.path.insert(0, os.path.join(ROOT, "tools", "convert"))
    import pink_convert
    up = os.path.join(args.work, "upstream")
    write_upstream(model, tok_path, up)
    rc = pink_convert.main(["--pink", os.path.join(up, "pink"), "--llama", os.path.join(up, "llama"),
                            "--clip", os.path.join(up, "clip"), "--out", args.out, "--dtype", "f32",
                            "--name", "tiny-pink"])
    if rc:
        raise SystemExit("pink_convert failed (exit %d)" % rc)
    # the tiny model's own generation default: its answers are short, so a model that fails to
    # stop is cut after GENERATION_MAX_NEW_TOKENS instead of upstream's 1024 (otherwise greedy
    # as upstream's demo.py)
    mj = os.path.join(args.out, "model.json")
    with open(mj) as f:
        cfg = json.load(f)
    cfg["pink"]["llm"]["generation"]["max_new_tokens"] = GENERATION_MAX_NEW_TOKENS
    dump(mj, cfg)
    dump(os.path.join(args.out, "training.json"), info)
    print("exported to %s" % args.out, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=os.path.join(ROOT, ".train-pink"), help="checkpoints, tokenizer (git-ignored)")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "tiny-pink"))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--steps2", type=int, default=STEPS2, help="steps of main2 (0: none)")
    ap.add_argument("--lr2", type=float, default=LR2)
    ap.add_argument("--stage0-steps", type=int, default=STAGE0_STEPS)
    ap.add_argument("--stage0-lr", type=float, default=STAGE0_LR)
    ap.add_argument("--stage0-images", type=int, default=STAGE0_IMAGES)
    ap.add_argument("--images", type=int, default=IMG_PER_BATCH, help="images per batch")
    ap.add_argument("--questions", type=int, default=Q_PER_IMG, help="questions per image")
    ap.add_argument("--smoke", action="store_true", help="3-4 small steps per stage into --work/smoke (a pipeline test)")
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    ap.add_argument("--stop-at", type=int, default=0, help="stop (checkpointed) at this step of main; rerun to resume")
    ap.add_argument("--export-only", action="store_true", help="export the current checkpoint as it is")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.work = os.path.join(args.work, "smoke")
        args.out = os.path.join(args.work, "model")
        args.steps, args.images, args.questions = 4, 4, 2
        args.stage0_steps, args.stage0_images, args.steps2 = 3, 4, 3
        args.ckpt_every, args.log_every = 2, 1
    t0 = time.time()
    tok_path, tok, enc = setup(args)
    model = tinypink.TinyPink(tok.vocab_size(), seed=args.seed)
    if args.export_only:
        ck = torch.load(os.path.join(args.work, "main.pt"), map_location="cpu")
        model.load_state_dict(ck["model"])
        print("exporting the checkpoint: done %s, in %s at step %s" % (ck["done"], ck["stage"], ck["step"]),
              flush=True)
        done, steps_done = True, {"done": ck["done"], "stage": ck["stage"], "step": ck["step"]}
    else:
        done = train(args, model, enc)
        steps_done = {"stage0": args.stage0_steps, "main": args.steps, "main2": args.steps2}
    if not done:
        return
    model.eval()
    export(args, model, tok_path, {
        "seed": args.seed, "steps": steps_done, "lr": args.lr, "lr2": args.lr2, "stage0_lr": args.stage0_lr,
        "stage0_images": args.stage0_images, "images_per_batch": args.images,
        "questions_per_image": args.questions, "aux_weight": AUX_WEIGHT, "task_weights": TASK_WEIGHTS,
        "this_run_wall_s": round(time.time() - t0, 1), "threads": args.threads, "torch": torch.__version__})


if __name__ == "__main__":
    main()
