#!/usr/bin/env python3
"""Benchmark: a first `emit` cycle through the durable outbox (a webhook sink).

    tests/bench/bench_outbox.py [--sessions 1000000] [--max-in-flight 64] [--no-drain]

Starts the local stack's redis-server (AOF, appendfsync always) and the
Century simulator (90% of --sessions in progress, 10% completed), and a
trivial fast webhook receiver (asyncio, its own process: it answers 200 to
every POST and counts the webhook-id values it saw), then runs
`session-bridge run` with one source, `initial_snapshot: emit`, and one
webhook sink. Every session is an event, and every event goes into the
outbox in the snapshot's transaction (CONTRACT §7), then the delivery
worker drains the outbox.

Prints the first cycle's figures as the bridge logs them, the bridge's peak
RSS (VmHWM) right after the commit and after the outbox drained, the drain
rate, and what the receiver counted: every event delivered, and how many
more than once (none expected: nothing failed). --no-drain stops after the
commit.

Needs a build in ./build (or $SB_BUILD_DIR). The figures belong in
BENCHMARKS.md; this is not a test.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import stack as st  # noqa: E402
from bench_century import cycles_in  # noqa: E402

SINK = "hook"
SOURCE = "bench"
PREFIX = "sb"


# ---- the receiver (run as its own process: --receiver PORTFILE STATSFILE) ----

def receiver_main(portfile, statsfile):
    """Answers 200 to every POST on keep-alive connections; on SIGTERM writes
    {"requests", "unique"} to statsfile."""
    seen = set()
    counts = {"requests": 0}

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, msg_id = 0, b""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        msg_id = value.strip()
                if length:
                    await reader.readexactly(length)
                counts["requests"] += 1
                seen.add(msg_id)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        with open(portfile + ".tmp", "w") as f:
            f.write(str(server.sockets[0].getsockname()[1]))
        os.rename(portfile + ".tmp", portfile)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    with open(statsfile, "w") as f:
        json.dump({"requests": counts["requests"], "unique": len(seen)}, f)


# ---- the harness ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000000)
    ap.add_argument("--max-in-flight", type=int, default=64,
                    help="the webhook sink's max_in_flight")
    ap.add_argument("--no-drain", action="store_true",
                    help="stop after the first commit instead of waiting for the outbox to drain")
    ap.add_argument("--receiver", nargs=2, metavar=("PORTFILE", "STATSFILE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(*args.receiver)
        return

    s = st.Stack("bench-outbox")
    recv = None
    try:
        s.start_redis()
        active = int(args.sessions * 0.9)
        s.start_sim(active=active, completed=args.sessions - active, seed=42)
        portfile = os.path.join(s.dir, "receiver-port")
        statsfile = os.path.join(s.dir, "receiver-stats.json")
        recv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--receiver",
                                 portfile, statsfile], stdin=subprocess.DEVNULL)
        port = st.wait_for(lambda: st.read_text(portfile), what="the receiver")
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        sink = {"name": SINK, "type": "webhook", "url": f"http://127.0.0.1:{port}/hook",
                "secret": secret, "max_in_flight": args.max_in_flight}
        # The first cycle starts within a tenth of the interval; the later
        # ones (no changes upstream) are steady cycles during the drain.
        conf = s.config(SOURCE, sinks=[sink], page_size=100, interval_s=60,
                        initial_snapshot="emit", max_sessions=max(100000, args.sessions))
        # The default lease TTL, not the e2e stack's short one: the commit of a
        # million events blocks the loop (and its lease renewals) for seconds.
        with open(conf) as f:
            doc = json.load(f)
        doc.pop("lease_ttl_s")
        with open(conf, "w") as f:
            json.dump(doc, f)
        log_path = os.path.join(s.dir, "bridge-run.log")
        log = open(log_path, "wb")
        t0 = time.monotonic()
        p = subprocess.Popen([st.BRIDGE, "run", "-c", conf], stderr=log,
                             stdout=subprocess.DEVNULL, env=s.env(), stdin=subprocess.DEVNULL)
        try:
            def committed():
                if p.poll() is not None:
                    raise RuntimeError(f"the bridge exited {p.returncode}; see {log_path}")
                return cycles_in(log_path)
            first = st.wait_for(committed, 1800, "the first cycle")[0]
            if first["outbox"] == 0:
                raise RuntimeError(f"the first cycle's commit failed; see {log_path}")
            t_commit = time.monotonic()
            rss_commit = st.vm_hwm_kib(p.pid)
            print(f"committed: {json.dumps(first)}; peak RSS {rss_commit / 1024:.1f} MiB",
                  flush=True)
            drain_s = None
            if not args.no_drain:
                st.wait_for(lambda: s.redis("HLEN", f"{PREFIX}:ob:{SINK}") == "0", 7200,
                            "the outbox to drain")
                drain_s = time.monotonic() - t_commit
            rss_end = st.vm_hwm_kib(p.pid)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=120)
            log.close()
        wall = time.monotonic() - t0
        recv.send_signal(signal.SIGTERM)
        recv.wait(timeout=60)
        stats = json.load(open(statsfile))
        recv = None

        # No sink takes events during the cycle (the outbox gets them at the
        # commit): the cycle is its poll and its commit.
        cycle_s = st.duration_s(first, "poll") + st.duration_s(first, "commit")
        print(f"outbox benchmark: {args.sessions} sessions, first cycle initial_snapshot=emit, "
              f"one webhook sink (max_in_flight {args.max_in_flight}), {os.cpu_count()} cores")
        print(f"first cycle: {cycle_s:.2f} s (poll {st.duration_s(first, 'poll'):.2f} s, commit "
              f"{st.duration_s(first, 'commit'):.2f} s), {first['observed'] / cycle_s:.0f} sessions/s, "
              f"{first['events']} events, outbox {first['outbox']}, "
              f"redis commands {first['redis_commands']}")
        print(f"peak RSS of the bridge: {rss_commit / 1024:.1f} MiB at the commit, "
              f"{rss_end / 1024:.1f} MiB at the end")
        if drain_s is not None:
            print(f"outbox drained in {drain_s:.1f} s ({first['outbox'] / drain_s:.0f} events/s); "
                  f"receiver: {stats['requests']} requests, {stats['unique']} distinct ids, "
                  f"{stats['requests'] - stats['unique']} duplicates")
            if stats["unique"] != first["outbox"]:
                print(f"MISMATCH: {first['outbox']} events in the outbox, "
                      f"{stats['unique']} delivered", file=sys.stderr)
                sys.exit(1)
        print(f"wall time: {wall:.1f} s")
    finally:
        if recv is not None and recv.poll() is None:
            recv.kill()
            recv.wait()
        s.close()


if __name__ == "__main__":
    main()
