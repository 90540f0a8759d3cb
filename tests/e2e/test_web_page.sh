#!/usr/bin/env bash
# The web page (web/, embedded in lion-gateway and served at /) in headless Chromium, against
# the gateway and the four workers on models/tiny-lion: an image uploaded, the example region
# caption and REC questions answered (text as the reference, the box drawn on the canvas), the
# feature cache hit shown, the API's errors shown, the pipeline view with a live worker per
# stage and a request's trace (tests/e2e/web_page.mjs). When the gateway takes --api-keys, it
# runs with a key and the page is checked without it (401 shown) and with it.
# Chromium is Debian's `chromium` package, installed with apt when missing (as root); it is
# driven by npm's playwright-core (pinned), installed into the build tree. When either cannot
# be installed the test is skipped (exit 77) and says why. Needs $LION_BUILD_DIR (ctest sets
# it). Screenshots: $LION_BUILD_DIR/web-page/web-page-{ask,watch}.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}
model=models/tiny-lion
playwright_version=1.65.1
npm_dir="$build/npm/web-page"
chromium=${LION_CHROMIUM:-/usr/bin/chromium}
out="$build/web-page"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node and npm are not installed"; exit 77
fi
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "SKIP: $chromium is missing and cannot be installed here (apt-get install chromium, as root)"; exit 77
  fi
  mkdir -p "$build"
  echo "installing chromium with apt-get (once)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { timeout 400 apt-get install -y chromium ||
         { timeout 200 apt-get update && timeout 400 apt-get install -y chromium; }; } >"$build/apt-chromium.log" 2>&1; then
    echo "SKIP: apt-get could not install chromium (no package source reachable?):"
    tail -n 5 "$build/apt-chromium.log"; exit 77
  fi
  [ -x "$chromium" ] || { echo "SKIP: chromium installed, but $chromium is still missing (LION_CHROMIUM?)"; exit 77; }
fi
if [ ! -f "$npm_dir/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$playwright_version\"" "$npm_dir/node_modules/playwright-core/package.json"; then
  mkdir -p "$npm_dir"
  if ! timeout 180 npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "playwright-core@$playwright_version" \
       >"$npm_dir/install.log" 2>&1; then
    echo "SKIP: npm could not install playwright-core@$playwright_version (registry unreachable?):"
    tail -n 5 "$npm_dir/install.log"; exit 77
  fi
fi

work=$(mktemp -d)
export OMP_WAIT_POLICY=passive
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "web page FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

key_args=() key="" auth=()
if "$build"/services/lion-gateway --help 2>&1 | grep -q -- '--api-keys'; then
  key="web-page-test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  printf '# the web page test\n%s\n' "$key" >"$work/keys"
  key_args=(--api-keys "$work/keys")
  auth=(-H "Authorization: Bearer $key")
fi
# HTTP on port, the stages on port+1..port+4: a block below the ephemeral range (32768+, where
# outgoing connections may hold a port) that nothing listens on, and another one if the
# gateway still cannot bind (other e2e tests pick theirs from their pid, at the same time)
free_block() {
  command -v ss >/dev/null || return 0
  local q
  for q in $(seq "$1" $(($1 + 4))); do [ -z "$(ss -Hltn "( sport = :$q )" 2>/dev/null)" ] || return 1; done
}
for _try in 1 2 3 4 5; do
  for _ in $(seq 1 50); do
    port=$((20000 + (RANDOM % 750) * 16))
    free_block "$port" && break
  done
  "$build"/services/lion-gateway --listen "127.0.0.1:$port" --bind-base "tcp://127.0.0.1:$((port + 1))" \
    --model-name tiny-lion "${key_args[@]}" >"$work/gateway.log" 2>&1 &
  gw=$!
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$gw" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$gw" 2>/dev/null; then pids+=("$gw"); break; fi
  wait "$gw" 2>/dev/null || true
  grep -q "cannot bind" "$work/gateway.log" || fail "the gateway did not start"
done
[ "${#pids[@]}" = 1 ] || fail "no free ports for the gateway after 5 tries"
p=$((port + 1))
for svc in vision tagger aggregator llm; do
  "$build"/services/lion-$svc --gateway "tcp://127.0.0.1:$p" --model "$model" --threads 1 >"$work/$svc.log" 2>&1 &
  pids+=($!)
  p=$((p + 1))
done
for _ in $(seq 1 300); do
  curl -sf "${auth[@]}" "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "${auth[@]}" "http://127.0.0.1:$port/readyz" >/dev/null || fail "the gateway never became ready"

# the page is served (without a key) and is the one in web/: a stale binary is a failure
for f in $(cd web && ls); do
  route=/$f
  [ "$f" = index.html ] && route=/
  curl -sf "http://127.0.0.1:$port$route" -o "$work/served" || fail "GET $route: $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$route")"
  cmp -s "$work/served" "web/$f" || fail "GET $route is not web/$f (rebuild the gateway: the page is embedded at build time)"
done

mkdir -p "$out"
# node resolves 'playwright-core' from the script's folder upwards: run a copy inside the install
cp tests/e2e/web_page.mjs "$npm_dir/web_page.mjs"
LION_CHROMIUM="$chromium" timeout 120 node "$npm_dir/web_page.mjs" "http://127.0.0.1:$port" "$model/examples" "$out" $key ||
  fail "the page's checks failed (screenshots in $out)"
