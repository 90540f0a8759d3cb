#!/usr/bin/env bash
# Several hosts on one machine: network namespaces joined by veth pairs to a bridge stand for
# hosts on a LAN, with real TCP between them (docs/operations.md, "Security", "The multi-host
# test"). The tiny model (models/tiny-lion), the real processes:
#
#   gw  10.99.0.1  lion-gateway: CURVE (--curve-key, --worker-keys, --tap-keys, --tap-meta-keys)
#                  and API keys, HTTP and ZeroMQ on its LAN address
#   a   10.99.0.2  a-vision, a-tagger, a-aggregator, a-llm
#   b   10.99.0.3  b-vision, b-tagger, b-aggregator, b-llm
#   c   10.99.0.4  the clients: lion-batch, lion-tap readers, and a rogue llm worker whose key
#                  is on no list
#
# With CURVE:
#   1. a request without the API key is refused 401; lion-batch --api-key-file --check answers
#      the examples correctly;
#   2. the rogue worker never joins and gets no job (the gateway refuses its key; no tap
#      message names it; lion_workers{stage="llm",model="tiny-lion"} stays 2);
#   3. tap readers: the one of --tap-keys gets data/ (tensors with their values); the one of
#      --tap-meta-keys gets meta/ on --tap-meta and nothing with --data there, and is refused
#      on --tap; readers without a key get nothing on either endpoint;
#   4. host a crashes mid-batch (its link goes down, then every process in it is killed -9)
#      while it holds jobs: every id of the batch is answered once, correctly.
# Then the same topology with --insecure (CURVE off), the documented risk: the rogue worker
# joins and answers users' jobs, and a reader without a key gets the payloads.
#
# Unique namespace names (this script's pid) so that parallel runs do not collide; the EXIT
# trap kills every process in them and deletes them whatever happens. Skips (77) only when
# namespaces cannot be made here (not root, no ip, no netns/veth/bridge support).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:-${LION_BIN_DIR:+$LION_BIN_DIR/..}}
build=${build:?LION_BUILD_DIR or LION_BIN_DIR must name the build tree}
bin=${LION_BIN_DIR:-$build/services}
model=models/tiny-lion
requests=$model/examples/requests.json
started=$SECONDS
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

