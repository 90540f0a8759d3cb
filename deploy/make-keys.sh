#!/usr/bin/env bash
# The keys of one LION deployment, made with lion-keygen (docs/operations.md, "Security"
# and "Deployment"):
#
#   make-keys.sh DIR
#
#   DIR/gateway.key, gateway.pub         the gateway's CURVE key pair (--curve-key) and the
#                                        public key every worker is given (--curve-server-key)
#   DIR/<stage>.key, <stage>.pub         one pair per stage: vision, tagger, aggregator, llm
#                                        (every replica of a stage uses its stage's pair)
#   DIR/workers/<stage>.pub              the gateway's allow-list folder (--worker-keys)
#   DIR/api-keys                         one HTTP API key (--api-keys; clients send it as
#                                        "Authorization: Bearer KEY")
#
# Key pairs and api-keys are written 0600 (lion-keygen refuses to load a pair others can
# read). What exists is kept: run it again after deleting a pair to replace that one only.
# lion-keygen is $LION_KEYGEN, else the one on PATH. In the container image this script is
# /usr/local/bin/lion-make-keys (deploy/compose.yaml's "keys" service runs it).
set -euo pipefail

dir=${1:?usage: make-keys.sh DIR}
keygen=${LION_KEYGEN:-lion-keygen}
command -v "$keygen" >/dev/null || { echo "make-keys: $keygen not found (set LION_KEYGEN)" >&2; exit 1; }

umask 077
mkdir -p "$dir/workers"
# the folder may be listed by the services' users (the public keys in it are read in place;
# the pairs stay 0600 and are handed over as credentials or copied by an init step)
chmod 0755 "$dir"
made=()
for name in gateway vision tagger aggregator llm; do
  if [ ! -e "$dir/$name.key" ]; then
    "$keygen" "$dir/$name" >/dev/null
    made+=("$name")
  fi
done
# public keys are no secret: the allow-list folder is readable, as the gateway's user needs
chmod 0755 "$dir/workers"
for stage in vision tagger aggregator llm; do
  install -m 0644 "$dir/$stage.pub" "$dir/workers/$stage.pub"
done
chmod 0644 "$dir"/*.pub
if [ ! -e "$dir/api-keys" ]; then
  # 24 random bytes as 48 hex digits: the gateway takes keys of 16 bytes or more
  key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '# lion-gateway --api-keys: one key per line\nlion-%s\n' "$key" >"$dir/api-keys"
  made+=("api-keys")
fi
echo "make-keys: $dir: made ${made[*]:-nothing (all were there)}"
