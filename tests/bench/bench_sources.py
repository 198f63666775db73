#!/usr/bin/env python3
"""Benchmark: many sources in one process.

Starts the local stack with one simulated Century API (a small population)
and points N sources at it. Measures:
  1. `session-bridge once` over all N sources: wall time, CPU time, peak RSS,
     for the baseline round and for a round with upstream changes;
  2. `session-bridge run` for a while with every source on interval_s:
     the share of one core the bridge uses, and how many cycles committed;
  3. at the end of that run, GET /metrics: its size, series, and the time
     one scrape takes (the median of 20).

    tests/bench/bench_sources.py [--sources 1000] [--interval 10] [--seconds 30]
"""

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import stack as st  # noqa: E402


def child_usage():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=10, help="interval_s in the run phase")
    ap.add_argument("--seconds", type=int, default=30, help="length of the run phase")
    args = ap.parse_args()

    s = st.Stack("bench-sources")
    try:
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=8, completed=4, seed=9)
        sources = [{"name": f"src{i:04d}", "provider": "century_smart_ia",
                    "base_url": s.sim_url + "/api/v1",
                    "auth": {"api_key": "${TEST_CENTURY_KEY}"},
                    "interval_s": args.interval, "vanish_grace": 1, "page_size": 5}
                   for i in range(args.sources)]
        conf = {"redis": {"url": f"redis://127.0.0.1:{s.redis_port}/0"},
                "sources": sources,
                "sinks": [{"name": "bus", "type": "kafka", "brokers": s.bootstrap,
                           "topics": st.TOPICS}]}
        path = os.path.join(s.dir, "sources.json")
        with open(path, "w") as f:
            json.dump(conf, f)

        print(f"session-bridge benchmark: {args.sources} Century sources, one simulator "
              f"(12 sessions, pages of 5: 3 requests per source per cycle), "
              f"{os.cpu_count()} cores")
        print(f"{'phase':<34}{'wall s':>8}{'cpu s':>8}{'requests':>10}{'events':>8}"
              f"{'peak RSS MiB':>14}")
        for phase, tick in (("once, baseline round", False), ("once, round with changes", True)):
            if tick:
                s.tick(started=2, completed=1, vanished=1)
            before_req = s.sim("GET", "/_sim/state")["requests"]["total"]
            cpu0, t0 = child_usage(), time.monotonic()
            p = subprocess.Popen([st.BRIDGE, "once", "-c", path], env=s.env(SB_LOG_LEVEL="warn"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            peak = 0
            while p.poll() is None:
                try:
                    peak = max(peak, st.vm_hwm_kib(p.pid))
                except (FileNotFoundError, ProcessLookupError):
                    pass
                time.sleep(0.05)
            err = p.stderr.read().decode()
            wall, cpu = time.monotonic() - t0, child_usage() - cpu0
            if p.returncode != 0:
                raise SystemExit(f"once failed ({p.returncode}):\n{err[-2000:]}")
            reqs = s.sim("GET", "/_sim/state")["requests"]["total"] - before_req
            events = len(s.events()) if tick else 0
            print(f"{phase:<34}{wall:>8.2f}{cpu:>8.2f}{reqs:>10}{events:>8}{peak / 1024:>14.1f}")

        log_path = os.path.join(s.dir, "run.log")
        log = open(log_path, "wb")
        # Debug: the quiet cycles it counts below log at debug.
        p = subprocess.Popen([st.BRIDGE, "run", "-c", path], env=s.env(SB_LOG_LEVEL="debug"),
                             stderr=log,
                             stdout=subprocess.DEVNULL)
        time.sleep(2)  # start-up: loading 1,000 snapshots
        cpu0, t0 = proc_cpu_s(p.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu, wall = proc_cpu_s(p.pid) - cpu0, time.monotonic() - t0
        rss = st.vm_hwm_kib(p.pid)
        port = re.search(r'"msg":"admin endpoint listening".*?"port":(\d+)',
                         st.read_text(log_path)).group(1)
        scrapes, body = [], b""
        for _ in range(20):
            t = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                body = r.read()
            scrapes.append(time.monotonic() - t)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.close()
        cycles = st.read_text(log_path).count('"msg":"cycle committed"')
        print(f"run, interval_s={args.interval}: {cpu / wall:.1%} of one core over {wall:.0f} s "
              f"({cycles} cycles committed, {cycles / wall:.1f}/s), peak RSS {rss / 1024:.1f} MiB")
        print(f"GET /metrics at the end of the run: {len(body) / 1024:.0f} KiB, {series} samples, "
              f"median {statistics.median(scrapes) * 1000:.1f} ms over 20 scrapes")
    finally:
        s.close()


if __name__ == "__main__":
    main()
