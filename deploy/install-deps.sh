#!/usr/bin/env bash
# Installs everything the build, the services and the tests need on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone, so both README commands can call it.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-dev libuv1-dev libjpeg62-turbo-dev libpng-dev
  libhttp-parser-dev libcjson-dev nettle-dev curl libcurl4-openssl-dev
  python3-torch python3-numpy python3-sentencepiece python3-pil python3-protobuf
  # the fuzz build (deploy/test.sh): clang, its runtimes (libFuzzer, ASan, UBSan: only
  # recommended by clang, and recommends are not installed) and its OpenMP
  clang libclang-rt-dev libomp-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi
