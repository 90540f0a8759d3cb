#!/usr/bin/env bash
# End to end on the embedded trained model (models/tiny-lion): the gateway and the four
# workers as separate processes, real HTTP requests, the model's correct answers.
#   1. lion-batch --check answers every example request (examples/requests.json) correctly;
#   2. an OpenAI-shaped /v1/chat/completions request gets the expected answer;
#   3. lion-tap dumps the run's messages (with tensors) from the gateway's tap, and shows them;
#   4. lion-tap replay of every dumped vision job and a dumped llm job into fresh workers
#      gives byte-identical answers;
#   5. the whole held-out evaluation (models/tiny-lion/eval.json: 980 requests over 150
#      scenes) through the pipeline reproduces the reference's per-task figures, answers
#      and tags exactly (tools/train/eval_c_pipeline.py);
#   6. lion-batch over the examples repeated (140 ids) loses and doubles nothing when the
#      gateway is killed and restarted mid-run, nor when lion-batch is killed and resumed.
#   7. all four workers in --precision bf16 (every weight matrix held in bf16 only): the same
#      evaluation within 1 accuracy point per task of the reference with >= 97% of the
#      answers identical, and /metrics shows lion_worker_info with their precision.
# Loopback only; ports from this process id. Needs $LION_BUILD_DIR (ctest sets it).
# LION_E2E_RECORD_BF16="note" also writes step 7's figures into models/tiny-lion/eval.json
# (c_pipeline_bf16) with that note: for whoever changes the bf16 path, never in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}
model=models/tiny-lion
requests=$model/examples/requests.json
[ -f "$requests" ] || { echo "e2e: $requests missing"; exit 1; }
work=$(mktemp -d)
export OMP_WAIT_POLICY=passive
# below the ephemeral range (32768+), where outgoing connections may hold a port
port=$((20000 + ($$ % 500) * 12)) # a block of 12 of its own: 20000..25999
base=$((port + 1)) tap_port=$((port + 10)) replay_port=$((port + 11))

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
  --tap "tcp://127.0.0.1:$tap_port" --model-name tiny-lion >"$work/gateway.log" 2>&1 &
pids+=($!)
p=$base
for svc in vision tagger aggregator llm; do
  # the llm worker holds one job at a time so that its replay below is byte-exact: in a
  # running batch a job's products are computed beside other rows, which sums GEMM tile
  # edges in another order (docs/operations.md, replay)
  batch="--max-batch 4"
  [ $svc = llm ] && batch="--capacity 1 --max-batch 1"
  "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$p" --model "$model" --threads 1 $batch \
    >"$work/$svc.log" 2>&1 &
  pids+=($!)
  p=$((p + 1))
done
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || fail "the gateway never became ready"

# the tap recorder runs through the whole batch
"$build"/tools/tap/lion-tap dump --tap "tcp://127.0.0.1:$tap_port" --out "$work/run.dump" --timeout-ms 600000 \
  >"$work/dump.log" 2>&1 &
dump_pid=$!
sleep 0.5

"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --check --out "$work/answers.jsonl" \
  "$requests" 2>"$work/batch.log" || fail "lion-batch --check: $(tail -n 3 "$work/batch.log")"
grep -E "^[0-9]+ passed, 0 failed$" "$work/batch.log" >/dev/null || fail "no clean pass line from lion-batch"
echo "lion-batch: $(grep -E 'passed, [0-9]+ failed' "$work/batch.log")"

# OpenAI-shaped: the first image-level example through /v1/chat/completions
python3 - "$requests" "$model" >"$work/chat.json" <<'PY'
import base64, json, sys
reqs = json.load(open(sys.argv[1]))["requests"]
r = next(r for r in reqs if r["category"] == "image_level" and r["match"] == "exact")
img = base64.b64encode(open(sys.argv[2] + "/examples/" + r["image"], "rb").read()).decode()
print(json.dumps({"model": "tiny-lion", "lion_task": "image_level", "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + img}},
    {"type": "text", "text": r["instruction"]}]}], "_expected": r["expected"]}))
