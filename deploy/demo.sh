#!/usr/bin/env bash
# The demo: installs what is missing, builds, starts the local stack (a
# redis-server, the mock Kafka broker and a simulated Century Smart IA API
# whose sessions start, complete and vanish every few seconds), runs
# session-bridge against it, and shows the events twice: as the stdout sink
# prints them, and as a real Kafka consumer (kcat) reads them from the
# topics. Ctrl-C stops everything.
#
# It watches what it started: when one of them exits (a port taken, a
# crash), it says which, shows the end of its log, stops the others and
# exits 1. Ctrl-C, or the end of DEMO_SECONDS, exits 0.
#
#   deploy/demo.sh                      until Ctrl-C
#   DEMO_SECONDS=30 deploy/demo.sh      stops by itself after 30 s
#   SB_BUILD_DIR=build deploy/demo.sh   that build as it is: no deps.sh, no build
#   DEMO_DIR=/tmp/demo deploy/demo.sh   logs there instead of .stack/demo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stack="${DEMO_DIR:-$root/.stack/demo}"
# How much of a dead process's log to show: enough for the error and what led to it.
LOG_TAIL_LINES=15

if [ -n "${SB_BUILD_DIR:-}" ]; then
  build=$(cd "$SB_BUILD_DIR" && pwd)
else
  build="$root/build"
  "$root/deploy/deps.sh"
  echo "==> building (into $build)"
  cmake -S "$root" -B "$build" >/dev/null
  cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
fi

rm -rf "$stack"
mkdir -p "$stack/redis"
pids=()
# What the demo cannot go on without: pid -> "name|log".
declare -A watched=()

stop() {
  local code=$1
  trap - INT TERM EXIT
  echo
  echo "==> stopping the bridge and the local stack"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "==> stopped; logs are in $stack"
  exit "$code"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# fail WHAT [LOG]: says what went wrong (and the end of LOG), stops everything, exits 1.
fail() {
  echo "demo: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "demo: the last lines of $2:" >&2
    tail -n "$LOG_TAIL_LINES" "$2" | sed 's/^/  | /' >&2
  fi
  stop 1
}

# watch NAME LOG: the last process started is one the demo needs.
watch() {
  pids+=($!)
  watched[$!]="$1|$2"
}

# Fails when a watched process has exited, naming it.
check_watched() {
  local pid name log status
  for pid in "${!watched[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    status=0
    wait "$pid" 2>/dev/null || status=$?
    IFS='|' read -r name log <<<"${watched[$pid]}"
    fail "$name exited (status $status)" "$log"
  done
}

# wait_until WHAT LOG COMMAND...: until COMMAND succeeds (10 s at most), watching them all.
wait_until() {
  local what=$1 log=$2
  shift 2
  for _ in $(seq 1 100); do
    "$@" >/dev/null 2>&1 && return 0
    check_watched
    sleep 0.1
  done
  fail "$what did not start within 10 s" "$log"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$stack/redis" --appendonly yes \
  --save "" >"$stack/redis.log" 2>&1 &
watch "redis-server" "$stack/redis.log"
wait_until "redis-server" "$stack/redis.log" redis-cli -p "$redis_port" ping

"$build/tests/stack/sb-kafka-mock" --bootstrap-file "$stack/bootstrap" --partitions 3 \
  --topic sessions.started --topic sessions.completed --topic sessions.cancelled \
  >"$stack/kafka.log" 2>&1 &
watch "the Kafka mock broker (sb-kafka-mock)" "$stack/kafka.log"
wait_until "the Kafka mock broker" "$stack/kafka.log" test -s "$stack/bootstrap"

export CENTURY_API_KEY="demo-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$build/tests/stack/sb-provider-sim" --port 0 --url-file "$stack/sim-url" --dialect century \
  --api-key "$CENTURY_API_KEY" --active 6 --completed 3 --seed "$RANDOM" \
  --truth "$stack/truth.jsonl" >"$stack/sim.log" 2>&1 &
watch "the provider simulator (sb-provider-sim)" "$stack/sim.log"
wait_until "the provider simulator" "$stack/sim.log" test -s "$stack/sim-url"

export SB_DEMO_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export SB_DEMO_BROKERS=$(cat "$stack/bootstrap")
export SB_DEMO_SIM_URL=$(cat "$stack/sim-url")
echo "==> local stack: redis $SB_DEMO_REDIS_URL, kafka $SB_DEMO_BROKERS, century API $SB_DEMO_SIM_URL"

# every SECONDS COMMAND...: COMMAND every SECONDS, in the background, until it
# fails or the demo stops. Its sleep is stopped with it: a sleep left behind
# would hold the terminal (or a caller's pipe) open until it ends.
every() {
  local period=$1
  shift
  (
    trap 'kill "$!" 2>/dev/null; exit 0' TERM
    while sleep "$period" & wait "$!"; do "$@" || exit 0; done
  ) &
  pids+=($!)
}

# Upstream life: every 3 s two sessions start, one completes, one vanishes.
# Requests are bounded (HTTP_MAX_S): one that hangs would outlive the demo.
HTTP_MAX_S=5
tick() {
  curl -fsS -m "$HTTP_MAX_S" -X POST "$SB_DEMO_SIM_URL/_sim/tick?started=2&completed=1&vanished=1" \
    >/dev/null
}
every 3 tick

# A real Kafka consumer (one process for the three topics, so that its
# lines do not interleave), printing what arrives.
kcat -b "$SB_DEMO_BROKERS" -G "sb-demo-$$" -X auto.offset.reset=earliest -q -u \
  -f "kafka  %t  key=%k  %h\n" sessions.started sessions.completed sessions.cancelled \
  2>>"$stack/kcat.log" &
watch "the Kafka consumer (kcat)" "$stack/kcat.log"

# The stdout sink prints one CloudEvent per line; keep them whole in
# events.jsonl and show one line each.
summary_py=$(cat <<'PY'
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    d = e["data"]
    how = d["reason"] + (", synthesized" if d["synthesized"] else "")
    print("stdout %-18s %s/%s  %s -> %s (%s)  id=%s" % (
        e["type"], d["source"], d["session_id"], d["previous_state"] or "-",
        d["state"], how, e["id"]), flush=True)
PY
)
summarize() { tee "$stack/events.jsonl" | python3 -u -c "$summary_py"; }
echo "==> session-bridge run -c conf/demo.json"
echo "    stdout lines: the stdout sink (whole CloudEvents in $stack/events.jsonl)"
echo "    kafka lines:  kcat reading the topics back; bridge logs in $stack/bridge.log"
echo "    metrics lines: every 15 s, events counted on http://127.0.0.1:9464/metrics"
"$build/bridge/session-bridge" run -c "$root/conf/demo.json" 2>"$stack/bridge.log" \
  > >(summarize) &
watch "the bridge (session-bridge run)" "$stack/bridge.log"

# What Prometheus would scrape from the admin endpoint.
scrape() {
  curl -fsS -m "$HTTP_MAX_S" http://127.0.0.1:9464/metrics 2>/dev/null |
    awk '/^session_bridge_events_total/ { print "metrics", $1, $2 }' || true
}
every 15 scrape

# Until Ctrl-C or DEMO_SECONDS, as long as everything it started runs.
deadline=$((SECONDS + ${DEMO_SECONDS:-0}))
while [ -z "${DEMO_SECONDS:-}" ] || [ "$SECONDS" -lt "$deadline" ]; do
  check_watched
  sleep 0.5
done
