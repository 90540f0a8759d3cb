#!/usr/bin/env python3
"""Held-out evaluation of a Pink model directory (models/tiny-pink) on the shapes world.

    /usr/bin/python3 tools/train/evaluate_pink.py [--model models/tiny-pink] [--n 150]
        [--json models/tiny-pink/eval.json] [--examples models/tiny-pink/examples]

The same held-out set as tools/train/evaluate.py (the tiny LION's): scenes
world.make_scene(900000000 + i), i < n, never used in training, with the questions of
world.task_samples(scene, random.Random(900000000 + i)): every applicable task once per scene,
written as LION instructions. Each instruction is mapped to Pink's task as the llm stage maps
a LION-style request (tinypink.pink_request: "A short image caption:" -> caption,
"Question: Q Short answer:" -> vqa with Q, the bounding-box request -> rec with the expression,
the region-description request -> region_caption with the box), and answered through the
reference (tools/reference/pink_ref, loaded from the model directory as the C stages load it:
tinypink.PinkDir) with Pink's prompt and generation: upstream's demo.py, inference.ipynb and
pink/eval generate greedily (num_beams 1, do_sample False, no penalties; demo.py's temperature
0.7 has no effect without sampling), until eos, at most max_new_tokens (model.json: 64 for the
tiny model; upstream's 1024).

Metrics as evaluate.py: rec = Acc@IoU0.5 of the first "[x0,y0,x1,y1]" in the answer; every
other task exact match (lower-cased, surrounding spaces and a final '.' stripped). Pink has no
tagger, so there is no tag figure (records carry "tags": "" so that eval_c_pipeline.py can
write and compare them like the tiny LION's). The JSON holds the summary and every sample
(scene seed, LION instruction, Pink task and argument, expected, answer and its token ids).
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
import evaluate as lion_evaluate  # noqa: E402
from evaluate import CHANCE, EVAL_SEED_BASE, TARGETS, category_of  # noqa: E402  (the tiny LION's)

ORDER = ["rec", "vqa_colour", "vqa_shape", "count", "relation", "caption", "region_caption"]


def evaluate(m, n, log_every=25):
    records = []
    t0 = time.time()
    for i in range(n):
        seed = EVAL_SEED_BASE + i
        sc = world.make_scene(seed)
        _, vtok = m.image_tokens(m.pixels(sc.image)[None])
        for s in world.task_samples(sc, random.Random(seed)):
            task, text, box = tinypink.pink_request(s["question"])
            ids, answer, _ = m.generate(vtok[0], task, text, box)
            records.append({"seed": seed, "task": s["task"], "category": category_of(s["task"]),
                            "question": s["question"], "pink_task": task,
                            "pink_arg": text if text is not None else (world.fmt_box(box, 1) if box else None),
                            "tags": "", "expected": s["answer"], "answer": answer, "answer_ids": ids,
                            "correct": world.score(s["task"], s["answer"], answer)})
        if log_every and (i + 1) % log_every == 0:
            print("  %d/%d scenes, %.1f s" % (i + 1, n, time.time() - t0), file=sys.stderr, flush=True)
    summary = {}
    for t in ORDER:
        rs = [r for r in records if r["task"] == t]
        if rs:
            summary[t] = {"accuracy": round(sum(r["correct"] for r in rs) / len(rs), 4), "n": len(rs),
                          "chance": round(CHANCE[t], 4)}
    return summary, records, time.time() - t0


def print_summary(summary, secs):
    print("%-15s %8s %6s %7s %7s" % ("task", "score", "n", "chance", "target"))
    for t in ORDER:
        if t in summary:
            s = summary[t]
            print("%-15s %8.4f %6d %7.3f %7s" % ("rec (Acc@0.5)" if t == "rec" else t, s["accuracy"], s["n"],
                                                 s["chance"], "%.2f" % TARGETS[t] if t in TARGETS else "-"))
    print("(%.1f s)" % secs)


PINK_EXAMPLES_NOTE = ("instruction = a LION-style request; the llm stage maps it to Pink's task and "
                      "prompt (caption; vqa with the question; rec with the expression; region_caption "
                      "with the box). Pink has no tagger and no router: category only names the task "
                      "kind. reference_answer = what pink_ref produced with the model's generation "
                      "defaults (greedy).")


def write_examples(model_dir, records, out_dir, per_task=1):
    """A few held-out scenes the model answers correctly, one request per task, in lion-batch's
    format (the tiny LION's examples/requests.json): LION-style instructions."""
    return lion_evaluate.write_examples(model_dir, records, out_dir, per_task, tasks=ORDER, with_tags=False,
                                        note=PINK_EXAMPLES_NOTE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-pink"))
    ap.add_argument("--n", type=int, default=150, help="held-out scenes (each gives every applicable task)")
    ap.add_argument("--json", default=None, help="results file (default: <model>/eval.json)")
    ap.add_argument("--examples", default=None, help="also write example requests here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = tinypink.PinkDir(args.model)
    summary, records, secs = evaluate(m, args.n)
    print_summary(summary, secs)
    out = args.json or os.path.join(args.model, "eval.json")
    with open(out, "w") as f:
        json.dump({"model": os.path.relpath(args.model, ROOT) if args.model.startswith(ROOT) else args.model,
                   "n_scenes": args.n, "eval_seed_base": EVAL_SEED_BASE, "generation": m.gen,
                   "summary": summary, "seconds": round(secs, 1), "torch": torch.__version__,
                   "records": records}, f, indent=1)
    print("wrote %s" % out)
    if args.examples:
        reqs = write_examples(args.model, records, args.examples)
        print("wrote %d example requests to %s" % (len(reqs), args.examples))


if __name__ == "__main__":
    main()
