#!/usr/bin/env bash
# The deployments in deploy/ start what they say, with options the binaries accept, without a
# cluster (tests/e2e/deploy_manifests.py does the work):
#   - Kubernetes: deploy/k8s/base, overlays/example (with keys made by deploy/make-keys.sh,
#     lion-keygen) and overlays/keda rendered with `kubectl kustomize` (or `kustomize build`;
#     without either, read by the test itself, which it says); every init container and
#     container of every Deployment run as the kubelet would start it: envFrom and env
#     ($(VAR) expanded, fieldRef), command and args, ConfigMap and Secret volumes written with
#     their modes (fsGroup: group-readable), emptyDirs shared by the pod's containers, the
#     model claim holding models/tiny-lion; the services with --check-config;
#   - how workers reach the gateway: each worker's LION_GATEWAY host is a Service that selects
#     the gateway's pod, lists it before it is ready, and leads to that stage's endpoint;
#     probes point where the binaries answer (/healthz, /readyz, the workers' --ready-file);
#   - an HPA per stage on the adapter rule's metric, which (like the KEDA queries) uses only
#     metrics the gateway's /metrics has;
#   - deploy/compose.yaml: each service's command with its environment, named volumes (the
#     "keys" service making the keys first), bind mounts and tmpfs, with --check-config;
#     workers pointed at the gateway service's endpoints, health checks where they answer;
#   - deploy/systemd: each unit's ExecStart as systemd would run lion-STAGE@1 (Environment=,
#     the example EnvironmentFile beside it, LoadCredential= copied 0400, %i %H %d), with
#     --check-config; `systemd-analyze verify` on copies whose /usr/local/bin is the build;
#   - deploy/Containerfile installs every binary the manifests run, as their user;
#   - --ready-file on a real worker start: written once serving, removed at SIGTERM;
#   - refused, as they must be: a mistyped flag, a key pair read from a Secret in place
#     (group-readable), a gateway off loopback without API keys, an unknown flag per binary.
# Skipped (77) only when python3's yaml module is missing (deploy/install-deps.sh installs
# python3-yaml). Needs $LION_BUILD_DIR and $LION_BIN_DIR (ctest sets them).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${LION_BUILD_DIR:?LION_BUILD_DIR must name the build tree}"
python=${LION_PYTHON:-/usr/bin/python3}
if ! "$python" -c 'import yaml' 2>/dev/null; then
  echo "SKIP: $python has no yaml module (apt-get install python3-yaml; deploy/install-deps.sh does)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" tests/e2e/deploy_manifests.py "$work"