PY
curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  --data-binary @"$work/chat.json" >"$work/chat_answer.json" || fail "chat request failed"
python3 - "$work/chat.json" "$work/chat_answer.json" <<'PY' || fail "chat answer differs"
import json, sys
want = json.load(open(sys.argv[1]))["_expected"].strip().lower().rstrip(".")
a = json.load(open(sys.argv[2]))
got = a["choices"][0]["message"]["content"].strip().lower().rstrip(".")
assert a["object"] == "chat.completion", a
print("chat: %r (expected %r)" % (got, want))
sys.exit(0 if got == want else 1)
PY

kill -TERM "$dump_pid" 2>/dev/null || true
wait "$dump_pid" 2>/dev/null || true
[ -s "$work/run.dump" ] || fail "the tap dump is empty"
"$build"/tools/tap/lion-tap show "$work/run.dump" >"$work/show.txt" 2>&1 || fail "lion-tap show: $(tail -n 3 "$work/show.txt")"
for stage in vision tagger aggregator llm; do
  grep -q " $stage " "$work/show.txt" || fail "the tap dump has no $stage messages"
done
echo "lion-tap: $(wc -l <"$work/show.txt") messages dumped"

# the held-out evaluation through the C pipeline
/usr/bin/python3 tools/train/eval_c_pipeline.py write "$work/eval" >/dev/null || fail "eval_c_pipeline write"
"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --concurrency 8 --out "$work/eval_answers.jsonl" \
  "$work/eval/requests.json" 2>"$work/eval_batch.log" || fail "lion-batch on the evaluation: $(tail -n 2 "$work/eval_batch.log")"
/usr/bin/python3 tools/train/eval_c_pipeline.py compare "$work/eval" "$work/eval_answers.jsonl" >"$work/eval_compare.txt" \
  || { cat "$work/eval_compare.txt"; fail "the C pipeline's evaluation differs from the reference's"; }
grep "answers differing from the reference: 0 of" "$work/eval_compare.txt" >/dev/null \
  || { cat "$work/eval_compare.txt"; fail "answers differ from the reference"; }
cat "$work/eval_compare.txt"


# replay every request's vision job (the vision stage is batch-invariant, whatever the batch
# it ran in) and the first request's llm job into fresh workers
rids=$(python3 - "$work/answers.jsonl" <<'PY'
import json, sys
print(" ".join(json.loads(l)["request_id"] for l in open(sys.argv[1])))
PY
)
replay() { # stage rid...
  local stage=$1 wpid out
  shift
  "$build"/services/lion-$stage --gateway "tcp://127.0.0.1:$replay_port" --model "$model" --threads 1 \
    >"$work/replay_$stage.log" 2>&1 &
  wpid=$!
  for rid in "$@"; do
    out=$("$build"/tools/tap/lion-tap replay "$work/run.dump" --request "$rid" --stage $stage \
          --bind "tcp://127.0.0.1:$replay_port" --timeout-ms 60000 2>&1) || { kill $wpid; fail "replay $stage $rid: $out"; }
    echo "$out" | grep -q identical || { kill $wpid; fail "replay $stage $rid: $out"; }
    echo "replay $stage ($rid): identical"
  done
  kill -TERM $wpid
  wait $wpid 2>/dev/null || true
}
replay vision $rids
replay llm ${rids%% *}

