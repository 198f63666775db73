#!/usr/bin/env python3
"""Benchmark: the parse-only floors over the same Century pages, side by side.

    tests/bench/bench_floor.py [--sessions 100000] [--reps 5] [--perf]

Generates the pages of a population with the provider simulator exactly as
bench_side_by_side.py does (100 records a page, both lists, step 0), then
runs, alternating, each floor program over the same list of page files as
a whole process (read the files, parse, free) under rusage_run:

- cjson: floor_cjson.c, cJSON parse + free (what the bridge's adapters did);
- simdjson: floor_simdjson.cpp, On Demand, each record's raw span (when
  Debian's libsimdjson-dev is here);
- page_scan: floor_page_scan.c, the bridge's scanner, validating the page
  and reading each record's id, status and span, and the next cursor.

Prints, per floor, the median CPU (user + sys) per record and its ratio to
cjson. --perf adds `perf stat` and the top of a `perf record` of the
page_scan floor. Needs a build (cmake --build build) for the simulator and
floor_page_scan.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_side_by_side as side  # noqa: E402

st = side.st
FLOOR_PAGE_SCAN = os.path.join(st.BUILD, "tests", "bench", "floor_page_scan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--pages", help="keep the pages here (reused when already there)")
    args = ap.parse_args()
    for exe in (st.SIM, FLOOR_PAGE_SCAN):
        if not os.path.exists(exe):
            sys.exit(f"{exe} is missing: build first (cmake --build build)")
    s = st.Stack("floor")
    try:
        side.LAUNCHER, floors = side.build_tools(s.dir)
        floors["page_scan"] = FLOOR_PAGE_SCAN
        root = args.pages or os.path.join(s.dir, "pages")
        lst = os.path.join(root, f"{args.sessions}.list")
        if os.path.exists(lst):
            with open(lst) as f:
                files = f.read().split()
            records = int(os.path.basename(lst).split(".")[0])
        else:
            os.makedirs(root, exist_ok=True)
            step0, _ = side.generate(s, root, f"floor{args.sessions}", args.sessions, 0.01)
            files, records = step0.files, step0.records
            with open(lst, "w") as f:
                f.write("\n".join(files) + "\n")
        size = sum(os.path.getsize(p) for p in files)
        print(f"{records} records in {len(files)} pages, {size} bytes")
        cpu = {name: [] for name in floors}
        for _ in range(args.reps):
            for name, exe in floors.items():
                run = side.measure([exe, lst], None, os.path.join(s.dir, f"floor-{name}.log"))
                if run.rc != 0 or f"records {records}" not in run.log:
                    raise RuntimeError(f"floor {name}: {run.log}")
                cpu[name].append(run.cpu)
        base = statistics.median(cpu["cjson"])
        print(f"{'floor':<10} {'CPU/record':>11} {'vs cjson':>9}   runs (s)")
        for name, runs in cpu.items():
            med = statistics.median(runs)
            print(f"{name:<10} {med / records * 1e9:>8.0f} ns {med / base:>8.2f}x   "
                  + " ".join(f"{c:.3f}" for c in runs))
        if args.perf:
            subprocess.run(["perf", "stat", "-e", "task-clock,cycles,instructions,branch-misses",
                            FLOOR_PAGE_SCAN, lst])
            data = os.path.join(s.dir, "perf.data")
            subprocess.run(["perf", "record", "-q", "-o", data, FLOOR_PAGE_SCAN, lst],
                           stdout=subprocess.DEVNULL)
            rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                  "--percent-limit", "1"], capture_output=True, text=True)
            print("\n".join(ln for ln in rep.stdout.splitlines() if ln and ln[0] != "#"))
    finally:
        s.close()


if __name__ == "__main__":
    main()
