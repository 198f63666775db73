#!/usr/bin/env bash
# Fuzzes one target of tests/fuzz with libFuzzer, for longer than the
# replays of the checked-in corpus that ctest runs.
#
#   tests/fuzz/fuzz.sh TARGET [SECONDS] [--merge|--minimize]
#   tests/fuzz/fuzz.sh --list
#
# TARGET: century quiz_jsonapi proctorexam smarterproctoring rest config diff page_scan.
# Builds with clang into build-fuzz (SB_FUZZ=ON: every library instrumented
# for coverage, ASan and UBSan), then fuzzes for SECONDS (default 600)
# starting from tests/fuzz/corpus/TARGET and the dictionary
# tests/fuzz/TARGET.dict if there is one. New inputs go to
# build-fuzz/corpus/TARGET; crashes, leaks and timeouts to
# build-fuzz/findings/TARGET/ (replay one: build-fuzz/tests/fuzz/fuzz_TARGET
# FILE). --merge then adds the inputs that reach new code (edges; hit
# counts are left out, to keep the corpus small) to the checked-in corpus;
# --minimize rewrites it as the smallest set reaching the same code. Extra
# libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2".
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
targets="century quiz_jsonapi proctorexam smarterproctoring rest config diff page_scan"

if [ "${1:-}" = "--list" ]; then
  echo "$targets"
  exit 0
fi
target=${1:?usage: $0 TARGET [SECONDS] [--merge|--minimize]; targets: $targets}
seconds=${2:-600}
after=${3:-}
case " $targets " in *" $target "*) ;; *) echo "unknown target $target ($targets)" >&2; exit 2 ;; esac

"$root/deploy/deps.sh" --fuzz
build=$root/build-fuzz
CC=clang cmake -S "$root" -B "$build" -DSB_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target "fuzz_$target" >/dev/null

bin=$build/tests/fuzz/fuzz_$target
seeds=$root/tests/fuzz/corpus/$target
work=$build/corpus/$target
findings=$build/findings/$target
mkdir -p "$work" "$findings"
# Inputs of a poll hold several pages; a configuration file or a diff
# script is smaller.
case $target in
  config | diff | page_scan) max_len=8192 ;;
  *) max_len=65536 ;;
esac
flags=(-max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$findings/"
       -max_total_time="$seconds" -print_final_stats=1)
[ -f "$root/tests/fuzz/$target.dict" ] && flags+=(-dict="$root/tests/fuzz/$target.dict")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
"$bin" "${flags[@]}" ${FUZZ_FLAGS:-} "$work" "$seeds"

case $after in
  --merge)
    "$bin" -merge=1 -use_counters=0 -max_len="$max_len" "$seeds" "$work"
    ;;
  --minimize)
    fresh=$(mktemp -d)
    "$bin" -merge=1 -use_counters=0 -max_len="$max_len" "$fresh" "$seeds" "$work"
    rm -f "$seeds"/*
    mv "$fresh"/* "$seeds"/
    rmdir "$fresh"
    ;;
esac