# lion-batch through failures, on the real model: the example requests 20 times each (140
# distinct ids). Run 1: the gateway is killed (SIGKILL) a quarter through and restarted on
# its ports a second later. Run 2: lion-batch itself is killed a third through and run
# again with --resume. Each time every id is in --out exactly once, and --check passes all.
many_started=$SECONDS
python3 - "$requests" "$work/many.json" <<'PY'
import json, os, sys
src = json.load(open(sys.argv[1]))["requests"]
base = os.path.dirname(os.path.abspath(sys.argv[1]))
reqs = [dict(r, id="%s-%02d" % (r["id"], k), image=os.path.join(base, r["image"])) for k in range(20) for r in src]
json.dump({"requests": reqs}, open(sys.argv[2], "w"))
PY
many=140
wait_lines() { # file n: until file has n lines (30 s at most)
  for _ in $(seq 1 600); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
check_many() { # out log what: every id once, every answer right
  python3 - "$work/many.json" "$1" "$3" <<'PY' || fail "$3: $(tail -n 5 "$2")"
import collections, json, sys
ids = [str(r["id"]) for r in json.load(open(sys.argv[1]))["requests"]]
lines = [json.loads(l) for l in open(sys.argv[2])]
count = collections.Counter(str(l["id"]) for l in lines)
once = sum(count[i] == 1 for i in ids)
dup = sum(count[i] > 1 for i in ids)
right = sum(bool(l.get("pass")) and "error" not in l for l in lines)
print("%s: %d of %d ids answered once, %d duplicated, %d lines, %d answers right"
      % (sys.argv[3], once, len(ids), dup, len(lines), right))
sys.exit(0 if once == len(ids) == len(lines) == right else 1)
PY
  grep -E "^$many passed, 0 failed$" "$2" >/dev/null || fail "$3: no clean pass line: $(tail -n 3 "$2")"
}

"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --concurrency 4 --check --progress none \
  --out "$work/many1.jsonl" "$work/many.json" 2>"$work/many1.log" &
batch_pid=$!
wait_lines "$work/many1.jsonl" $((many / 4)) || fail "the batch did not get a quarter through"
kill -KILL "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
killed_at=$(wc -l <"$work/many1.jsonl")
sleep 1
"$build"/services/lion-gateway --listen "127.0.0.1:$port" --bind-base "tcp://127.0.0.1:$base" \
  --tap "tcp://127.0.0.1:$tap_port" --model-name tiny-lion >"$work/gateway2.log" 2>&1 &
pids[0]=$!
wait "$batch_pid" || fail "lion-batch across a gateway restart: $(tail -n 5 "$work/many1.log")"
echo "gateway killed after $killed_at of $many answers, back 1 s later"
check_many "$work/many1.jsonl" "$work/many1.log" "gateway kill -9 + restart"
grep -E "^lion-batch: (.* requests/s|retries)" "$work/many1.log"

"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --concurrency 4 --check --progress none \
  --out "$work/many2.jsonl" "$work/many.json" 2>"$work/many2.log" &
batch_pid=$!
wait_lines "$work/many2.jsonl" $((many / 3)) || fail "the batch did not get a third through"
kill -KILL "$batch_pid"
wait "$batch_pid" 2>/dev/null || true
killed_at=$(wc -l <"$work/many2.jsonl")
[ "$killed_at" -lt $many ] || fail "lion-batch ended before it was killed"
"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --concurrency 4 --check --progress none \
  --resume --out "$work/many2.jsonl" "$work/many.json" 2>"$work/many2r.log" \
  || fail "lion-batch --resume: $(tail -n 5 "$work/many2r.log")"
echo "lion-batch killed after $killed_at of $many answers, then --resume"
grep -E "^lion-batch: --resume" "$work/many2r.log"
check_many "$work/many2.jsonl" "$work/many2r.log" "lion-batch kill -9 + --resume"
echo "lion-batch through failures: $((SECONDS - many_started)) s"

# every worker replaced by one in --precision bf16 (common/nn/linear.h): fresh feature caches,
# so every stage computes the evaluation in bf16
bf16_started=$SECONDS
for i in 1 2 3 4; do kill -TERM "${pids[$i]}"; done
for i in 1 2 3 4; do wait "${pids[$i]}" 2>/dev/null || true; done
p=$base
i=1
for svc in vision tagger aggregator llm; do
  "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$p" --model "$model" --threads 1 --max-batch 4 \
    --precision bf16 --replica $svc-bf16 >"$work/${svc}_bf16.log" 2>&1 &
  pids[$i]=$!
  p=$((p + 1)) i=$((i + 1))
done
for _ in $(seq 1 300); do
  metrics=$(curl -sf "http://127.0.0.1:$port/metrics" || true)
  n=0
  for svc in vision tagger aggregator llm; do
    grep -qF "lion_worker_info{stage=\"$svc\",replica=\"$svc-bf16\",precision=\"bf16\",isa=\"" <<<"$metrics" &&
      grep -q "^lion_workers{stage=\"$svc\",model=\"tiny-lion\"} 1$" <<<"$metrics" && n=$((n + 1))
  done
  [ $n = 4 ] && break
  sleep 0.1
done
for svc in vision tagger aggregator llm; do
  grep -F "lion_worker_info{stage=\"$svc\",replica=\"$svc-bf16\",precision=\"bf16\"" <<<"$metrics" \
    || fail "/metrics never showed the bf16 $svc worker's lion_worker_info"
  grep -q "precision bf16 (asked" "$work/${svc}_bf16.log" || fail "the bf16 $svc worker did not log its precision"
done
grep -q '^lion_build_info{version="[^"]*",schema="2"} 1$' <<<"$metrics" || fail "/metrics has no lion_build_info"
"$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$port" --concurrency 8 --progress none \
  --out "$work/eval_bf16_answers.jsonl" "$work/eval/requests.json" 2>"$work/eval_bf16_batch.log" \
  || fail "lion-batch on the evaluation, bf16 workers: $(tail -n 2 "$work/eval_bf16_batch.log")"
/usr/bin/python3 tools/train/eval_c_pipeline.py compare "$work/eval" "$work/eval_bf16_answers.jsonl" \
  --max-points 1 --min-identical 0.97 ${LION_E2E_RECORD_BF16:+--record c_pipeline_bf16 --note "$LION_E2E_RECORD_BF16"} \
  >"$work/eval_bf16_compare.txt" \
  || { cat "$work/eval_bf16_compare.txt"; fail "the bf16 pipeline's evaluation is not within 1 point / 97% identical"; }
echo "bf16 workers:"
grep -E "points|identical answers" "$work/eval_bf16_compare.txt" || true
echo "bf16 evaluation: $((SECONDS - bf16_started)) s"
# continuous batching's figures: time to first token / per output token of every llm
# answer, and the replica's running rows and decoding-state budget from its heartbeats
metrics=$(curl -sf "http://127.0.0.1:$port/metrics") || fail "/metrics did not answer"
ttft=$(sed -n 's/^lion_time_to_first_token_seconds_count{model="tiny-lion"} \([0-9]*\)$/\1/p' <<<"$metrics")
tpot=$(sed -n 's/^lion_time_per_output_token_seconds_count{model="tiny-lion"} \([0-9]*\)$/\1/p' <<<"$metrics")
[ "${ttft:-0}" -ge "$many" ] || fail "lion_time_to_first_token_seconds_count is '${ttft}', want >= $many answers"
[ "${tpot:-0}" -gt 0 ] || fail "lion_time_per_output_token_seconds_count is '${tpot}'"
grep -q '^lion_llm_running_rows{replica="llm-bf16",model="tiny-lion"} [0-9]*$' <<<"$metrics" \
  || fail "/metrics has no lion_llm_running_rows of llm-bf16"
grep -q '^lion_llm_kv_budget_bytes{replica="llm-bf16",model="tiny-lion"} 4294967296$' <<<"$metrics" \
  || fail "/metrics has no lion_llm_kv_budget_bytes of llm-bf16 (4096 MB)"
echo "llm token times: $ttft answers with a time to first token, $tpot with a time per output token"
stop_all
echo "1 passed, 0 failed"
