#!/usr/bin/env bash
# Two gateways sharing one set of workers (docs/operations.md, "Several gateways"), on the
# embedded trained model (models/tiny-lion), the real processes:
#   1. two lion-gateway processes, and one worker per stage given both (--gateway A,B) with
#      --capacity 4: each gateway lists the same four replicas, each announced a share of 2
#      (/v1/pipeline);
#   2. lion-batch --check against each gateway at the same time (the examples repeated, 28
#      ids each): every answer right on both;
#   3. gateway B killed (-9) while lion-batch runs against A: A's run answers every id right;
#      once the workers find B silent, A is announced their whole capacity (4);
#   4. B started again on its ports: the workers announce READY to it (they heard it again),
#      lion-batch --check against B passes, and A's share is back to 2.
# Loopback only; ports from this process id. Needs $LION_BUILD_DIR (ctest sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}
model=models/tiny-lion
requests=$model/examples/requests.json
[ -f "$requests" ] || { echo "e2e: $requests missing"; exit 1; }
work=$(mktemp -d)
export OMP_WAIT_POLICY=passive
# below test_tiny_lion.sh's and test_openai_client.sh's blocks (20000..31999)
port=$((12000 + ($$ % 500) * 12)) # a block of 12 of its own: 12000..17999
port_a=$port base_a=$((port + 1)) port_b=$((port + 5)) base_b=$((port + 6))

pids=()
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "e2e FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

start_gateway() { # name http-port bind-base log
  "$build"/services/lion-gateway --listen "127.0.0.1:$2" --bind-base "tcp://127.0.0.1:$3" --model-name tiny-lion \
    >"$work/$4" 2>&1 &
}
wait_ready() { # http-port what
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$2 never became ready"
}
# Every stage of the gateway at port $1 has exactly the shared replica, announced capacity $2
# (within 15 s: a share changes with the workers' heartbeats).
wait_shares() { # http-port capacity what
  local out
  for _ in $(seq 1 150); do
    out=$(curl -sf "http://127.0.0.1:$1/v1/pipeline" | python3 -c '
import json, sys
want = int(sys.argv[1])
stages = json.load(sys.stdin)["stages"]
got = {s["name"]: [(w["replica"], w["capacity"]) for w in s["workers"]] for s in stages}
ok = all(got.get(s) == [(s + "-shared", want)] for s in ("vision", "tagger", "aggregator", "llm"))
print(got)
sys.exit(0 if ok else 1)' "$2" 2>&1) && { echo "$3: $out"; return 0; }
    sleep 0.1
  done
  fail "$3: want every stage's shared replica at capacity $2, got $out"
}

start_gateway A "$port_a" "$base_a" gateway_a.log
pids+=($!)
start_gateway B "$port_b" "$base_b" gateway_b.log
pids+=($!)
gw_b=1 # B's place in pids
i=0
for svc in vision tagger aggregator llm; do
  "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$((base_a + i)),tcp://127.0.0.1:$((base_b + i))" \
    --model "$model" --threads 1 --capacity 4 --max-batch 4 --replica "$svc-shared" >"$work/$svc.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done
wait_ready "$port_a" "gateway A"
wait_ready "$port_b" "gateway B"
wait_shares "$port_a" 2 "gateway A, shares"
wait_shares "$port_b" 2 "gateway B, shares"

# the examples 4 times each (28 distinct ids), as test_tiny_lion.sh repeats them
python3 - "$requests" "$work/many.json" <<'PY'
import json, os, sys
src = json.load(open(sys.argv[1]))["requests"]
base = os.path.dirname(os.path.abspath(sys.argv[1]))
reqs = [dict(r, id="%s-%02d" % (r["id"], k), image=os.path.join(base, r["image"])) for k in range(4) for r in src]
json.dump({"requests": reqs}, open(sys.argv[2], "w"))
PY
many=28
batch() { # http-port out log: lion-batch --check over many.json
  "$build"/tools/batch/lion-batch --gateway "http://127.0.0.1:$1" --concurrency 4 --check --progress none \
    --out "$work/$2" "$work/many.json" 2>"$work/$3"
}
passed() { # log what
  grep -E "^$many passed, 0 failed$" "$work/$1" >/dev/null || fail "$2: no clean pass line: $(tail -n 3 "$work/$1")"
  echo "$2: $(grep -E 'passed, [0-9]+ failed' "$work/$1")"
}

batch "$port_a" a1.jsonl batch_a1.log &
batch_a=$!
batch "$port_b" b1.jsonl batch_b1.log &
batch_b=$!
wait "$batch_a" || fail "lion-batch against A: $(tail -n 3 "$work/batch_a1.log")"
wait "$batch_b" || fail "lion-batch against B: $(tail -n 3 "$work/batch_b1.log")"
passed batch_a1.log "both at once, gateway A"
passed batch_b1.log "both at once, gateway B"

# B dies while A serves
batch "$port_a" a2.jsonl batch_a2.log &
batch_a=$!
for _ in $(seq 1 600); do
  [ -f "$work/a2.jsonl" ] && [ "$(wc -l <"$work/a2.jsonl")" -ge $((many / 4)) ] && break
  sleep 0.05
done
kill -KILL "${pids[$gw_b]}"
wait "${pids[$gw_b]}" 2>/dev/null || true
echo "gateway B killed after $(wc -l <"$work/a2.jsonl") of A's $many answers"
wait "$batch_a" || fail "lion-batch against A while B died: $(tail -n 3 "$work/batch_a2.log")"
passed batch_a2.log "gateway A while B was killed"
wait_shares "$port_a" 4 "gateway A, B gone"
i=0
for svc in vision tagger aggregator llm; do
  grep -qF "nothing heard from the gateway tcp://127.0.0.1:$((base_b + i)) " "$work/$svc.log" \
    || fail "the $svc worker never noticed gateway B was gone"
  i=$((i + 1))
done

# B back on its ports: the workers rejoin it on their own
start_gateway B "$port_b" "$base_b" gateway_b2.log
pids[$gw_b]=$!
wait_ready "$port_b" "gateway B, restarted"
wait_shares "$port_b" 2 "gateway B, back"
wait_shares "$port_a" 2 "gateway A, B back"
batch "$port_b" b2.jsonl batch_b2.log || fail "lion-batch against the restarted B: $(tail -n 3 "$work/batch_b2.log")"
passed batch_b2.log "gateway B, restarted"
for svc in vision tagger aggregator llm; do
  grep -q "heard again: announcing READY" "$work/$svc.log" || fail "the $svc worker did not announce READY again"
done
stop_all
echo "1 passed, 0 failed"