skip() { echo "e2e SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "no ip command (iproute2)"

prefix="lionmh-$$"
gw_ns=$prefix-gw a_ns=$prefix-a b_ns=$prefix-b c_ns=$prefix-c
all_ns=("$gw_ns" "$a_ns" "$b_ns" "$c_ns")
work=$(mktemp -d)

kill_ns() { # every process in a namespace, kill -9, and wait until they are gone
  local ns=$1 pids
  for _ in $(seq 1 50); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] && return 0
    kill -9 $pids 2>/dev/null || true
    sleep 0.1
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ns in "${all_ns[@]}"; do
    ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
    kill_ns "$ns"
    ip netns del "$ns" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# namespaces left by a run that was killed -9 (its trap never ran): ours by name, their
# script gone
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^lionmh-[0-9]+-(gw|a|b|c)$' || true); do
  pid=${ns#lionmh-}
  pid=${pid%%-*}
  kill -0 "$pid" 2>/dev/null && continue
  kill_ns "$ns"
  ip netns del "$ns" 2>/dev/null || true
done

fail() {
  echo "e2e FAIL: $*"
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
  exit 1
}

# --- the hosts ------------------------------------------------------------------------------
make_hosts() {
  for ns in "${all_ns[@]}"; do ip netns add "$ns" && ip -n "$ns" link set lo up || return 1; done
  ip -n "$gw_ns" link add br0 type bridge || return 1
  ip -n "$gw_ns" addr add 10.99.0.1/24 dev br0 && ip -n "$gw_ns" link set br0 up || return 1
  local i=2
  for h in a b c; do
    local ns=$prefix-$h
    # made inside the gateway's namespace: interface names never meet another run's
    ip -n "$gw_ns" link add "port-$h" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$gw_ns" link set "port-$h" master br0 up || return 1
    ip -n "$ns" addr add "10.99.0.$i/24" dev eth0 && ip -n "$ns" link set eth0 up || return 1
    i=$((i + 1))
  done
}
make_hosts 2>"$work/netns.err" || skip "cannot make network namespaces here: $(head -c 300 "$work/netns.err")"
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

gw=10.99.0.1
url=http://$gw:8080

# --- keys -------------------------------------------------------------------------------------
keys=$work/keys
mkdir -p "$keys/workers"
keygen() { "$build"/tools/keygen/lion-keygen "$1" >/dev/null || fail "lion-keygen $1"; }
keygen "$keys/gateway"
for h in a b; do for s in vision tagger aggregator llm; do keygen "$keys/workers/$h-$s"; done; done
keygen "$keys/rogue"    # on no list
keygen "$keys/reader"   # --tap-keys: meta/ and data/
keygen "$keys/watcher"  # --tap-meta-keys: meta/ only
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$keys/api.keys"
chmod 600 "$keys/api.keys"

# --- processes ------------------------------------------------------------------------------
gateway_flags=(--listen "$gw:8080" --bind-base "tcp://$gw:5551" --tap "tcp://$gw:5560" --tap-meta "tcp://$gw:5561"
  --api-keys "$keys/api.keys" --model-name tiny-lion --heartbeat-ms 200 --worker-timeout-ms 1500)
curve_gateway=(--curve-key "$keys/gateway.key" --worker-keys "$keys/workers" --tap-keys "$keys/reader.pub"
  --tap-meta-keys "$keys/watcher.pub")
start_gateway() { # log, extra flags...
  local log=$1
  shift
  in_ns "$gw_ns" "$bin"/lion-gateway "${gateway_flags[@]}" "$@" >"$work/$log.log" 2>&1 &
}
stage_port() { case $1 in vision) echo 5551 ;; tagger) echo 5552 ;; aggregator) echo 5553 ;; llm) echo 5554 ;; esac; }
start_worker() { # host stage replica log [flags...]
  local h=$1 s=$2 replica=$3 log=$4
  shift 4
  in_ns "$prefix-$h" "$bin"/lion-$s --gateway "tcp://$gw:$(stage_port "$s")" --model "$model" --threads 1 \
    --replica "$replica" --heartbeat-ms 200 "$@" >"$work/$log.log" 2>&1 &
}
start_workers() { # phase, flags for every worker... (a key flag of its own is added with CURVE)
  local phase=$1
  shift
  for h in a b; do
    for s in vision tagger aggregator llm; do
      if [ "$phase" = curve ]; then
        start_worker $h $s "$h-$s" "$phase-$h-$s" --curve-server-key "$keys/gateway.pub" \
          --curve-key "$keys/workers/$h-$s.key" "$@"
      else
        start_worker $h $s "$h-$s" "$phase-$h-$s" "$@"
      fi
    done
  done
}
client() { in_ns "$c_ns" "$@"; }
metrics() { client curl -sf --max-time 5 "$url/metrics"; }
metric() { # series: its value, or -1
  metrics | awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print -1 }'
}
wait_workers() { # n_llm: until every stage has 2 workers (the llm stage n_llm)
  local want_llm=$1 m
  for _ in $(seq 1 300); do
    m=$(metrics || true)
    if grep -qx 'lion_workers{stage="vision",model="tiny-lion"} 2' <<<"$m" &&
      grep -qx 'lion_workers{stage="tagger",model="tiny-lion"} 2' <<<"$m" &&
      grep -qx 'lion_workers{stage="aggregator",model="tiny-lion"} 2' <<<"$m" &&
      grep -qx "lion_workers{stage=\"llm\",model=\"tiny-lion\"} $want_llm" <<<"$m"; then
      return 0
    fi
    sleep 0.1
  done
  fail "the workers did not all join: $(grep '^lion_workers' <<<"$m" | tr '\n' ' ')"
}
tap_reader() { # log, lion-tap watch options...: runs in host c until stopped
  local log=$1
  shift
  client "$build"/tools/tap/lion-tap watch --timeout-ms 600000 "$@" >"$work/$log.out" 2>"$work/$log.log" &
}
tap_pids() { # the lion-tap processes of host c
  local pid
  for pid in $(ip netns pids "$c_ns" 2>/dev/null || true); do
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = lion-tap ]; then echo "$pid"; fi
  done
}
stop_readers() { # TERM: lion-tap ends its watch cleanly, its lines are all written
  local pids
  pids=$(tap_pids)
  [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  for _ in $(seq 1 50); do
    [ -z "$(tap_pids)" ] && return 0
    sleep 0.1
  done
  fail "lion-tap did not stop on SIGTERM"
}
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
batch() { # out log requests [options...]
  local out=$1 log=$2 reqs=$3
  shift 3
  client "$build"/tools/batch/lion-batch --gateway "$url" --api-key-file "$keys/api.keys" --progress none \
    --out "$work/$out" "$@" "$reqs" 2>"$work/$log.log"
}
# the examples repeated with ids of their own, images by absolute path
repeat_examples() { # copies file
  python3 - "$requests" "$1" "$2" <<'PY'
import json, os, sys
src = json.load(open(sys.argv[1]))["requests"]
base = os.path.dirname(os.path.abspath(sys.argv[1]))
reqs = [dict(r, id="%s-%02d" % (r["id"], k), image=os.path.join(base, r["image"])) for k in range(int(sys.argv[2])) for r in src]
json.dump({"requests": reqs}, open(sys.argv[3], "w"))
PY
}
check_once() { # requests out what: every id answered once, every answer right
  python3 - "$1" "$2" "$3" <<'PY' || fail "$3"
import collections, json, sys
ids = [str(r["id"]) for r in json.load(open(sys.argv[1]))["requests"]]
lines = [json.loads(l) for l in open(sys.argv[2])]
count = collections.Counter(str(l["id"]) for l in lines)
once = sum(count[i] == 1 for i in ids)
right = sum(bool(l.get("pass")) and "error" not in l for l in lines)
print("%s: %d of %d ids answered once, %d lines, %d answers right" % (sys.argv[3], once, len(ids), len(lines), right))
sys.exit(0 if once == len(ids) == len(lines) == right else 1)
PY
}

# === with CURVE =================================================================================
start_gateway gateway "${curve_gateway[@]}"
start_workers curve
# the rogue: a real llm worker with a key pair of its own that is on no list
start_worker c llm rogue-llm curve-rogue --curve-server-key "$keys/gateway.pub" --curve-key "$keys/rogue.key"
wait_workers 2
echo "curve: 8 workers joined across hosts a and b ($((SECONDS - started)) s)"

code=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/v1/models")
[ "$code" = 401 ] || fail "a request without an API key got $code, not 401"
code=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/healthz")
[ "$code" = 200 ] || fail "/healthz without a key got $code"

srv=(--curve-server-key "$keys/gateway.pub")
tap_reader reader-data --tap "tcp://$gw:5560" "${srv[@]}" --curve-key "$keys/reader.key" --data
tap_reader watcher-meta --tap "tcp://$gw:5561" "${srv[@]}" --curve-key "$keys/watcher.key"
tap_reader watcher-data --tap "tcp://$gw:5561" "${srv[@]}" --curve-key "$keys/watcher.key" --data
tap_reader watcher-on-tap --tap "tcp://$gw:5560" "${srv[@]}" --curve-key "$keys/watcher.key" --data
tap_reader keyless-tap --tap "tcp://$gw:5560" --insecure --data
tap_reader keyless-meta --tap "tcp://$gw:5561" --insecure
sleep 1 # handshakes and subscriptions

batch examples.jsonl examples "$requests" --check || fail "lion-batch --check: $(tail -n 3 "$work/examples.log")"
grep -E "^[0-9]+ passed, 0 failed$" "$work/examples.log" >/dev/null || fail "no clean pass line from lion-batch"
echo "curve: lion-batch --check over the LAN: $(grep -E 'passed, [0-9]+ failed' "$work/examples.log")"

# host a crashes a third into a batch: its link goes down first (no FIN or RST reaches the
# gateway, as when a machine loses power), then every process in it is killed -9. The jobs it
# held, and those sent to it before its silence passed --worker-timeout-ms, go to host b.
repeat_examples 20 "$work/many.json"
many=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["requests"]))' "$work/many.json")
redispatched_before=$(metrics | awk '/^lion_redispatches_total/ { n += $2 } END { print n + 0 }')
batch many.jsonl many "$work/many.json" --check --concurrency 4 &
batch_pid=$!
for _ in $(seq 1 1200); do [ "$(lines "$work/many.jsonl")" -ge $((many / 3)) ] && break; sleep 0.02; done
[ "$(lines "$work/many.jsonl")" -ge $((many / 3)) ] || fail "the batch did not get a third through"
ip -n "$gw_ns" link set port-a down
kill_ns "$a_ns"
crashed_at=$(lines "$work/many.jsonl")
wait "$batch_pid" || fail "lion-batch across host a's crash: $(tail -n 5 "$work/many.log")"
[ "$(lines "$work/many.jsonl")" -gt "$crashed_at" ] || fail "the batch had ended before host a crashed"
check_once "$work/many.json" "$work/many.jsonl" "host a crashed after $crashed_at of $many answers"
grep -E "^$many passed, 0 failed$" "$work/many.log" >/dev/null || fail "no clean pass line after the crash"
# each of host a's workers is removed once silent for --worker-timeout-ms, with the jobs it
# held: "vision worker a-vision removed: silent for 1503 ms (2 jobs outstanding)"
for _ in $(seq 1 100); do
  [ "$(grep -cE "worker a-[a-z]+ removed" "$work/gateway.log" || true)" -ge 4 ] && break
  sleep 0.05
