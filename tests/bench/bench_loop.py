#!/usr/bin/env python3
"""Benchmark: what the event loop costs, before and after, in one run.

Runs two session-bridge binaries (--before, e.g. main's build, and --after,
this tree's) one after the other against the same local stack (redis-server,
the mock Kafka broker, one simulated Century API with a small population, so
that the figures are about the loop and not about the data) and measures:

  1. idle: `run` with N sources at interval_s=60 (N = 1,000 and 10,000),
     once every first cycle committed: CPU seconds and wake-ups per second
     (voluntary + involuntary context switches from /proc/PID/task/*/status)
     over a window in which no cycle is due. The main thread (the loop) and
     the whole process (librdkafka's and the admin server's threads too) are
     reported apart. lease_ttl_s is 600 so that lease renewals (blocking
     Redis round trips until the store moves to the async API) fall outside
     the window: what is left is the loop itself.
  2. latency: one source at interval_s=1; the simulator starts a session,
     and a streaming kcat consumer sees the event on sessions.started. The
     time from the upstream change to the event read back (median and 90th
     percentile over --ticks changes; half of it is the wait for the next
     poll), and the bridge's own deliver_s (handing the events to Kafka until
     the last acknowledgement) of the cycles that had events.

    tests/bench/bench_loop.py --before /tmp/main-build/bridge/session-bridge \
        [--after build/bridge/session-bridge] [--window 20] [--ticks 15]
"""

import argparse
import glob
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import stack as st  # noqa: E402

IDLE_INTERVAL_S = 60
IDLE_LEASE_TTL_S = 600


