#!/usr/bin/env bash
# One gateway serving both embedded models at once (docs/operations.md, "Several models"),
# the real processes on loopback:
#   1. lion-gateway --model-name tiny-lion,tiny-pink=pink; LION's four stage workers on
#      models/tiny-lion and Pink's vision and llm workers on models/tiny-pink, all on the same
#      stage endpoints; /v1/models lists both;
#   2. lion-batch --model tiny-lion --check and lion-batch --model tiny-pink --check on each
#      model's example requests (repeated), at the same time: every answer right;
#   3. the Pink requests touched only Pink's workers: the gateway's per-model job counters
#      show no tagger or aggregator job for tiny-pink;
#   4. a chat completion naming tiny-pink answers a (text, not box) Pink example as the
#      PyTorch reference did.
# Ports from this process id. Needs $LION_BUILD_DIR (ctest sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}
lion=models/tiny-lion pink=models/tiny-pink
for f in "$lion/examples/requests.json" "$pink/examples/requests.json"; do
  [ -f "$f" ] || { echo "e2e: $f missing"; exit 1; }
done
work=$(mktemp -d)
export OMP_WAIT_POLICY=passive
# a block of 8 of its own, 18000..19999: below the kernel's ephemeral ports (32768..), which an
# outgoing connection may hold, and apart from the other e2e scripts' blocks (12000..17999,
# 20000..31999)
port=$((18000 + ($$ % 250) * 8)) base=$((port + 1))

pids=()
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "e2e FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

"$build"/services/lion-gateway --listen "127.0.0.1:$port" --bind-base "tcp://127.0.0.1:$base" \
  --model-name tiny-lion,tiny-pink=pink >"$work/gateway.log" 2>&1 &
pids+=($!)
start_worker() { # model stage endpoint-offset
  "$build"/services/lion-$2 --gateway "tcp://127.0.0.1:$((base + $3))" --model "$1" --threads 1 \
    >"$work/$(basename "$1")-$2.log" 2>&1 &
  pids+=($!)
}
start_worker $lion vision 0
start_worker $lion tagger 1
start_worker $lion aggregator 2
start_worker $lion llm 3
start_worker $pink vision 0
start_worker $pink llm 3
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null \
  || fail "the gateway never had both models ready: $(curl -s "http://127.0.0.1:$port/readyz")"
models=$(curl -sf "http://127.0.0.1:$port/v1/models") || fail "/v1/models did not answer"
for m in tiny-lion tiny-pink; do
  grep -q "\"id\":\"$m\"" <<<"$models" || fail "/v1/models does not list $m: $models"
done

# each model's examples, five times over (distinct ids), both batches at once
repeat() { # requests.json out.json
  python3 - "$1" "$2" <<'PY'
import json, os, sys
src, out = sys.argv[1], sys.argv[2]
d = json.load(open(src))
base = os.path.dirname(os.path.abspath(src))
reqs = []
for k in range(5):
    for r in d["requests"]:
        q = dict(r, id="%s-%d" % (r["id"], k), image=os.path.join(base, r["image"]))
        reqs.append(q)
json.dump({"requests": reqs}, open(out, "w"))
PY
}
repeat "$lion/examples/requests.json" "$work/lion.json"
repeat "$pink/examples/requests.json" "$work/pink.json"
batch() { # model requests out log
  "$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --model "$1" --concurrency 4 --check \
    --progress none --out "$3" "$2" 2>"$4"
}
batch tiny-lion "$work/lion.json" "$work/lion.jsonl" "$work/lion-batch.log" &
lion_batch=$!
batch tiny-pink "$work/pink.json" "$work/pink.jsonl" "$work/pink-batch.log" || fail "tiny-pink's examples: $(tail -n 5 "$work/pink-batch.log")"
wait "$lion_batch" || fail "tiny-lion's examples: $(tail -n 5 "$work/lion-batch.log")"
grep -E "passed|requests/s" "$work/lion-batch.log" "$work/pink-batch.log"

# Pink's pipeline is vision -> llm: its requests reached no tagger or aggregator
metrics=$(curl -sf "http://127.0.0.1:$port/metrics") || fail "/metrics did not answer"
for stage in tagger aggregator; do
  grep -q "^lion_jobs_total{stage=\"$stage\",model=\"tiny-pink\"} [1-9]" <<<"$metrics" \
    && fail "a tiny-pink request reached the $stage stage"
done
grep -q '^lion_jobs_total{stage="llm",model="tiny-pink"} [1-9]' <<<"$metrics" \
  || fail "/metrics shows no tiny-pink llm job: $(grep '^lion_jobs_total' <<<"$metrics")"

# OpenAI-shaped, naming the Pink model
IFS=$'\t' read -r image instruction expected < <(python3 -c '
import json, sys
r = next(q for q in json.load(open(sys.argv[1]))["requests"] if q.get("match") != "iou>=0.5")
print("\t".join([r["image"], json.dumps(r["instruction"]), json.dumps(r.get("reference_answer", r["expected"]))]))' "$pink/examples/requests.json")
printf '{"model":"tiny-pink","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}},{"type":"text","text":%s}]}],"temperature":0}' \
  "$(base64 -w0 "$pink/examples/$image")" "$instruction" >"$work/chat.json"
answer=$(curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  --data-binary @"$work/chat.json") || fail "chat completion with model tiny-pink: no answer"
python3 - "$answer" "$expected" <<'PY' || fail "tiny-pink's chat answer: $answer"
import json, sys
a, want = json.loads(sys.argv[1]), json.loads(sys.argv[2])
got = a["choices"][0]["message"]["content"]
assert a["model"] == "tiny-pink", a["model"]
assert got == want, "%r != %r" % (got, want)
print("chat completion, model tiny-pink: %r" % got)
PY
stop_all
echo "1 passed, 0 failed"
