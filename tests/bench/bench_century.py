#!/usr/bin/env python3
"""Benchmark: one Century Smart IA source of 100,000 sessions, 1% churn per tick.

Starts the local stack (redis-server, the mock Kafka broker, the provider
simulator), runs `session-bridge run` against it and, after every committed
cycle, makes one upstream tick (churn/3 sessions start, churn/3 complete,
churn/3 vanish). Prints, per phase, the figures the bridge logged for its
cycles, its peak RSS, and the Redis commands it sent per cycle.

    tests/bench/bench_century.py [--sessions 100000] [--churn 0.01] [--cycles 5]

Needs a build in ./build (tests/run.sh --fast or deploy/demo.sh makes one).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import stack as st  # noqa: E402


def cycles_in(path):
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") in ("cycle committed", "baseline recorded"):
                out.append(rec)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--cycles", type=int, default=5, help="churn cycles measured")
    ap.add_argument("--initial", choices=("emit", "baseline"), default="emit",
                    help="initial_snapshot of the source: emit measures a first cycle that "
                         "publishes every session; baseline the steady state alone")
    args = ap.parse_args()

    s = st.Stack("bench")
    try:
        s.start_redis()
        s.start_kafka()
        active = int(args.sessions * 0.9)
        s.start_sim(active=active, completed=args.sessions - active, seed=42)
        conf = s.config("bench", page_size=100, interval_s=1, vanish_grace=1,
                        initial_snapshot=args.initial)
        log_path = os.path.join(s.dir, "bridge-run.log")
        log = open(log_path, "wb")
        t0 = time.monotonic()
        p = subprocess.Popen([st.BRIDGE, "run", "-c", conf], stderr=log,
                             stdout=subprocess.DEVNULL, env=s.env())
        per_tick = max(3, int(args.sessions * args.churn))
        try:
            st.wait_for(lambda: len(cycles_in(log_path)) >= 1, 600, "the first cycle")
            for i in range(args.cycles):
                s.tick(started=per_tick // 3, completed=per_tick // 3,
                       vanished=per_tick - 2 * (per_tick // 3))
                st.wait_for(lambda: len(cycles_in(log_path)) >= i + 2, 600, f"cycle {i + 2}")
            rss = st.vm_hwm_kib(p.pid)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            log.close()
        wall = time.monotonic() - t0
        cyc = cycles_in(log_path)
        first, churn = cyc[0], cyc[1:]

        def cycle_s(c):
            return sum(st.duration_s(c, k) for k in ("poll", "deliver", "commit"))

        print(f"session-bridge benchmark: {args.sessions} sessions, "
              f"{per_tick} upstream changes per tick ({args.churn:.1%}), "
              f"{len(churn)} churn cycles, {os.cpu_count()} cores")
        print(f"{'phase':<28}{'cycle s':>9}{'sessions/s':>12}{'events':>9}"
              f"{'events/s':>11}{'changes':>9}{'redis cmds':>12}")
        print(f"{'first cycle (' + args.initial + ')':<28}{cycle_s(first):>9.2f}"
              f"{first['observed'] / cycle_s(first):>12.0f}{first['events']:>9}"
              f"{first['events'] / max(st.duration_s(first, 'deliver'), 1e-9) if first['events'] else 0:>11.0f}"
              f"{first['changes']:>9}{first['redis_commands']:>12}")
        med = statistics.median
        ev = [c["events"] for c in churn]
        print(f"{'churn cycle (median)':<28}{med(cycle_s(c) for c in churn):>9.2f}"
              f"{med(c['observed'] / cycle_s(c) for c in churn):>12.0f}{med(ev):>9.0f}"
              f"{med(c['events'] / max(st.duration_s(c, 'deliver'), 1e-9) for c in churn):>11.0f}"
              f"{med(c['changes'] for c in churn):>9.0f}"
              f"{med(c['redis_commands'] for c in churn):>12.0f}")
        print(f"churn cycle split (median): poll {med(st.duration_s(c, 'poll') for c in churn):.2f} s, "
              f"deliver {med(st.duration_s(c, 'deliver') for c in churn):.3f} s, "
              f"commit {med(st.duration_s(c, 'commit') for c in churn):.3f} s")
        tracked = churn[-1]["sessions"]
        idx = churn[-1].get("index_bytes")
        print(f"peak RSS of the bridge: {rss / 1024:.1f} MiB; sessions tracked: {tracked}"
              + (f"; snapshot index: {idx / tracked:.1f} bytes/session (ids are 36 bytes)"
                 if idx and tracked else ""))
        print(f"wall time: {wall:.1f} s")
    finally:
        s.close()


if __name__ == "__main__":
    main()
