#!/usr/bin/env bash
# Installs what the build, the services and the tests need on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone, so both README commands can call it.
#
#   install-deps.sh            everything: build, run, and every test (the README commands)
#   install-deps.sh build      only what compiles the binaries (deploy/Containerfile's build stage)
#   install-deps.sh runtime    only what the binaries load at run time (the image's last stage)
set -euo pipefail

profile=${1:-all}

# what the binaries link (ldd build/services/lion-*): the runtime image holds these only
runtime=(
  libzmq5 libprotobuf-c1 libopenblas0-pthread libgomp1 libuv1 libjpeg62-turbo libpng16-16
  libhttp-parser2.9 libcjson1 libnettle8 libcurl4 libdnnl2
  # curl: the compose health check of the gateway (GET /healthz)
  curl
)
# what compiles them; CMake also wants /usr/bin/python3 (the tests' interpreter)
build=(
  build-essential cmake pkg-config python3-minimal
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-dev libuv1-dev libjpeg62-turbo-dev libpng-dev
  libhttp-parser-dev libcjson-dev nettle-dev curl libcurl4-openssl-dev
  # oneDNN: the bf16 matmuls (common/nn/onednn_matmul.c)
  libdnnl-dev
)
# the tests: PyTorch reference checks, the fuzz build, the deployment manifests
tests=(
  python3-torch python3-numpy python3-sentencepiece python3-pil python3-protobuf
  # the fuzz build (deploy/test.sh): clang, its runtimes (libFuzzer, ASan, UBSan: only
  # recommended by clang, and recommends are not installed) and its OpenMP
  clang libclang-rt-dev libomp-dev
  # tests/e2e/test_deploy_manifests.sh reads compose.yaml and the rendered manifests
  python3-yaml
)

case "$profile" in
  all) packages=("${build[@]}" "${tests[@]}") ;;
  build) packages=("${build[@]}") ;;
  runtime) packages=("${runtime[@]}") ;;
  *) echo "install-deps: unknown profile '$profile' (all, build, runtime)" >&2; exit 2 ;;
esac

# `kubectl kustomize` renders deploy/k8s in the manifest test. Debian 12's kubernetes-client
# (1.20, kustomize v2.0.3) gives it; a kubectl or kustomize already installed otherwise (a
# newer one from Kubernetes' own repository) is kept: both install /usr/bin/kubectl.
if [ "$profile" = all ] && ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  packages+=(kubernetes-client)
fi

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
