#!/usr/bin/env python3
"""Benchmark: the Redis memory the last records (P:rec:S) take per pending or active session.

    tests/bench/bench_last_records.py [--sessions 100000]

One `once` baseline of a Century source over the provider simulator
(tests/stack/sim_century.c: --sessions in progress, a tenth as many
completed), on the e2e stack's Redis (tests/e2e/stack.py). Prints Redis's
used_memory (INFO memory) before the cycle, after it, and after deleting
P:rec:S, MEMORY USAGE of P:rec:S and P:snap:S (SAMPLES 0: every field), the
records' own bytes, and the cost per record. The figures belong in
BENCHMARKS.md; this is not a test.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import stack as st  # noqa: E402

SOURCE = "century"
SUM_LENGTHS = "local t=0 for _,v in ipairs(redis.call('HVALS',KEYS[1])) do t=t+#v end return t"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100000, help="sessions in progress")
    args = ap.parse_args()
    n = args.sessions
    s = st.Stack("last-records")
    try:
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=n, completed=n // 10, seed=5)
        conf = s.config(SOURCE, page_size=100, max_sessions=2 * n, completed_lookback_s=0)

        def used():
            return int(re.search(r"used_memory:(\d+)", s.redis("INFO", "memory")).group(1))

        rec_key, snap_key = f"sb:rec:{SOURCE}", f"sb:snap:{SOURCE}"
        before = used()
        s.once(conf)
        after = used()
        nrec, nsnap = int(s.redis("HLEN", rec_key)), int(s.redis("HLEN", snap_key))
        rec_usage = int(s.redis("MEMORY", "USAGE", rec_key, "SAMPLES", "0"))
        snap_usage = int(s.redis("MEMORY", "USAGE", snap_key, "SAMPLES", "0"))
        text = int(s.redis("EVAL", SUM_LENGTHS, "1", rec_key))
        s.redis("DEL", rec_key)
        without = used()
        print(json.dumps({
            "sessions": nsnap, "records": nrec, "record_bytes_avg": round(text / nrec, 1),
            "used_memory": {"before": before, "after": after, "without_records": without},
            "per_record_used_memory": round((after - without) / nrec, 1),
            "per_record_memory_usage": round(rec_usage / nrec, 1),
            "per_session_snapshot": round(snap_usage / nsnap, 1)}, indent=1))
    finally:
        s.close()


if __name__ == "__main__":
    main()