done
held=$(grep -oE "worker a-[a-z]+ removed: .*\(([0-9]+) jobs outstanding\)" "$work/gateway.log" |
  sed -E 's/.*\(([0-9]+) jobs outstanding\)/\1/' | awk '{ n += $1 } END { print n + 0 }')
removed=$(grep -cE "worker a-[a-z]+ removed" "$work/gateway.log" || true)
[ "$removed" = 4 ] || fail "the gateway removed $removed of host a's 4 workers"
redispatched=$(metrics | awk '/^lion_redispatches_total/ { n += $2 } END { print n + 0 }')
[ "$held" -gt 0 ] && [ "$redispatched" -gt "$redispatched_before" ] ||
  fail "host a held no job when it crashed ($held held, $((redispatched - redispatched_before)) re-dispatched)"
echo "curve: host a's 4 workers removed holding $held jobs; $((redispatched - redispatched_before)) jobs re-dispatched to host b"

# the rogue worker: refused, never joined, named by no job
rogue_key=$(cat "$keys/rogue.pub")
grep -F "ZAP: refused a workers client with key $rogue_key" "$work/gateway.log" >/dev/null ||
  fail "the gateway never refused the rogue worker's key"
! grep -E "worker rogue-llm joined" "$work/gateway.log" >/dev/null || fail "the rogue worker joined"
! metrics | grep -F 'replica="rogue-llm"' >/dev/null || fail "/metrics lists the rogue worker"
stop_readers
grep -q "llm@b-llm" "$work/reader-data.out" || fail "the data reader saw no job of b-llm: $(head -n 2 "$work/reader-data.out")"
! grep -q "@rogue-llm" "$work/reader-data.out" || fail "a job reached the rogue worker"
jobs_a=$(grep -c " in RESULT .*@a-" "$work/reader-data.out" || true)
jobs_b=$(grep -c " in RESULT .*@b-" "$work/reader-data.out" || true)
echo "curve: results from host a $jobs_a, host b $jobs_b, the rogue 0 (refused: $(metric lion_zap_denied_total) ZAP refusals)"

