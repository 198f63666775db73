#!/usr/bin/env python3
"""Benchmark: what Redis one network hop away costs a cycle, before and
after, in one run (issue 12, points 1 and 5).

Redis sits behind tests/bench/delay_proxy.py, which delays every reply by
--delay-ms (1 ms: a round trip over a LAN). Each binary (--before, e.g.
main's build; --after, this tree's) runs `run` with one Century source at
interval_s=1 while the simulator starts and completes sessions every
second, so that every cycle delivers events and commits. Reported, per
committed cycle (means over --cycles cycles after the first):

  - round trips: request bursts the proxy saw (one read of the bridge's
    bytes ~ one round trip waited for), split into those on the blocking
    connection (the first the bridge opens: the loop waits for each), on
    the asynchronous one (the second: nobody waits) and on the commit's
    own (the third, opened by the first commit on the loop, when the
    binary has one: nobody waits either);
  - redis_commands, poll, deliver and commit durations (poll_ms ... in the
    lines, poll_s ... in older builds) and their sum (the cycle time) from
    the bridge's "cycle committed" lines;
  - the longest commit (a blocking commit stalls the loop for all of
    it), and the blocking round trips per cycle times the delay (what the
    loop spends waiting on Redis).

    tests/bench/bench_redis_latency.py --before /work/main/build/bridge/session-bridge \\
        [--after build/bridge/session-bridge] [--delay-ms 1] [--cycles 20]
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, HERE)
import stack as st  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

LINE = re.compile(r'^\{.*"msg":"cycle committed".*\}$', re.M)


def run(s, binary, label, delay_s, cycles):
    proxy = DelayProxy(s.redis_port, delay_s)
    path = os.path.join(s.dir, f"lat-{label}.json")
    conf = {"redis": {"url": f"redis://127.0.0.1:{proxy.port}/0", "prefix": f"b{label}"},
            "admin": {"listen": "127.0.0.1:0"}, "lease_ttl_s": 15,
            "sources": [{"name": f"src{label}", "provider": "century_smart_ia",
                         "base_url": s.sim_url + "/api/v1",
                         "auth": {"api_key": "${TEST_CENTURY_KEY}"}, "interval_s": 1,
                         "vanish_grace": 1, "page_size": 100}],
            "sinks": [{"name": "bus", "type": "kafka", "brokers": s.bootstrap,
                       "topics": st.TOPICS}]}
    with open(path, "w") as f:
        json.dump(conf, f)
    log_path = os.path.join(s.dir, f"lat-{label}.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([binary, "run", "-c", path], env=s.env(), stderr=log,
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        st.wait_for(lambda: '"msg":"baseline recorded"' in st.read_text(log_path), timeout=30,
                    what=f"the first cycle ({label})")
        n0 = len(LINE.findall(st.read_text(log_path)))
        r0 = list(proxy.requests)
        while len(LINE.findall(st.read_text(log_path))) < n0 + cycles:
            s.tick(started=2, completed=1)
            time.sleep(1.0)
        r1 = list(proxy.requests)
        lines = [json.loads(x) for x in LINE.findall(st.read_text(log_path))][n0:n0 + cycles]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        proxy.close()
    r0 += [0] * (len(r1) - len(r0))
    blocking = (r1[0] - r0[0]) / cycles
    other = (r1[1] - r0[1]) / cycles if len(r1) > 1 else 0.0
    commit = sum(b - a for a, b in zip(r0[2:], r1[2:])) / cycles

    def mean(k):
        return statistics.mean(x[k] for x in lines)

    def mean_s(k):
        return statistics.mean(st.duration_s(x, k) for x in lines)

    cycle = [sum(st.duration_s(x, k) for k in ("poll", "deliver", "commit")) for x in lines]
    return {"round_trips": blocking + other + commit, "blocking_round_trips": blocking,
            "async_round_trips": other, "commit_conn_round_trips": commit,
            "redis_commands": mean("redis_commands"),
            "events": mean("events"), "poll_s": mean_s("poll"), "deliver_s": mean_s("deliver"),
            "commit_s": mean_s("commit"), "cycle_s": statistics.mean(cycle),
            "cycle_p90_s": sorted(cycle)[int(0.9 * (len(cycle) - 1))],
            "max_commit_s": max(st.duration_s(x, "commit") for x in lines),
            "loop_wait_s": blocking * delay_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=os.path.join(st.BUILD, "bridge", "session-bridge"))
    ap.add_argument("--delay-ms", type=float, default=1.0)
    ap.add_argument("--cycles", type=int, default=20)
    a = ap.parse_args()
    s = st.Stack("bench-redis-latency")
    try:
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=200, completed=50, seed=3)
        res = {}
        for label, binary in (("before", a.before), ("after", a.after)):
            res[label] = run(s, binary, label, a.delay_ms / 1000.0, a.cycles)
        keys = list(res["before"])
        print(f"{'per committed cycle':28} {'before':>10} {'after':>10}")
        for k in keys:
            print(f"{k:28} {res['before'][k]:10.4f} {res['after'][k]:10.4f}")
    finally:
        s.close()


if __name__ == "__main__":
    main()
