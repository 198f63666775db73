#!/usr/bin/env bash
# The demo: installs what is missing, builds, starts the local stack (a
# redis-server, the mock Kafka broker and a simulated Century Smart IA API
# whose sessions start, complete and vanish every few seconds), runs
# session-bridge against it, and shows the events twice: as the stdout sink
# prints them, and as a real Kafka consumer (kcat) reads them from the
# topics. Ctrl-C stops everything.
#
#   deploy/demo.sh                  until Ctrl-C
#   DEMO_SECONDS=30 deploy/demo.sh  stops by itself after 30 s
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stack="$root/.stack/demo"
build="$root/build"

"$root/deploy/deps.sh"
echo "==> building (into $build)"
cmake -S "$root" -B "$build" >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

rm -rf "$stack"
mkdir -p "$stack/redis"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping the bridge and the local stack"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "==> stopped; logs are in $stack"
  exit 0
}
trap cleanup INT TERM EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "demo: $2 did not start, see $stack" >&2; exit 1; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$stack/redis" --appendonly yes \
  --save "" >"$stack/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$build/tests/stack/sb-kafka-mock" --bootstrap-file "$stack/bootstrap" --partitions 3 \
  --topic sessions.started --topic sessions.completed --topic sessions.cancelled \
  >"$stack/kafka.log" 2>&1 &
pids+=($!)
wait_file "$stack/bootstrap" "the Kafka mock broker"

export CENTURY_API_KEY="demo-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$build/tests/stack/sb-provider-sim" --port 0 --url-file "$stack/sim-url" --dialect century \
  --api-key "$CENTURY_API_KEY" --active 6 --completed 3 --seed "$RANDOM" \
  --truth "$stack/truth.jsonl" >"$stack/sim.log" 2>&1 &
pids+=($!)
wait_file "$stack/sim-url" "the provider simulator"

export SB_DEMO_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export SB_DEMO_BROKERS=$(cat "$stack/bootstrap")
export SB_DEMO_SIM_URL=$(cat "$stack/sim-url")
echo "==> local stack: redis $SB_DEMO_REDIS_URL, kafka $SB_DEMO_BROKERS, century API $SB_DEMO_SIM_URL"

# Upstream life: every 3 s two sessions start, one completes, one vanishes.
(
  while sleep 3; do
    curl -fsS -X POST "$SB_DEMO_SIM_URL/_sim/tick?started=2&completed=1&vanished=1" >/dev/null || exit 0
  done
) &
pids+=($!)

# A real Kafka consumer (one process for the three topics, so that its
# lines do not interleave), printing what arrives.
kcat -b "$SB_DEMO_BROKERS" -G "sb-demo-$$" -X auto.offset.reset=earliest -q -u \
  -f "kafka  %t  key=%k  %h\n" sessions.started sessions.completed sessions.cancelled \
  2>>"$stack/kcat.log" &
pids+=($!)

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
pids+=($!)

# What Prometheus would scrape from the admin endpoint.
(
  while sleep 15; do
    curl -fsS http://127.0.0.1:9464/metrics 2>/dev/null |
      awk '/^session_bridge_events_total/ { print "metrics", $1, $2 }'
  done
) &
pids+=($!)

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  wait
fi