def task_counters(pid):
    """(main thread switches, all threads switches, main cpu s, all cpu s) of pid."""
    tick = os.sysconf("SC_CLK_TCK")
    main_sw = all_sw = 0
    main_cpu = all_cpu = 0.0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        tid = int(os.path.basename(task))
        try:
            with open(f"{task}/status") as f:
                text = f.read()
            with open(f"{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
        sw = sum(int(v) for v in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", text, re.M))
        cpu = (int(fields[11]) + int(fields[12])) / tick
        all_sw += sw
        all_cpu += cpu
        if tid == pid:
            main_sw, main_cpu = sw, cpu
    # threads that ended are folded into the process's own counters
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    all_cpu = max(all_cpu, (int(fields[11]) + int(fields[12])) / tick)
    return main_sw, all_sw, main_cpu, all_cpu


def write_config(s, path, prefix, sources, sinks=None, lease_ttl_s=15):
    conf = {"redis": {"url": f"redis://127.0.0.1:{s.redis_port}/0", "prefix": prefix},
            "admin": {"listen": "127.0.0.1:0"},
            "lease_ttl_s": lease_ttl_s,
            "sources": sources,
            "sinks": sinks or [{"name": "bus", "type": "kafka", "brokers": s.bootstrap,
                                "topics": st.TOPICS}]}
    with open(path, "w") as f:
        json.dump(conf, f)


def century(s, name, interval_s):
    return {"name": name, "provider": "century_smart_ia", "base_url": s.sim_url + "/api/v1",
            "auth": {"api_key": "${TEST_CENTURY_KEY}"}, "interval_s": interval_s,
            "vanish_grace": 1, "page_size": 100}


def idle(s, binary, label, n, window):
    path = os.path.join(s.dir, f"idle-{label}-{n}.json")
    write_config(s, path, f"{label}{n}", [century(s, f"s{i:05d}", IDLE_INTERVAL_S) for i in range(n)],
                 lease_ttl_s=IDLE_LEASE_TTL_S)
    log_path = os.path.join(s.dir, f"idle-{label}-{n}.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([binary, "run", "-c", path], env=s.env(), stderr=log,
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        # every first cycle (spread over a tenth of the interval) committed
        st.wait_for(lambda: st.read_text(log_path).count('"msg":"baseline recorded"') >= n,
                    timeout=IDLE_INTERVAL_S * 0.8, what=f"{n} first cycles ({label})")
        time.sleep(2)
        m0, a0, mc0, ac0 = task_counters(p.pid)
        t0 = time.monotonic()
        time.sleep(window)
        m1, a1, mc1, ac1 = task_counters(p.pid)
        wall = time.monotonic() - t0
        later = st.read_text(log_path).count('"msg":"cycle committed"')
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    if later:
        print(f"  note: {later} cycles committed during the {label} window", file=sys.stderr)
    return {"main_wakeups_s": (m1 - m0) / wall, "all_wakeups_s": (a1 - a0) / wall,
            "main_cpu_s": mc1 - mc0, "all_cpu_s": ac1 - ac0, "window_s": wall}


def latency(s, binary, label, ticks):
    name = f"lat{label}"
    path = os.path.join(s.dir, f"latency-{label}.json")
    sinks = [{"name": "bus", "type": "kafka", "brokers": s.bootstrap, "topics": st.TOPICS}]
    write_config(s, path, f"lat{label}", [century(s, name, 1)], sinks=sinks)
    arrivals = []  # (monotonic time, key)
    kcat = subprocess.Popen(["kcat", "-b", s.bootstrap, "-C", "-t", st.TOPICS["started"],
                             "-o", "end", "-u", "-q", "-f", "%k\n",
                             "-X", "fetch.wait.max.ms=5", "-X", "fetch.error.backoff.ms=5"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)

    def read():
        for line in kcat.stdout:
            arrivals.append((time.monotonic(), line.decode().strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log_path = os.path.join(s.dir, f"latency-{label}.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([binary, "run", "-c", path], env=s.env(), stderr=log,
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    lat = []
    try:
        st.wait_for(lambda: '"msg":"baseline recorded"' in st.read_text(log_path), timeout=30,
                    what=f"the baseline ({label})")
        time.sleep(3)  # kcat assigned and at the end of every partition
        for _ in range(ticks):
            seen = {k for _, k in arrivals}
            t0 = time.monotonic()
            s.tick(started=1)
            got = st.wait_for(lambda: [(t, k) for t, k in arrivals
                                       if k.startswith(name + "/") and k not in seen],
                              timeout=30, what="the started event")
            lat.append(got[0][0] - t0)
            time.sleep(random.uniform(0.3, 1.3))  # not in step with the interval
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        kcat.terminate()
        kcat.wait(timeout=10)
    deliver = [float(m) for m in re.findall(r'"msg":"cycle committed".*?"events":[1-9]\d*.*?'
                                            r'"deliver_s":([0-9.e-]+)', st.read_text(log_path))]
    q = statistics.quantiles(lat, n=10)
    return {"median_s": statistics.median(lat), "p90_s": q[8],
            "deliver_median_ms": statistics.median(deliver) * 1000 if deliver else float("nan"),
            "deliver_max_ms": max(deliver) * 1000 if deliver else float("nan"),
            "n": len(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the session-bridge binary before the change")
    ap.add_argument("--after", default=st.BRIDGE, help="the one after (default: this build's)")
    ap.add_argument("--sources", default="1000,10000", help="idle populations, comma-separated")
    ap.add_argument("--window", type=float, default=20.0, help="idle measurement window, s")
    ap.add_argument("--ticks", type=int, default=15, help="upstream changes timed")
    args = ap.parse_args()
    binaries = [("before", os.path.abspath(args.before)), ("after", os.path.abspath(args.after))]

    s = st.Stack("bench-loop")
    try:
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=2, completed=1, seed=5)
        print(f"session-bridge loop benchmark, {os.cpu_count()} cores; idle: interval_s="
              f"{IDLE_INTERVAL_S}, lease_ttl_s={IDLE_LEASE_TTL_S}, {args.window:.0f} s window "
              f"after every first cycle; one simulator (3 sessions, 2 requests per cycle)")
        print(f"{'':<8}{'sources':>8}{'loop wake/s':>13}{'all wake/s':>12}"
              f"{'loop cpu s':>12}{'all cpu s':>11}")
        for n in [int(x) for x in args.sources.split(",")]:
            for label, binary in binaries:
                r = idle(s, binary, label, n, args.window)
                print(f"{label:<8}{n:>8}{r['main_wakeups_s']:>13.1f}{r['all_wakeups_s']:>12.1f}"
                      f"{r['main_cpu_s']:>12.2f}{r['all_cpu_s']:>11.2f}", flush=True)
        print(f"\nupstream change -> event read back with kcat, interval_s=1, {args.ticks} changes")
        print(f"{'':<8}{'median s':>10}{'p90 s':>8}{'deliver_s median ms':>21}{'max ms':>8}")
        for label, binary in binaries:
            r = latency(s, binary, label, args.ticks)
            print(f"{label:<8}{r['median_s']:>10.3f}{r['p90_s']:>8.3f}"
                  f"{r['deliver_median_ms']:>21.1f}{r['deliver_max_ms']:>8.1f}", flush=True)
    finally:
        s.close()


if __name__ == "__main__":
    main()
