#!/usr/bin/env python3
"""Allocation calls per record of steady poll cycles, through the real binary.

    tests/bench/bench_allocs.py [--sessions 50000] [--cycles 4] [--churn 0.01]

Runs `session-bridge run` (the build in ./build, or $SB_BUILD_DIR) against
the e2e stack (redis-server, sb-kafka-mock, the Century simulator) with
tests/bench/malloc_count.c preloaded, which tags every log line with the
process's allocation calls so far (malloc, calloc, realloc, aligned; every
thread). The first cycle records the baseline (and loads nothing); each
later cycle polls the same population: the second after a simulator tick
of --churn (some records change and produce events), the third with the
vanished sessions' second miss (vanish_grace 2: their cancellations), the
others with nothing changed at all. Prints, per cycle, the allocation calls between the
"cycle committed" line before it and its own, divided by the records it
observed: a steady cycle that allocates per record shows 1 or more there;
--page-size tells what is per page (an HTTP transfer) from what is per
record.
Standard library only; not a test, figures go in BENCHMARKS.md.
"""

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import stack as st  # noqa: E402

LINE = re.compile(r"^(\d+) (\{.*)$")


def build_shim(outdir):
    so = os.path.join(outdir, "malloc_count.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", so,
                    os.path.join(HERE, "malloc_count.c")], check=True)
    return so


def committed(path):
    """(allocations, fields) of each "cycle committed"/"baseline recorded" line."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m or ('"cycle committed"' not in m.group(2)
                         and '"baseline recorded"' not in m.group(2)):
                continue
            fields = dict(re.findall(r'"(\w+)":("[^"]*"|[-\d.]+)', m.group(2)))
            out.append((int(m.group(1)), fields))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=50000)
    ap.add_argument("--cycles", type=int, default=5, help="cycles after the baseline")
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--page-size", type=int, default=100,
                    help="records a page (Century's maximum is 100): allocations that "
                         "follow it are per page, not per record")
    args = ap.parse_args()

    s = st.Stack("allocs")
    try:
        shim = build_shim(s.dir)
        s.start_redis()
        s.start_kafka()
        active = int(args.sessions * 0.9)
        s.start_sim(active=active, completed=args.sessions - active)
        conf = s.config(interval_s=2, vanish_grace=2, page_size=args.page_size,
                        max_sessions=max(100000, args.sessions * 2))
        out = os.path.join(s.dir, "allocs.log")
        env = s.env(LD_PRELOAD=shim, MALLOC_COUNT_OUT=out)
        s._spawn("bridge-allocs", [st.BRIDGE, "run", "-c", conf], env=env)
        n = max(1, int(args.sessions * args.churn / 3))
        done = 0
        deadline = time.time() + 60 + args.cycles * 30
        while done < args.cycles + 1 and time.time() < deadline:
            got = len(committed(out))
            if got > done:
                done = got
                if done == 1:
                    # the next cycle sees a third of the churn start, complete, vanish
                    s.tick(started=n, completed=n, vanished=n)
            time.sleep(0.05)
        p = s.procs.pop("bridge-allocs")
        p.terminate()
        p.wait(timeout=60)
        rows = committed(out)
        if len(rows) < 2:
            sys.exit(f"fewer than two cycles committed; see {s.dir}")
        print(f"allocation calls per record, {args.sessions} sessions, {args.page_size} a page "
              f"(session-bridge run, malloc_count.so):")
        print(f"{'cycle':>5} {'observed':>9} {'events':>7} {'changes':>8} "
              f"{'allocations':>12} {'per record':>11}")
        for (a0, _), (a1, f) in zip(rows, rows[1:]):
            obs = int(f.get("observed", "0"))
            print(f"{f.get('cycle', '?'):>5} {obs:>9} {f.get('events', '?'):>7} "
                  f"{f.get('changes', '?'):>8} {a1 - a0:>12} {(a1 - a0) / max(obs, 1):>11.4f}")
    finally:
        s.close()


if __name__ == "__main__":
    main()
