#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test
# (unit tests and end-to-end tests against a real redis-server, the mock
# Kafka broker and the provider simulator), then the same suite again built
# with AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tests/run.sh            both passes
#   tests/run.sh --fast     the plain pass only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fast=0
[ "${1:-}" = "--fast" ] && fast=1

"$root/deploy/deps.sh"
jobs=$(nproc 2>/dev/null || echo 2)

pass() { # name, build dir, extra cmake args...
  local name=$1 dir=$2
  shift 2
  echo "==> $name: configure and build ($dir)"
  cmake -S "$root" -B "$dir" -DSB_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  echo "==> $name: test"
  ctest --test-dir "$dir" --output-on-failure --timeout 600 -j"$jobs"
}

pass plain "$root/build"
if [ "$fast" -eq 0 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  pass sanitizers "$root/build-asan" -DSB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi
