#!/usr/bin/env bash
# The test command (README): installs dependencies, builds the release and the sanitizer
# (ASan + UBSan) trees, and runs the whole suite in both. Python-only reference checks
# (label "py") run once, in the release tree: they execute no C code. A third tree, built
# with clang (-DLION_FUZZ=ON), runs every libFuzzer target for LION_FUZZ_SECONDS (default 5)
# from its seeds (label "fuzz"; docs/operations.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh

jobs=$(nproc)
echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLION_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== fuzz build (clang: libFuzzer + ASan + UBSan)"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLION_FUZZ=ON \
  -DLION_FUZZ_SECONDS="${LION_FUZZ_SECONDS:-5}" >/dev/null
cmake --build build-fuzz -j"$jobs" --target lion_fuzz

status=0
echo "== release suite"
(cd build && ctest --output-on-failure -j"$jobs") || status=1
echo "== sanitizer suite"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -j"$jobs" -LE py) || status=1
echo "== fuzz suite (each target ${LION_FUZZ_SECONDS:-5} s from its seeds, regressions first)"
(cd build-fuzz && ctest --output-on-failure -j"$jobs" -L fuzz) || status=1
exit $status