# the tap readers
grep -q " min=" "$work/reader-data.out" || fail "the data reader got no tensor values"
[ "$(lines "$work/watcher-meta.out")" -gt 0 ] || fail "the meta-only reader got nothing on --tap-meta"
! grep -q " min=" "$work/watcher-meta.out" || fail "the meta-only reader got tensor values"
for r in watcher-data watcher-on-tap keyless-tap keyless-meta; do
  [ "$(lines "$work/$r.out")" = 0 ] || fail "tap reader $r got $(lines "$work/$r.out") messages: $(head -n 1 "$work/$r.out")"
done
echo "curve: tap readers: data reader $(lines "$work/reader-data.out") data/ messages, meta-only reader" \
  "$(lines "$work/watcher-meta.out") meta/ and 0 data/, meta-only on --tap 0, without a key 0"

# === the same hosts with --insecure: the documented risk ==============================================
for ns in "${all_ns[@]}"; do kill_ns "$ns"; done
ip -n "$gw_ns" link set port-a up
start_gateway gateway-insecure --insecure
start_workers insecure --insecure
start_worker c llm rogue-llm insecure-rogue --insecure
wait_workers 3
grep -E "INSECURE" "$work/gateway-insecure.log" >/dev/null || fail "the gateway did not warn about --insecure"
grep -E "llm worker rogue-llm joined" "$work/gateway-insecure.log" >/dev/null || fail "the rogue worker did not join"
tap_reader keyless-insecure --tap "tcp://$gw:5560" --insecure --data
sleep 0.5
repeat_examples 2 "$work/few.json"
batch few.jsonl few "$work/few.json" --check --concurrency 4 || fail "lion-batch --insecure: $(tail -n 3 "$work/few.log")"
stop_readers
rogue_jobs=$(grep -c " llm in RESULT .*llm@rogue-llm" "$work/keyless-insecure.out" || true)
[ "$rogue_jobs" -gt 0 ] || fail "the rogue worker got no job without CURVE"
grep -q " min=" "$work/keyless-insecure.out" || fail "the reader without a key got no payloads without CURVE"
echo "insecure: the rogue worker joined and answered $rogue_jobs users' llm jobs; a reader without a key got" \
  "$(lines "$work/keyless-insecure.out") data/ messages"
for ns in "${all_ns[@]}"; do kill_ns "$ns"; done
echo "multihost: $((SECONDS - started)) s"
echo "1 passed, 0 failed"
