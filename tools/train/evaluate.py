#!/usr/bin/env python3
"""Held-out evaluation of a LION model directory on the shapes world.

    /usr/bin/python3 tools/train/evaluate.py [--model models/tiny-lion] [--n 150]
        [--json models/tiny-lion/eval.json] [--examples models/tiny-lion/examples]

Deterministic: scenes are world.make_scene(900000000 + i), i < n (never used in
training), and the questions of scene i come from world.task_samples(scene,
random.Random(900000000 + i)): every applicable task once per scene.  Everything runs
the way a served request does, through lion_ref (load_model_dir, LionModel.generate
with the model's generation defaults: 5 beams, repetition penalty 1.5, ...):
the tags in the prompt are the model's own RAM tags (tagger thresholds from
model.json), the category is "region_level" for REC / region captions and
"image_level" otherwise.

Metrics: rec = Acc@IoU0.5 of the first "[x0,y0,x1,y1]" in the answer; tags = micro F1
of the RAM tags against the scene's shape and colour words; every other task = exact
match (lower-cased, surrounding spaces and a final '.' stripped).  The JSON holds the
summary and every sample (image seed, instruction, category, tags, expected, answer) so
the C pipeline can replay the same requests and compare.
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
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import torch  # noqa: E402

import world  # noqa: E402

EVAL_SEED_BASE = 900_000_000
CHANCE = {"vqa_colour": 1 / len(world.COLOURS), "vqa_shape": 1 / len(world.SHAPES),
          "count": 0.25, "relation": 0.5, "region_caption": 1 / (len(world.COLOURS) * len(world.SHAPES)),
          "caption": 0.0, "rec": 0.0}
TARGETS = {"rec": 0.85, "vqa_colour": 0.90, "vqa_shape": 0.90, "count": 0.80, "tags": 0.90}
ORDER = ["rec", "vqa_colour", "vqa_shape", "count", "relation", "caption", "region_caption", "tags"]


def category_of(task):
    return "region_level" if world.TASKS[task] == "region" else "image_level"


def evaluate(model, n, log_every=25, gen_over=None):
    gen_over = gen_over or {}
    records = []
    tag_tp = tag_fp = tag_fn = 0
    t0 = time.time()
    for i in range(n):
        seed = EVAL_SEED_BASE + i
        sc = world.make_scene(seed)
        tags = model.generate_tags([sc.image])[0]
        pred = [t for t in (x.strip() for x in tags.split(",")) if t]
        gt = set(sc.tags)
        tag_tp += len(gt & set(pred))
        tag_fp += len(set(pred) - gt)
        tag_fn += len(gt - set(pred))
        samples = world.task_samples(sc, random.Random(seed))
        for cat in ("image_level", "region_level"):
            ss = [s for s in samples if category_of(s["task"]) == cat]
            if not ss:
                continue
            outs = model.generate([sc.image] * len(ss), [s["question"] for s in ss], tags=[tags] * len(ss),
                                  category=cat, **gen_over)
            for s, a in zip(ss, outs):
                records.append({"seed": seed, "task": s["task"], "category": cat, "question": s["question"],
                                "tags": tags, "expected": s["answer"], "answer": a,
                                "correct": world.score(s["task"], s["answer"], a)})
        if log_every and (i + 1) % log_every == 0:
            print("  %d/%d scenes, %.1f s" % (i + 1, n, time.time() - t0), file=sys.stderr, flush=True)
    summary = {}
    for t in ORDER[:-1]:
        rs = [r for r in records if r["task"] == t]
        if rs:
            summary[t] = {"accuracy": round(sum(r["correct"] for r in rs) / len(rs), 4), "n": len(rs),
                          "chance": round(CHANCE[t], 4)}
    p = tag_tp / max(1, tag_tp + tag_fp)
    r = tag_tp / max(1, tag_tp + tag_fn)
    f1 = 2 * p * r / max(1e-9, p + r)
    summary["tags"] = {"f1": round(f1, 4), "precision": round(p, 4), "recall": round(r, 4), "n": n}
    return summary, records, time.time() - t0


def print_summary(summary, secs):
    print("%-15s %8s %6s %7s %7s" % ("task", "score", "n", "chance", "target"))
    for t in ORDER:
        if t not in summary:
            continue
        s = summary[t]
        v = s.get("accuracy", s.get("f1"))
        name = {"rec": "rec (Acc@0.5)", "tags": "tags (F1)"}.get(t, t)
        print("%-15s %8.4f %6d %7s %7s" % (name, v, s["n"], "%.3f" % s["chance"] if "chance" in s else "-",
                                            "%.2f" % TARGETS[t] if t in TARGETS else "-"))
    print("(%.1f s)" % secs)


LION_EXAMPLES_NOTE = ("instruction = the question only; the server adds the RAM tag prompt. "
                      "category selects the adapter (region_level: router idx 0, image_level: 1). "
                      "reference_* = what lion_ref produced with the model's generation defaults.")


def write_examples(model_dir, records, out_dir, per_task=1, tasks=None, with_tags=True, note=LION_EXAMPLES_NOTE):
    """A few held-out scenes the model answers correctly, one request per task (of tasks:
    default every task but tags), in lion-batch's format (the model's examples/requests.json);
    with_tags adds the reference's tags. evaluate_pink.py writes tiny-pink's with it."""
    os.makedirs(out_dir, exist_ok=True)
    chosen, used = [], set()
    for t in ORDER[:-1] if tasks is None else tasks:
        k = 0
        for r in records:
            # a different scene per task, with more than one object where possible
            if (r["task"] == t and r["correct"] and r["seed"] not in used
                    and len(world.make_scene(r["seed"]).objects) >= 2):
                chosen.append(r)
                used.add(r["seed"])
                k += 1
                if k >= per_task:
                    break
    reqs = []
    for j, r in enumerate(chosen):
        fn = "scene_%d.png" % (r["seed"] - EVAL_SEED_BASE)
        if not os.path.exists(os.path.join(out_dir, fn)):
            world.make_scene(r["seed"]).image.save(os.path.join(out_dir, fn))
        q = {"id": j, "image": fn, "task": r["task"], "category": r["category"],
             "instruction": r["question"], "expected": r["expected"], "reference_answer": r["answer"]}
        if with_tags:
            q["reference_tags"] = r["tags"]
        q["match"] = "iou>=0.5" if r["task"] == "rec" else "exact"
        reqs.append(q)
    with open(os.path.join(out_dir, "requests.json"), "w") as f:
        json.dump({"model": os.path.basename(os.path.normpath(model_dir)), "note": note, "requests": reqs},
                  f, indent=1)
    return reqs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-lion"))
    ap.add_argument("--n", type=int, default=150, help="held-out scenes (each gives every applicable task)")
    ap.add_argument("--json", default=None, help="results file (default: <model>/eval.json)")
    ap.add_argument("--examples", default=None, help="also write example requests here")
    ap.add_argument("--num-beams", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lion_ref.lion import load_model_dir
    model = load_model_dir(args.model)
    over = {}
    if args.num_beams:
        over["num_beams"] = args.num_beams
    if args.max_new_tokens:
        over["max_new_tokens"] = args.max_new_tokens
    summary, records, secs = evaluate(model, args.n, gen_over=over)
    print_summary(summary, secs)
    out = args.json or os.path.join(args.model, "eval.json")
    with open(out, "w") as f:
        json.dump({"model": args.model, "n_scenes": args.n, "eval_seed_base": EVAL_SEED_BASE,
                   "generation": model.gen_config(**over), "summary": summary,
                   "seconds": round(secs, 1), "torch": torch.__version__, "records": records}, f, indent=1)
    print("wrote %s" % out)
    if args.examples:
        reqs = write_examples(args.model, records, args.examples)
        print("wrote %d example requests to %s" % (len(reqs), args.examples))


if __name__ == "__main__":
    main()
