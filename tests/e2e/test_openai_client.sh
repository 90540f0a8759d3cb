#!/usr/bin/env bash
# The official `openai` npm client (pinned v4) against the gateway and the four workers on
# models/tiny-lion: models.list, chat with an image, streaming (the pieces joined equal the
# non-streamed answer), max_completion_tokens, seeds, typed errors (tests/e2e/openai_client.mjs).
# The client is installed into the build tree; when npm cannot reach its registry the test
# is skipped (exit 77) and says so. Needs $LION_BUILD_DIR (ctest sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}
model=models/tiny-lion
openai_version=4.104.0
npm_dir="$build/npm"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node and npm are not installed"; exit 77
fi
if [ ! -f "$npm_dir/node_modules/openai/package.json" ] ||
   ! grep -q "\"version\": \"$openai_version\"" "$npm_dir/node_modules/openai/package.json"; then
  mkdir -p "$npm_dir"
  if ! timeout 180 npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "openai@$openai_version" \
       >"$npm_dir/install.log" 2>&1; then
    echo "SKIP: npm could not install openai@$openai_version (registry unreachable?):"
    tail -n 5 "$npm_dir/install.log"; exit 77
  fi
fi

work=$(mktemp -d)
export OMP_WAIT_POLICY=passive
# below the ephemeral range (32768+), where outgoing connections may hold a port
port=$((26000 + ($$ % 500) * 12)) # a block of 12 of its own: 26000..31999, apart from test_tiny_lion.sh
base=$((port + 1))
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "openai client FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

"$build"/services/lion-gateway --listen "127.0.0.1:$port" --bind-base "tcp://127.0.0.1:$base" \
  --model-name tiny-lion >"$work/gateway.log" 2>&1 &
pids+=($!)
p=$base
for svc in vision tagger aggregator llm; do
  "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$p" --model "$model" --threads 1 >"$work/$svc.log" 2>&1 &
  pids+=($!)
  p=$((p + 1))
done
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || fail "the gateway never became ready"

# node resolves 'openai' from the script's folder upwards: run a copy inside the install
cp tests/e2e/openai_client.mjs "$npm_dir/openai_client.mjs"
node "$npm_dir/openai_client.mjs" "http://127.0.0.1:$port" "$model/examples" || fail "the openai client checks failed"
