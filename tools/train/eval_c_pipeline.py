"""The held-out evaluation through the C pipeline: the same requests as evaluate.py, sent by
lion-batch to the running services, scored the same way, compared with the reference.

  eval_c_pipeline.py write DIR [--model models/tiny-lion]
      writes DIR/scene_*.png and DIR/requests.json (lion-batch's format) for every record of
      <model>/eval.json: the held-out scenes, questions and ground truth, and the answer and
      RAM tags the PyTorch reference gave.
  eval_c_pipeline.py compare DIR ANSWERS.jsonl [--model models/tiny-lion]
      scores lion-batch's answers per task as evaluate.py does, prints them beside
      eval.json's figures, counts answers and tags that differ from the reference, and exits
      non-zero unless every per-task figure is the same.

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
    print("%-15s %9s %9s %5s" % ("task", "C", "reference", "n"))
    for task, s in ev["summary"].items():
        if task == "tags":
            continue
        c = round(sum(per.get(task, [])) / max(len(per.get(task, [])), 1), 4)
        same &= c == s["accuracy"]
        print("%-15s %9.4f %9.4f %5d%s" % (task, c, s["accuracy"], len(per.get(task, [])),
                                           "" if c == s["accuracy"] else "   DIFFERS"))
    print("answers differing from the reference: %d of %d; tag lists differing: %d; unanswered: %d"
          % (len(diff_answers), len(reqs), diff_tags, missing))
    for rid, q, c, ref in diff_answers[:10]:
        print("  request %s: %r -> C %r, reference %r" % (rid, q, c, ref))
    return 0 if same else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["write", "compare"])
    ap.add_argument("dir")
    ap.add_argument("answers", nargs="?")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "models", "tiny-lion"))
    args = ap.parse_args()
    if args.command == "compare" and not args.answers:
        ap.error("compare needs the answers file")
    return write(args) if args.command == "write" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
