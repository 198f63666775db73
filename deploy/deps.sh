#!/usr/bin/env bash
# Installs the Debian 12 packages session-bridge needs to build, test and run
# its local stack (and, where npm is, AsyncAPI's JSON Schemas for one test).
# Idempotent: installs only what is missing, runs `apt-get update` only when
# something is.
#
#   deploy/deps.sh          build, test, run
#   deploy/deps.sh --fuzz   also clang and its libFuzzer (tests/fuzz/fuzz.sh)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libcurl4-openssl-dev libcjson-dev librdkafka-dev libssl-dev libhiredis-dev
  libmicrohttpd-dev libxxhash-dev libzstd-dev libevent-dev check
  redis-server kcat python3 curl
  # promtool (only in the prometheus package) checks the /metrics output and
  # the alert rules; PyYAML reads the rendered manifests in tests/deploy and
  # conf/schema/asyncapi.yaml; jsonschema holds every event the end-to-end
  # tests read back to conf/schema/event.schema.json.
  prometheus python3-yaml python3-jsonschema
  # tests/deploy/test_image.py builds deploy/Dockerfile and runs the image:
  # debootstrap makes its Debian 12 base (no registry needed), buildah builds
  # and runs it with chroot isolation (so no runc or crun: buildah's
  # recommendations are left out like every other package's).
  debootstrap buildah
)
# kubectl renders deploy/k8s: Debian's kubernetes-client, unless a kubectl
# is already installed (the upstream "kubectl" package conflicts with it;
# the manifests are written for both).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
# libFuzzer's runtime is only a recommendation of clang-14, which the
# --no-install-recommends below leaves out.
[ "${1:-}" = "--fuzz" ] && packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# AsyncAPI's own JSON Schemas (the npm package @asyncapi/specs, data only),
# against which tests/e2e/test_interop.py checks conf/schema/asyncapi.yaml.
# Without npm that one check is skipped, and says so.
asyncapi_specs() {
  local as=""
  command -v npm >/dev/null 2>&1 || return 0
  [ -e "$(npm root -g)/@asyncapi/specs/schemas/3.0.0-without-\$id.json" ] && return 0
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && as="sudo"
  echo "deps: installing @asyncapi/specs (npm)" >&2
  $as npm install -g --no-fund --no-audit @asyncapi/specs@6.11.1 >/dev/null ||
    echo "deps: @asyncapi/specs not installed: the AsyncAPI document's check will be skipped" >&2
}

if [ ${#missing[@]} -eq 0 ]; then
  asyncapi_specs
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "deps: missing packages: ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start a system redis on 6379 (and, on a systemd host, a
# Prometheus on 9090); the stack runs its own redis on another port and the
# tests use only promtool, so the system services are left as the
# administrator wants them.
asyncapi_specs
