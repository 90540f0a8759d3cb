#!/usr/bin/env python3
"""Train the tiny LION on the shapes world and export models/tiny-lion/.

    /usr/bin/python3 tools/train/train.py            # everything, resumable
    /usr/bin/python3 tools/train/train.py --smoke    # a few steps of every stage (test)

Stages (LION's stage-wise recipe, plus stand-ins for the pretrained parts):
  tagger  RAM (tiny Swin + tagging head) on the tag words; runs in a second process
          alongside the main stages, then per-class thresholds are calibrated.
  stage0  stand-in for EVA pretraining: the ViT alone on dense per-patch targets
          (colour / shape class and box of the covering object, patch position) plus
          per-object shape / colour targets on the object's pooled tokens and the count.
  stage0b the same, continued at a lower rate (more shape separation in the ViT).
  stage1  image-level tasks (captions, colour / shape / count / relation VQA), router
          idx 1: Q-Former side (ln_vision, Q-Former, query tokens, t5_proj) + T5 (the
          stand-in for FlanT5 trains along, adapters included) + soft prompt.
  stage2  region-level tasks (REC -> box, region captions), router idx 0: aggregator
          (fusion_adapter, ln_adapter, adapter_proj) + T5 + soft prompt; short
          curriculum (at most 2 objects for the first 15 % of the steps).
  stage3  mixture of adapters on all tasks (image / region batches alternate), all
          but the ViT trainable (3b, 3c: more of it at lower rates).
  stage4  everything trains, the ViT at a fifth of the rate with its stage-0 loss kept
          on the task images; two-object pointer targets for relation questions (4b: more
          of it at half the rate).
The ViT is frozen from stage 1 to stage 3c.  Everything is deterministic from --seed: each
batch is a function of (stage, step); checkpoints go to --work (default .train/) every
--ckpt-every steps and at each stage end, and a rerun resumes where it stopped.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

STAGE4_OPTS = {"vit_lr_scale": 0.2, "dense_weight": 0.5,
               "weights": {"caption": 1.0, "vqa_colour": 1.0, "vqa_shape": 2.0, "count": 2.0,
                           "relation": 2.5, "rec": 2.0, "region_caption": 1.0}}
STAGES = {
    # name: (steps, lr, trainable groups, kinds[, options])
    "stage0": (600, 1e-3, ["vit"], None),
    "stage0b": (400, 4e-4, ["vit"], None),
    "stage1": (300, 1e-3, ["qformer", "t5"], ["image"]),
    "stage2": (500, 1e-3, ["agg", "t5"], ["region"]),
    "stage3": (800, 5e-4, ["qformer", "agg", "t5"], ["image", "region"]),
    # held-out accuracy was still rising at the end of stage 3: more of it at half the rate
    "stage3b": (900, 2.5e-4, ["qformer", "agg", "t5"], ["image", "region"]),
    "stage3c": (900, 1.25e-4, ["qformer", "agg", "t5"], ["image", "region"]),
    # the frozen ViT's per-object shape probe (~0.92) caps shape VQA, and relations need to
    # know which object is which: the ViT trains again at a fifth of the rate with the
    # stage-0 loss kept (on the task images), two-object pointer heads, and more of the
    # tasks that lag (shape, count, relation)
    "stage4": (1200, 1.25e-4, ["vit", "qformer", "agg", "t5", "rel"], ["image", "region"], STAGE4_OPTS),
    # its teacher-forced accuracies were still rising at the end: more of it at half the rate
    "stage4b": (900, 6.25e-5, ["vit", "qformer", "agg", "t5", "rel"], ["image", "region"], STAGE4_OPTS),
}
TAGGER_STEPS = 4000
TAGGER_LR = 2e-3
IMG_PER_BATCH = 12
Q_PER_IMG = 4
S0_BATCH = 48


class Progress:
    """Bar with rate / ETA on a TTY, plain lines otherwise."""

    def __init__(self, name, total, start=0, every=50, stream=sys.stderr):
        self.name, self.total, self.start = name, total, start
        self.t0 = time.time()
        self.every = every
        self.tty = stream.isatty()
        self.stream = stream
        self.last = 0.0

    def update(self, step, info=""):
        done = step - self.start
        el = time.time() - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        if self.tty:
            if time.time() - self.last < 0.5 and step < self.total:
                return
            self.last = time.time()
            w = 30
            f = int(w * step / max(self.total, 1))
            self.stream.write("\r%-7s [%s%s] %d/%d %.2f it/s ETA %s %s\x1b[K" % (
                self.name, "#" * f, "." * (w - f), step, self.total, rate, fmt_t(eta), info))
            if step >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif step % self.every == 0 or step >= self.total:
            print("%s %d/%d  %.2f it/s  elapsed %s  ETA %s  %s" % (
                self.name, step, self.total, rate, fmt_t(el), fmt_t(eta), info), flush=True)


def fmt_t(s):
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def lr_at(step, total, base, warmup=50):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def load_main(model, sd):
    """Checkpoints written before stage 4 existed lack only its heads (aux_rel), which
    keep their initialisation; anything else missing or unexpected is an error."""
    r = model.load_state_dict(sd, strict=False)
    bad = [k for k in r.missing_keys if not k.startswith("aux_rel.")] + list(r.unexpected_keys)
    if bad:
        raise SystemExit("checkpoint does not match the model: %s" % ", ".join(bad[:8]))


def save_ckpt(path, obj):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def setup(args):
    import vocab
    import tinylion
    os.makedirs(args.work, exist_ok=True)
    vdir = os.path.join(args.work, "vocab")
    sp, vt = os.path.join(vdir, "spiece.model"), os.path.join(vdir, "vocab.txt")
    if not (os.path.exists(sp) and os.path.exists(vt)):
        print("building vocabularies ...", flush=True)
        vocab.build_all(vdir)
    import sentencepiece as spm
    n_sp = spm.SentencePieceProcessor(model_file=sp).get_piece_size()
    n_bert = sum(1 for _ in open(vt))
    cfg = tinylion.model_config(n_sp, n_bert)
    return cfg, sp, vt


# ------------------------------------------------------------------------ tagger

def train_tagger(args, cfg, sp, vt, steps):
    torch.set_num_threads(1)
    import data
    import tinylion
    import world
    path = os.path.join(args.work, "tagger.pt")
    done_path = os.path.join(args.work, "tagger.done.pt")
    if os.path.exists(done_path):
        return
    tag = tinylion.make_tagger(cfg)
    opt = torch.optim.AdamW(tag.parameters(), lr=TAGGER_LR, weight_decay=0.01)
    start = 0
    if os.path.exists(path):
        ck = torch.load(path, map_location="cpu")
        tag.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start = ck["step"]
    b = data.Batcher(cfg, sp, vt)
    prog = Progress("tagger", steps, start, every=100, stream=open(os.devnull, "w") if args.quiet_tagger else sys.stderr)
    tag.train()
    for step in range(start, steps):
        torch.manual_seed(args.seed * 1000 + step)
        bt = b.tags(data.step_seed("tagger", step, args.seed), S0_BATCH)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, TAGGER_LR)
        loss = F.binary_cross_entropy_with_logits(tag.logits(bt["pixels"]), bt["y"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tag.parameters(), 1.0)
        opt.step()
        prog.update(step + 1, "loss %.4f" % loss.item())
        if (step + 1) % args.ckpt_every == 0:
            save_ckpt(path, {"model": tag.state_dict(), "opt": opt.state_dict(), "step": step + 1})
    # per-class thresholds: best F1 on calibration scenes (not the held-out set)
    tag.eval()
    probs, ys = [], []
    with torch.no_grad():
        for i in range(args.calib_batches):
            bt = b.tags(data.step_seed("calib", i, args.seed), S0_BATCH)
            probs.append(torch.sigmoid(tag.logits(bt["pixels"])))
            ys.append(bt["y"])
    P, Y = torch.cat(probs), torch.cat(ys)
    th = []
    for c in range(P.shape[1]):
        best = (-1.0, 0.5)
        for t in [x / 100 for x in range(20, 81, 2)]:
            pr = P[:, c] > t
            tp = (pr & (Y[:, c] > 0)).sum().item()
            f1 = 2 * tp / max(1, pr.sum().item() + (Y[:, c] > 0).sum().item())
            if f1 > best[0] + 1e-9:
                best = (f1, t)
        th.append(best[1])
    pr = P > torch.tensor(th)
    tp = (pr & (Y > 0)).sum().item()
    f1 = 2 * tp / max(1, pr.sum().item() + (Y > 0).sum().item())
    print("tagger: calibration F1 %.4f thresholds %s" % (f1, th), flush=True)
    save_ckpt(done_path, {"model": tag.state_dict(), "thresholds": th, "calib_f1": f1,
                          "tags": list(world.TAGS)})


def _tagger_proc(args, cfg, sp, vt, steps):
    train_tagger(args, cfg, sp, vt, steps)


# ------------------------------------------------------------------------ main stages

def run_stage(args, name, model, batcher, steps, lr, groups, kinds, state, opts=None):
    """opts (optional): vit_lr_scale (the ViT's rate relative to lr, when it trains in a
    task stage), dense_weight (weight of the stage-0 loss on the task images), weights
    (task sampling weights)."""
    import data
    opts = opts or {}
    path = os.path.join(args.work, "main.pt")
    params = model.params_of(groups)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    vit_trains = "vit" in groups and not name.startswith("stage0")
    if vit_trains:
        vit = set(id(p) for p in model.params_of(["vit"]))
        pgroups = [{"params": [p for p in params if id(p) in vit], "scale": opts.get("vit_lr_scale", 1.0)},
                   {"params": [p for p in params if id(p) not in vit], "scale": 1.0}]
    else:
        pgroups = [{"params": params, "scale": 1.0}]
    opt = torch.optim.AdamW(pgroups, lr=lr, weight_decay=0.01)
    start = 0
    if state.get("stage") == name and "opt" in state:
        opt.load_state_dict(state["opt"])
        start = state["step"]
    prog = Progress(name, steps, start, every=args.log_every)
    model.train()
    acc_hist = {}
    t_last = time.time()
    for step in range(start, steps):
        torch.manual_seed(args.seed * 100000 + step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr) * g.get("scale", 1.0)
        seed = data.step_seed(name, step, args.seed)
        if name.startswith("stage0"):
            bt = batcher.stage0(seed, S0_BATCH)
            loss, parts, acc = model.stage0_loss(bt["pixels"], bt)
            info = "loss %.3f obj_shape %.2f count %.2f box %.3f" % (
                loss.item(), acc["obj_shape"], acc["count"], acc["box_l1"])
        else:
            kind = kinds[step % len(kinds)]
            maxo = 2 if (name == "stage2" and step < 0.15 * steps) else None
            extra = {}
            if maxo:
                extra["max_objects"] = maxo
            if "weights" in opts:
                extra["weights"] = opts["weights"]
            if vit_trains:
                extra["dense"] = True
            bt = batcher.tasks(seed, IMG_PER_BATCH, Q_PER_IMG, kind, **extra)
            with torch.set_grad_enabled(vit_trains):
                outs = model.visual_encoder(bt["pixels"])
            loss, ok = model.task_loss(outs, bt, batcher.hint_id)
            if vit_trains:
                l0, _, _ = model.stage0_loss(bt["pixels"], bt["dense"], outs=outs)
                loss = loss + opts.get("dense_weight", 1.0) * l0
            for t, o in zip(bt["tasks"], ok.tolist()):
                h = acc_hist.setdefault(t, [])
                h.append(o)
                del h[:-200]
            info = "loss %.3f " % loss.item() + " ".join(
                "%s %.2f" % (t, sum(h) / len(h)) for t, h in sorted(acc_hist.items()))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        prog.update(step + 1, info)
        if (step + 1) % args.ckpt_every == 0 or step + 1 == steps:
            save_ckpt(path, {"stage": name, "step": step + 1, "model": model.state_dict(),
                             "opt": opt.state_dict(), "done": list(state.get("done", []))})
    state["done"] = list(state.get("done", [])) + [name]
    state["stage"], state["step"] = None, 0
    state.pop("opt", None)
    save_ckpt(path, {"stage": None, "step": 0, "model": model.state_dict(), "done": state["done"]})
    print("%s done (%s)" % (name, fmt_t(time.time() - prog.t0)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=os.path.join(ROOT, ".train"), help="checkpoints / vocab (git-ignored)")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "tiny-lion"))
    ap.add_argument("--smoke", action="store_true", help="3 steps per stage, into --work/smoke (a pipeline test)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's step count")
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--stop-after", choices=list(STAGES), default=None,
                    help="stop (without exporting) once this stage is done; rerunning resumes")
    ap.add_argument("--quiet-tagger", action="store_true")
    ap.add_argument("--tagger-only", action="store_true", help="train (or resume) only the RAM tagger")
    ap.add_argument("--export-only", action="store_true",
                    help="export the current checkpoint as it is (stages not finished stay unfinished)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.work = os.path.join(args.work, "smoke")
        args.out = os.path.join(args.work, "model")
        args.steps_scale = 0.0
        args.ckpt_every = 2
        args.log_every = 1
        args.calib_batches = 1
    torch.manual_seed(args.seed)
    cfg, sp, vt = setup(args)

    def nsteps(n):
        return max(3, int(round(n * args.steps_scale)))

    if args.tagger_only:
        train_tagger(args, cfg, sp, vt, nsteps(TAGGER_STEPS))
        return
    if args.export_only:
        import tinylion
        model = tinylion.TinyLion(cfg, seed=args.seed)
        st = torch.load(os.path.join(args.work, "main.pt"), map_location="cpu")
        load_main(model, st["model"])
        print("exporting checkpoint: done %s, in %s at step %s" % (st.get("done"), st.get("stage"), st.get("step")))
        export(args, cfg, model, sp, vt, {"partial": {"done": st.get("done"), "stage": st.get("stage"),
                                                       "step": st.get("step")}})
        return
    t_start = time.time()
    # tagger in its own process (one thread each)
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    tp = ctx.Process(target=_tagger_proc, args=(args, cfg, sp, vt, nsteps(TAGGER_STEPS)))
    tp.start()

    import tinylion
    import data
    model = tinylion.TinyLion(cfg, seed=args.seed)
    batcher = data.Batcher(cfg, sp, vt)
    path = os.path.join(args.work, "main.pt")
    state = {}
    if os.path.exists(path):
        state = torch.load(path, map_location="cpu")
        load_main(model, state["model"])
        print("resumed: done %s, in %s at step %s" % (state.get("done"), state.get("stage"), state.get("step")),
              flush=True)
    stopped = False
    for name, (steps, lr, groups, kinds, *opts) in STAGES.items():
        if name in state.get("done", []):
            continue
        run_stage(args, name, model, batcher, nsteps(steps), lr, groups, kinds, state, *opts)
        if name == args.stop_after and name != list(STAGES)[-1]:
            stopped = True
            break
    tp.join()
    if tp.exitcode != 0:
        raise SystemExit("tagger process failed (exit %s)" % tp.exitcode)
    times = {"this_run_wall_s": round(time.time() - t_start, 1)}
    if stopped:
        print("stopped after %s (rerun to resume)" % args.stop_after, flush=True)
        return
    if not args.no_export:
        export(args, cfg, model, sp, vt, times)


def export(args, cfg, model, sp, vt, times):
    from lion_ref.lion import save_model_dir
    tk = torch.load(os.path.join(args.work, "tagger.done.pt"), map_location="cpu")
    model.ram.load_state_dict(tk["model"])
    model.cfg["tagger"]["thresholds"] = tk["thresholds"]
    model.ram.class_threshold.copy_(torch.tensor(tk["thresholds"]))
    model.eval()
    save_model_dir(model, args.out, "f32", spiece=sp, vocab=vt)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"seed": args.seed, "stages": {k: v[0] for k, v in STAGES.items()},
                   "steps_scale": args.steps_scale, "tagger_steps": TAGGER_STEPS,
                   "tagger_calibration_f1": round(tk["calib_f1"], 4), "times": times,
                   "torch": torch.__version__}, f, indent=1)
    print("exported to %s" % args.out, flush=True)


if __name__ == "__main__":
    main()
