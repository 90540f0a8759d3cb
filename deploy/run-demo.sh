#!/usr/bin/env bash
# The main job (README): builds the release, starts one gateway on loopback serving the
# embedded tiny models (models/tiny-lion, and models/tiny-pink when present) and the stage
# workers of each (LION: vision, tagger, aggregator, llm; Pink: vision, llm), answers each
# model's example requests with lion-batch --model NAME (--check against the expected
# answers, --draw the region answers' boxes into build/demo/NAME), prints each model's held-out
# evaluation (eval.json) beside that regression check, shows one OpenAI-shaped chat completion
# per model, stops every process, and exits non-zero when any answer was wrong or failed.
#
#   bash deploy/run-demo.sh [--model DIR [--model DIR ...]] [--port N] [--no-deps]
#
# --model (repeatable) serves those model directories instead.
set -euo pipefail
cd "$(dirname "$0")/.."

models=()
port=8080
deps=1
# another build tree (a teammate's, CI's): LION_DEMO_BUILD=dir
build=${LION_DEMO_BUILD:-build}
while [ $# -gt 0 ]; do
  case "$1" in
    --model) models+=("$2"); shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --no-deps) deps=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run-demo: unknown argument '$1' (--model DIR [--model DIR ...], --port N, --no-deps)" >&2; exit 2 ;;
  esac
done
# both embedded models by default: tiny LION and tiny Pink, served by one gateway
if [ ${#models[@]} -eq 0 ]; then
  models=(models/tiny-lion)
  [ -f models/tiny-pink/model.json ] && models+=(models/tiny-pink)
fi
family_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1] + "/model.json")).get("family", "lion"))' "$1"; }
names=()
for model in "${models[@]}"; do
  for f in "$model/model.json" "$model/examples/requests.json"; do
    [ -f "$f" ] || { echo "run-demo: $f is missing (is $model a trained model directory with examples/?)" >&2; exit 2; }
  done
  family=$(family_of "$model")
  name=$(basename "$model")
  if [ "$family" = lion ]; then names+=("$name"); else names+=("$name=$family"); fi
done
model_names=$(IFS=,; echo "${names[*]}")

[ "$deps" = 1 ] && bash deploy/install-deps.sh
echo "== release build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)"

pids=()
stop_all() {
  # workers first (they hand queued jobs back and say BYE), then the gateway
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

logs=$build/demo/logs
mkdir -p "$logs"
base=$((port + 100))
export OMP_WAIT_POLICY=passive
"$build"/services/lion-gateway --listen "127.0.0.1:$port" --bind-base "tcp://127.0.0.1:$base" \
  --model-name "$model_names" >"$logs/gateway.log" 2>&1 &
pids+=($!)
# every model's workers connect to the same stage endpoints (vision, tagger, aggregator, llm
# at base + 0..3) and announce their model; a Pink model has no tagger and no aggregator
for model in "${models[@]}"; do
  name=$(basename "$model")
  stages="vision tagger aggregator llm"
  [ "$(family_of "$model")" = pink ] && stages="vision llm"
  for svc in $stages; do
    case $svc in vision) p=$base ;; tagger) p=$((base + 1)) ;; aggregator) p=$((base + 2)) ;; llm) p=$((base + 3)) ;; esac
    "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$p" --model "$model" --threads 1 \
      >"$logs/$name-$svc.log" 2>&1 &
    pids+=($!)
  done
done

echo "== waiting for the workers of ${names[*]} (logs in $logs)"
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "run-demo: a process exited early; see $logs" >&2; tail -n 5 "$logs"/*.log >&2; exit 1; }
  done
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" || { echo "run-demo: the gateway never became ready; see $logs" >&2; exit 1; }
echo

status=0
for model in "${models[@]}"; do
name=$(basename "$model")
requests="$model/examples/requests.json"
out=$build/demo/$name
mkdir -p "$out"
echo "== $name ($(family_of "$model")): lion-batch --model $name --check on $requests"
"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --model "$name" --check --draw "$out" \
  --out "$out"/answers.jsonl "$requests" || status=1
# "N passed" is a regression check on examples the reference answered right, not the
# model's accuracy: show the held-out evaluation beside it (README, "What 7 passed means")
python3 - "$model/eval.json" "$requests" <<'PY' || true
import json, os, sys
path, reqs = sys.argv[1], sys.argv[2]
n = len(json.load(open(reqs))["requests"])
print("== 'N passed' above is a regression check (%d examples picked among answers the PyTorch "
      "reference got right), not the model's accuracy" % n)
if not os.path.isfile(path):
    print("   (no %s: no held-out evaluation to show)" % path)
    sys.exit(0)
e = json.load(open(path))
s = e["summary"]
print("== held-out evaluation (%s): %d scenes never used in training, "
      "PyTorch reference, %d beams" % (path, e["n_scenes"], e.get("generation", {}).get("num_beams", 0)))
names = [("rec", "REC Acc@IoU0.5"), ("vqa_colour", "VQA colour"), ("vqa_shape", "VQA shape"),
         ("count", "counting"), ("relation", "relation"), ("caption", "caption"),
         ("region_caption", "region caption")]
for key, label in names + [(k, k) for k in s if k not in dict(names) and k != "tags"]:
    if key in s:
        t = s[key]
        print("   %-16s %6.1f%%  (%d questions, chance %.0f%%)" % (label, 100 * t["accuracy"], t["n"],
                                                                   100 * t.get("chance", 0)))
if "tags" in s:
    t = s["tags"]
    print("   %-16s %6.1f%%  (micro F1 over %d scenes; precision %.1f%%, recall %.1f%%)" % (
        "RAM tags F1", 100 * t["f1"], t["n"], 100 * t["precision"], 100 * t["recall"]))
PY
echo "== answers of $name ($out/answers.jsonl; region answers drawn in $out/<id>.png)"
python3 - "$out"/answers.jsonl <<'PY' || cat "$out"/answers.jsonl
import json, sys
for line in open(sys.argv[1]):
    a = json.loads(line)
    verdict = {True: "ok  ", False: "FAIL"}.get(a.get("pass"), "    ")
    print("%s [%s] %s -> %s" % (verdict, a.get("task"), a.get("instruction"), a.get("text", a.get("error"))))
    if a.get("pass") is False and "expected" in a:
        print("          expected: %s" % a["expected"])
PY

# the caption example (the first request when there is none): its image and instruction
IFS=$'\t' read -r image instruction expected < <(python3 -c '
import json, sys
reqs = json.load(open(sys.argv[1]))["requests"]
r = next((q for q in reqs if q.get("task") == "caption"), reqs[0])
print("\t".join([r["image"], json.dumps(r["instruction"]), json.dumps(r.get("expected", ""))]))' "$requests")
echo "== POST /v1/chat/completions (OpenAI-shaped): $image, $instruction (expected $expected)"
body=$(mktemp)
printf '{"model":"%s","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}},{"type":"text","text":%s}]}],"max_tokens":40,"temperature":0}' \
  "$name" "$(base64 -w0 "$model/examples/$image")" "$instruction" >"$body"
curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' --data-binary @"$body" || status=1
echo
rm -f "$body"
done

stop_all
exit $status
