#!/usr/bin/env bash
# run_fuzz.sh FUZZER TARGET SECONDS [libFuzzer options...]
#
# Runs one libFuzzer target (tests/fuzz/fuzz_TARGET.c, built with -DLION_FUZZ=ON) the way
# its ctest does, for any length of time (docs/operations.md, "Fuzzing"):
#   1. every input in tests/fuzz/regressions/TARGET/ once (inputs that crashed before and
#      were fixed: they must not crash again);
#   2. the fuzzer for SECONDS on a corpus of the committed seeds (tests/fuzz/corpus/TARGET/)
#      and the generated ones (fuzz_seeds, built beside FUZZER), with dict/TARGET.dict when
#      there is one.
# Work files go to $LION_FUZZ_WORK (default: runs/TARGET beside FUZZER): corpus/ (the seeds
# plus what the fuzzer found; kept between runs with LION_FUZZ_KEEP=1), artifacts/ (a crash,
# leak or timeout input: crash-<sha1>, ... named in the output); the targets' own files go to a
# temporary directory (on /dev/shm when there is one), removed at the end.
# Exit status: 0 when nothing was found, else the fuzzer's.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 FUZZER TARGET SECONDS [libFuzzer options...]" >&2
  exit 2
fi
fuzzer=$(realpath "$1")
target=$2
seconds=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
work=${LION_FUZZ_WORK:-$(dirname "$fuzzer")/runs/$target}

if [ "${LION_FUZZ_KEEP:-0}" != 1 ]; then rm -rf "$work/corpus"; fi
mkdir -p "$work/corpus" "$work/artifacts"
# the targets that read files write each input to one (safetensors, model.json, vocab.txt):
# on tmpfs when there is one, ten times faster than a disk
if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp=$(mktemp -d /dev/shm/lion-fuzz-XXXXXX); else tmp=$(mktemp -d "$work/tmp-XXXXXX"); fi
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

common=(-rss_limit_mb=2048 -timeout=25 -artifact_prefix="$work/artifacts/")
if [ -f "$here/dict/$target.dict" ]; then common+=(-dict="$here/dict/$target.dict"); fi

shopt -s nullglob
regressions=("$here/regressions/$target"/*)
if [ ${#regressions[@]} -gt 0 ]; then
  echo "== $target: ${#regressions[@]} regression inputs"
  "$fuzzer" "${common[@]}" "${regressions[@]}"
fi

if [ -d "$here/corpus/$target" ]; then cp "$here/corpus/$target"/* "$work/corpus/" 2>/dev/null || true; fi
"$(dirname "$fuzzer")/fuzz_seeds" "$target" "$work/corpus"

echo "== $target: fuzzing for ${seconds}s (corpus $work/corpus)"
status=0
"$fuzzer" "${common[@]}" -max_total_time="$seconds" -print_final_stats=1 "$@" "$work/corpus" || status=$?
if [ $status -ne 0 ]; then
  echo "== $target: the fuzzer found a problem (exit $status); the input is in $work/artifacts/:" >&2
  ls -1 "$work/artifacts" >&2 || true
  echo "   reproduce: $fuzzer $work/artifacts/<file>; once fixed, add it to tests/fuzz/regressions/$target/" >&2
fi
exit $status
