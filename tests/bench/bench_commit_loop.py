#!/usr/bin/env python3
"""Benchmark: does the loop answer while a large first cycle commits?
Before and after, in one run (issue 12, points 1 and 5).

Each binary (--before, e.g. main's build; --after, this tree's) runs `run`
with one Century source of --sessions sessions (90% in progress: each has a
last record to store, ~1.3 KiB) and initial_snapshot emit, delivering to a
stdout sink (to /dev/null: the sink costs nothing, the commit is what is
measured), against the e2e stack's Redis (AOF, appendfsync always) flushed
before each run. While the first cycle runs, /healthz is asked every
--probe-ms with a 10 s timeout and each answer's latency kept. Reported:

  - the poll, deliver and commit durations of the "cycle committed" line;
  - the slowest /healthz answer during the commit (the probes whose
    request started within the commit, from the line's time and duration), and over
    the whole cycle (the admin endpoint answers from its own threads: it
    says 503 only once the loop's heartbeat is older than its bound);
  - the oldest the loop's heartbeat gauge was during the commit (set by a
    loop timer every second: its age is how long the loop stood still);
  - the bridge's peak RSS (VmHWM) once the cycle committed.

    tests/bench/bench_commit_loop.py --before /tmp/main-build/bridge/session-bridge \\
        [--after build/bridge/session-bridge] [--sessions 1000000]
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import stack as st  # noqa: E402

LINE = re.compile(r'^\{.*"msg":"cycle committed".*\}$', re.M)
PORT = re.compile(r'"msg":"admin endpoint listening".*?"port":(\d+)')


def heartbeat_age(url):
    """Seconds since the loop last set its heartbeat gauge (every second)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("session_bridge_heartbeat_timestamp_seconds "):
                return time.time() - float(line.split()[1])
    return float("nan")


def probe(url, stop, out, every_s):
    while not stop.is_set():
        t0 = time.time()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
                ok = r.status == 200
        except OSError:
            ok = False
        took = time.time() - t0
        try:
            age = heartbeat_age(url)
        except OSError:
            age = float("nan")
        out.append((t0, took, ok, age))
        time.sleep(every_s)


def run(s, binary, label, sessions, every_s):
    s.redis("FLUSHALL")
    # interval_s 30: the first cycle starts within its jitter (3 s); the
    # run ends once it committed, before a second one
    path = os.path.join(s.dir, f"commit-{label}.json")
    conf = {"redis": {"url": f"redis://127.0.0.1:{s.redis_port}/0", "prefix": "sb"},
            "admin": {"listen": "127.0.0.1:0"}, "lease_ttl_s": 15,
            "sources": [{"name": "big", "provider": "century_smart_ia",
                         "base_url": s.sim_url + "/api/v1",
                         "auth": {"api_key": "${TEST_CENTURY_KEY}"}, "interval_s": 30,
                         "page_size": 100, "initial_snapshot": "emit",
                         "max_sessions": sessions}],
            "sinks": [{"name": "out", "type": "stdout"}]}
    with open(path, "w") as f:
        json.dump(conf, f)
    log_path = os.path.join(s.dir, f"commit-{label}.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([binary, "run", "-c", path], env=s.env(), stderr=log,
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    stop, probes = threading.Event(), []
    try:
        port = st.wait_for(lambda: PORT.search(st.read_text(log_path)), timeout=20,
                           what="the admin endpoint").group(1)
        t = threading.Thread(target=probe, args=(f"http://127.0.0.1:{port}", stop,
                                                 probes, every_s), daemon=True)
        t.start()
        m = st.wait_for(lambda: LINE.search(st.read_text(log_path)), timeout=1800,
                        what=f"the first cycle ({label})")
        t_seen = time.time()
        peak = st.vm_hwm_kib(p.pid)
        stop.set()
        t.join()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    line = json.loads(m.group(0))
    end = datetime.datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
    commit_s = st.duration_s(line, "commit")
    start = end - commit_s
    during = [p for p in probes if start <= p[0] <= end] or [(0, 0.0, True, 0.0)]
    failed = sum(1 for p in probes if not p[2])
    return {"sessions": line["sessions"], "events": line["events"], "poll_s": st.duration_s(line, "poll"),
            "deliver_s": st.duration_s(line, "deliver"), "commit_s": commit_s,
            "probes_during_commit": len([1 for p in probes if start <= p[0] <= end]),
            "slowest_healthz_during_commit_s": max(p[1] for p in during),
            "oldest_heartbeat_during_commit_s": max(p[3] for p in during),
            "slowest_healthz_s": max(p[1] for p in probes), "failed_probes": failed,
            "peak_rss_mib": peak / 1024, "seen_after_s": t_seen - end}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=os.path.join(st.BUILD, "bridge", "session-bridge"))
    ap.add_argument("--sessions", type=int, default=1000000)
    ap.add_argument("--probe-ms", type=float, default=200)
    a = ap.parse_args()
    s = st.Stack("bench-commit-loop")
    try:
        s.start_redis()
        s.start_sim(active=a.sessions * 9 // 10, completed=a.sessions // 10, seed=7)
        res = {}
        for label, binary in (("before", a.before), ("after", a.after)):
            res[label] = run(s, binary, label, a.sessions, a.probe_ms / 1000.0)
            print(label, json.dumps(res[label]), flush=True)
        print(f"{'first emit cycle':32} {'before':>10} {'after':>10}")
        for k in res["before"]:
            print(f"{k:32} {res['before'][k]:10.3f} {res['after'][k]:10.3f}")
    finally:
        s.close()


if __name__ == "__main__":
    main()
