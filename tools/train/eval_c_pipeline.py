"""The held-out evaluation through the C pipeline: the same requests as evaluate.py, sent by
lion-batch to the running services, scored the same way, compared with the reference.

  eval_c_pipeline.py write DIR [--model models/tiny-lion]
      writes DIR/scene_*.png and DIR/requests.json (lion-batch's format) for every record of
      <model>/eval.json: the held-out scenes, questions and ground truth, and the answer and
      RAM tags the PyTorch reference gave.
  eval_c_pipeline.py compare DIR ANSWERS.jsonl [--model models/tiny-lion]
                    [--max-points P --min-identical F] [--record KEY [--note TEXT]]
      scores lion-batch's answers per task as evaluate.py does, prints them beside
      eval.json's figures, counts answers and tags that differ from the reference, and exits
      non-zero unless every per-task figure is the same.
      With --max-points (a pipeline that is not meant to be exact, e.g. the llm worker in
      --precision bf16): passes when every per-task figure is within P accuracy points
      (P / 100) of the reference's and at least the fraction F of the answers is identical
      to the reference's (--min-identical, default 0.97).
      --record KEY writes the figures (per-task accuracy, answers identical, the thresholds,
      --note) into <model>/eval.json under KEY, leaving every other key as it was (byte for
      byte: the file is json.dump(..., indent=1) output).

Needs only the generator (world.py) and the standard library: no torch.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import world  # noqa: E402


def load_eval(model):
    with open(os.path.join(model, "eval.json")) as f:
        return json.load(f)


def write(args):
    ev = load_eval(args.model)
    os.makedirs(args.dir, exist_ok=True)
    reqs = []
    for i, r in enumerate(ev["records"]):
        fn = "scene_%d.png" % (r["seed"] - ev["eval_seed_base"])
        path = os.path.join(args.dir, fn)
        if not os.path.exists(path):
            world.make_scene(r["seed"]).image.save(path)
        reqs.append({"id": i, "image": fn, "task": r["task"], "category": r["category"],
                     "instruction": r["question"], "expected": r["expected"],
                     "reference_answer": r["answer"], "reference_tags": r["tags"],
                     "match": "iou>=0.5" if r["task"] == "rec" else "exact"})
    with open(os.path.join(args.dir, "requests.json"), "w") as f:
        json.dump({"model": os.path.basename(os.path.normpath(args.model)), "requests": reqs}, f)
    print("wrote %d requests over %d scenes to %s" % (len(reqs), ev["n_scenes"], args.dir))
    return 0


def compare(args):
    ev = load_eval(args.model)
    with open(os.path.join(args.dir, "requests.json")) as f:
        reqs = {str(r["id"]): r for r in json.load(f)["requests"]}
    got = {}
    with open(args.answers) as f:
        for line in f:
            a = json.loads(line)
            got[str(a["id"])] = a
    per, diff_answers, diff_tags, missing = {}, [], 0, 0
    for rid, r in reqs.items():
        a = got.get(rid)
        if a is None or "text" not in a:
            missing += 1
            continue
        per.setdefault(r["task"], []).append(world.score(r["task"], r["expected"], a["text"]))
        if a["text"] != r["reference_answer"]:
            diff_answers.append((rid, r["instruction"], a["text"], r["reference_answer"]))
        if ", ".join(a.get("tags", [])) != r["reference_tags"]:
            diff_tags += 1
    same = missing == 0
    close = missing == 0
    tolerance = args.max_points / 100.0 if args.max_points is not None else None
    accuracy, worst_points = {}, 0.0
    print("%-15s %9s %9s %5s" % ("task", "C", "reference", "n"))
    for task, s in ev["summary"].items():
        if task == "tags":
            continue
        c = round(sum(per.get(task, [])) / max(len(per.get(task, [])), 1), 4)
        accuracy[task] = c
        points = abs(c - s["accuracy"]) * 100
        worst_points = max(worst_points, points)
        same &= c == s["accuracy"]
        if tolerance is not None:
            close &= points <= args.max_points + 1e-9
            mark = "" if c == s["accuracy"] else "   %+.2f points%s" % (
                (c - s["accuracy"]) * 100, "" if points <= args.max_points + 1e-9 else " OVER")
        else:
            mark = "" if c == s["accuracy"] else "   DIFFERS"
        print("%-15s %9.4f %9.4f %5d%s" % (task, c, s["accuracy"], len(per.get(task, [])), mark))
    identical = len(reqs) - len(diff_answers) - missing
    print("answers differing from the reference: %d of %d; tag lists differing: %d; unanswered: %d"
          % (len(diff_answers), len(reqs), diff_tags, missing))
    for rid, q, c, ref in diff_answers[:10]:
        print("  request %s: %r -> C %r, reference %r" % (rid, q, c, ref))
    if tolerance is not None:
        fraction = identical / max(len(reqs), 1)
        close &= fraction >= args.min_identical
        print("identical answers: %d of %d (%.2f%%, at least %.0f%% asked); largest per-task difference %.2f points "
              "(at most %g asked): %s" % (identical, len(reqs), 100 * fraction, 100 * args.min_identical,
                                          worst_points, args.max_points, "PASS" if close else "FAIL"))
    if args.record:
        record(args, ev, accuracy, identical, len(reqs), diff_tags, missing, worst_points)
    return 0 if (close if tolerance is not None else same) else 1


def record(args, ev, accuracy, identical, total, diff_tags, missing, worst_points):
    """Writes the figures into <model>/eval.json under args.record; the other keys keep their bytes."""
    path = os.path.join(args.model, "eval.json")
    with open(path) as f:
        text = f.read()
    if json.dumps(json.loads(text), indent=1) != text:
        raise SystemExit("%s is not json.dump(indent=1) output: not rewriting it" % path)
    entry = {"note": args.note or "", "summary": accuracy,
             "answers": total, "answers_identical": identical,
             "answers_identical_fraction": round(identical / max(total, 1), 4),
             "tag_lists_differing": diff_tags, "unanswered": missing,
             "largest_task_difference_points": round(worst_points, 2)}
    if args.max_points is not None:
        entry["thresholds"] = {"max_points": args.max_points, "min_identical": args.min_identical}
    ev[args.record] = entry
    with open(path, "w") as f:
        f.write(json.dumps(ev, indent=1))
    print("recorded under %r in %s" % (args.record, path))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["write", "compare"])
    ap.add_argument("dir")
    ap.add_argument("answers", nargs="?")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "models", "tiny-lion"))
    ap.add_argument("--max-points", type=float, default=None,
                    help="compare within this many accuracy points per task instead of exactly")
    ap.add_argument("--min-identical", type=float, default=0.97,
                    help="with --max-points: the least fraction of answers identical to the reference's")
    ap.add_argument("--record", metavar="KEY", help="write the figures into <model>/eval.json under KEY")
    ap.add_argument("--note", help="with --record: what was run (precision, CPU, build)")
    args = ap.parse_args()
    if args.command == "compare" and not args.answers:
        ap.error("compare needs the answers file")
    if args.record and args.record in ("model", "n_scenes", "eval_seed_base", "generation", "summary", "seconds",
                                       "torch", "records"):
        ap.error("--record %s would overwrite the reference's own figures" % args.record)
    return write(args) if args.command == "write" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
