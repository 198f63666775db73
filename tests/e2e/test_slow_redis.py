"""End to end: a slow Redis holds nobody. Redis sits behind a proxy that
delays its replies (tests/bench/delay_proxy.py); with every reply 2 s late,
the loop of an idle `run` keeps turning: the heartbeat gauge, set by a
loop timer every second, stays fresh, and /healthz answers ok, while the
readiness PINGs, the member beats and the lease renewals (every lease
TTL / 3) wait for their replies. When those calls blocked the loop, each
one stalled it for its round trip (a beat, three of them).

The same with a bridge that loads a snapshot of 50k sessions and drains
an outbox: the load is an HSCAN page per round trip, the worker a claim
and a settle transaction per turn, none of them holding the loop. When
they blocked, the load alone stalled it for ~50 round trips (100 s, the
lease lost), and every settle for one more.

The same while a cycle with events commits: its fence, its transaction
and its EXEC wait on a connection of their own. When the commit blocked
the loop, it stalled it for three round trips and more (6 s: the lease
of TTL 4 s lost, the cycle never committed).

The same while the daemon repairs a Redis that lost its data (FLUSHALL):
the lease taken again, the snapshot put back from memory. When those
repairs blocked, the restore alone stalled the loop for its round trips."""

import collections
import json
import os
import socket
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import stack as st  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

REPLY_DELAY_S = 2.0
WINDOW_S = 8.0
# The gauge is set every ENGINE_GAUGES_S (1 s), in practice every other
# tick (a tick that fires a hair early skips: ages reach ~2.2 s on an idle,
# healthy bridge), and a scrape may reuse a render for
# ADMIN_METRICS_REUSE_MS (0.5 s): older than this, the loop stalled. A loop
# that blocks on these calls shows ~9 s.
MAX_HEARTBEAT_AGE_S = 3.0
# The loaded snapshot and the outbox drained meanwhile.
SNAPSHOT_SESSIONS = 50000
OUTBOX_EVENTS = 300
# /healthz must answer within this (a liveness probe's timeout).
HEALTHZ_TIMEOUT_S = 1.0
# The load takes ~7 round trips of REPLY_DELAY_S after the lease; the
# window waits for it at most this long.
LOAD_WINDOW_S = 60.0
# What the daemon logs once it put back a snapshot Redis lost.
RESTORED = "redis lost the snapshot of this source; restored it from memory"


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def heartbeat(text):
    for line in text.splitlines():
        if line.startswith("session_bridge_heartbeat_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no heartbeat gauge in /metrics")


def resp(*args):
    """One command in Redis's protocol."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def pipeline(port, commands):
    """Sends every command at once and reads as many replies (none may be an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(b"".join(commands))
        data, replies = b"", 0
        while replies < len(commands):
            chunk = c.recv(65536)
            if not chunk:
                raise AssertionError("redis closed the connection")
            data += chunk
            # the replies here are simple lines (+OK, :n) only
            lines = data.split(b"\r\n")
            data = lines.pop()
            for line in lines:
                if line.startswith(b"-"):
                    raise AssertionError(line.decode())
                replies += 1


def sample(url):
    """(heartbeat age s, /healthz answered 200 within HEALTHZ_TIMEOUT_S)."""
    status, text = get(url + "/metrics")
    age = time.time() - heartbeat(text) if status == 200 else float("inf")
    try:
        status, _ = get(url + "/healthz", timeout=HEALTHZ_TIMEOUT_S)
    except OSError:  # timed out
        status = None
    return age, status == 200


def sample_until(url, done, timeout_s):
    """Samples every 0.2 s until done() or timeout_s: (heartbeat ages, unhealthy answers)."""
    ages, unhealthy, t_end = [], 0, time.monotonic() + timeout_s
    while time.monotonic() < t_end and not done():
        age, healthy = sample(url)
        ages.append(round(age, 2))
        unhealthy += not healthy
        time.sleep(0.2)
    return ages, unhealthy


class SlowRedisTest(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack("slow-redis")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=3, completed=1, seed=5)
        self.proxy = DelayProxy(self.s.redis_port)
        self.addCleanup(self.proxy.close)

    def start_behind_proxy(self, **source_keys):
        """A bridge whose Redis is the proxy's; returns its admin URL."""
        path = self.s.config(initial_snapshot="emit", **source_keys)
        with open(path) as f:
            conf = json.load(f)
        conf["redis"]["url"] = f"redis://127.0.0.1:{self.proxy.port}/0"
        with open(path, "w") as f:
            json.dump(conf, f)
        self.s.start_bridge(path)
        return self.s.admin_url()

    def test_loop_keeps_turning_while_redis_is_slow(self):
        url = self.start_behind_proxy(interval_s=60)
        st.wait_for(lambda: "cycle committed" in self.s.log_of("bridge-run"), timeout=30,
                    what="the first cycle")
        self.assertEqual(len(self.s.events()), 5)

        mark = len(self.s.log_of("bridge-run"))
        self.proxy.delay_s = REPLY_DELAY_S
        time.sleep(1.0)
        worst, unhealthy, ages, t_end = 0.0, [], [], time.monotonic() + WINDOW_S
        while time.monotonic() < t_end:
            status, text = get(url + "/metrics")
            self.assertEqual(status, 200)
            age = time.time() - heartbeat(text)
            ages.append(round(age, 2))
            worst = max(worst, age)
            status, text = get(url + "/healthz")
            if status != 200:
                unhealthy.append(text)
            time.sleep(0.2)
        self.assertLess(worst, MAX_HEARTBEAT_AGE_S,
                        f"the loop stalled: its heartbeat was {worst:.1f} s old with every "
                        f"Redis reply {REPLY_DELAY_S} s late; ages {ages}")
        self.assertEqual(unhealthy, [])
        # the calls made meanwhile were answered, late: the leases held
        log = self.s.log_of("bridge-run")[mark:]
        self.assertNotIn("lease lost", log)
        self.assertNotIn("redis unreachable", log)

        self.proxy.delay_s = 0.0
        time.sleep(REPLY_DELAY_S + 0.5)
        self.assertEqual(self.s.stop_bridge(), 0)

    def committed_cycles(self):
        lines = []
        for line in self.s.log_of("bridge-run").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "cycle committed":
                lines.append(rec)
        return lines

    def test_a_commit_holds_nobody_while_redis_is_slow(self):
        url = self.start_behind_proxy(interval_s=4)
        st.wait_for(lambda: self.committed_cycles(), timeout=30, what="the first cycle")
        self.assertEqual(len(self.s.events()), 5)

        self.proxy.delay_s = REPLY_DELAY_S
        time.sleep(REPLY_DELAY_S + 0.5)  # what was in flight got its replies
        done = len(self.committed_cycles())
        self.s.tick(started=3)

        def with_events():
            return [c for c in self.committed_cycles()[done:] if c.get("events", 0) >= 3]

        ages, unhealthy = sample_until(url, with_events, 60)
        self.assertTrue(with_events(), "no cycle with the new events committed; log: "
                        f"{self.s.log_of('bridge-run')[-4000:]}")
        committed = with_events()[0]
        # the commit itself took its round trips: it ran while the loop turned
        self.assertGreaterEqual(st.duration_s(committed, "commit"), 2 * REPLY_DELAY_S, committed)
        self.assertLess(max(ages), MAX_HEARTBEAT_AGE_S,
                        f"the loop stalled during the commit ({committed}): ages {ages}")
        self.assertEqual(unhealthy, 0, f"/healthz failed or took over {HEALTHZ_TIMEOUT_S} s")
        self.assertEqual(len(self.s.events()), 8)

        self.proxy.delay_s = 0.0
        time.sleep(REPLY_DELAY_S + 0.5)
        self.assertEqual(self.s.stop_bridge(), 0)

    def test_repairs_after_redis_lost_its_data_hold_nobody_while_redis_is_slow(self):
        # Cycles far enough apart that a renewal finds the lease gone and
        # takes it again between two of them: the next cycle puts the
        # snapshot back before it polls (the commit's own repairs, when the
        # loss comes under a commit, are e2e.redis_loss's).
        url = self.start_behind_proxy(interval_s=10)
        st.wait_for(lambda: self.committed_cycles(), timeout=30, what="the first cycle")
        self.proxy.delay_s = REPLY_DELAY_S
        time.sleep(REPLY_DELAY_S + 0.5)  # what was in flight got its replies
        done = len(self.committed_cycles())
        self.s.tick(started=1)
        st.wait_for(lambda: len(self.committed_cycles()) > done, timeout=60,
                    what="a cycle committed with Redis slow")
        before = collections.Counter(m["event"]["id"] for _, m in self.s.events())
        self.assertEqual(sum(before.values()), 6)
        mark = len(self.s.log_of("bridge-run"))
        tick0 = max(t["tick"] for t in self.s.truth())
        self.assertEqual(self.s.redis("FLUSHALL"), "OK")  # behind the proxy's back
        self.s.tick(started=3)
        new = [t["session_id"] for t in self.s.truth()
               if t["tick"] > tick0 and t["to"] == "active"]
        self.assertEqual(len(new), 3)

        def repaired():
            log = self.s.log_of("bridge-run")[mark:]
            return RESTORED in log and '"msg":"cycle committed"' in log.split(RESTORED, 1)[1]

        ages, unhealthy = sample_until(url, repaired, 90)
        log = self.s.log_of("bridge-run")[mark:]
        self.assertTrue(repaired(), f"no restore and commit after the loss; log: {log[-4000:]}")
        self.assertLess(max(ages), MAX_HEARTBEAT_AGE_S,
                        f"the loop stalled during the repairs: ages {ages}")
        self.assertEqual(unhealthy, 0, f"/healthz failed or took over {HEALTHZ_TIMEOUT_S} s")
        self.assertEqual(log.count(RESTORED), 1, "the restore is not logged once")
        self.assertNotIn("baseline recorded", log)
        self.assertNotIn("lease lost", log)

        # Redis fast again: the new sessions' starts, each once, nothing older again.
        self.proxy.delay_s = 0.0
        want = before + collections.Counter(
            st.event_id("century", sid, "session.started") for sid in new)
        st.wait_for(lambda: len(self.s.events()) >= sum(want.values()), timeout=30,
                    what="the 3 started events")
        time.sleep(2)
        self.assertEqual(collections.Counter(m["event"]["id"] for _, m in self.s.events()), want)
        self.assertEqual(self.s.stop_bridge(), 0)

    def test_load_and_outbox_drain_hold_nobody_while_redis_is_slow(self):
        # Real events of ours for the outbox: a first emit cycle printed by a stdout sink.
        gen = self.s.config(name="gen", sinks=[{"name": "out", "type": "stdout"}],
                            initial_snapshot="emit")
        _, out, _ = self.s.once(gen)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        self.assertGreater(len(events), 0)
        # too few to drain for a while: the same shapes, OUTBOX_EVENTS ids
        bodies = {}
        for i in range(OUTBOX_EVENTS):
            ev = json.loads(json.dumps(events[i % len(events)]))
            sid = f"{ev['subject']}-{i}"
            ev["subject"] = ev["data"]["session_id"] = sid
            ev["id"] = st.event_id(ev["data"]["source"], sid, ev["type"])
            bodies[ev["id"]] = json.dumps(ev)
        cmds = [resp("HSET", "sb:ob:hook", *[x for kv in bodies.items() for x in kv]),
                resp("ZADD", "sb:ob:hook:due", *[x for k in bodies for x in (0, k)])]
        # The snapshot of the source the run loads: written as the bridge writes it.
        fields = []
        for i in range(SNAPSHOT_SESSIONS):
            fields += [f"s{i}", f"2:0:{i:016x}:IN_PROGRESS"]
        for k in range(0, len(fields), 2000):
            cmds.append(resp("HSET", "sb:snap:century", *fields[k:k + 2000]))
        cmds.append(resp("HSET", "sb:meta:century", "cycle", 1, "committed_at", 1,
                         "sessions", SNAPSHOT_SESSIONS))
        pipeline(self.s.redis_port, cmds)

        receiver = Receiver(st.free_port(), ["whsec_" + "A" * 43 + "="]).start()
        self.addCleanup(receiver.stop)
        path = self.s.config(interval_s=30, sinks=[
            {"name": "hook", "type": "webhook", "url": receiver.url,
             "secrets": receiver.secrets, "retry_schedule_s": [0, 1, 1],
             "timeout_s": 2, "max_in_flight": 16}])
        with open(path) as f:
            conf = json.load(f)
        conf["redis"]["url"] = f"redis://127.0.0.1:{self.proxy.port}/0"
        # Refused by the provider (401): the cycle ends after the load and
        # commits nothing, so that the window measures the load and the drain.
        conf["sources"][0]["auth"]["api_key"] = "not-the-key"
        with open(path, "w") as f:
            json.dump(conf, f)
        self.proxy.delay_s = REPLY_DELAY_S
        self.s.start_bridge(path)
        url = self.s.admin_url()

        worst, unhealthy, ages, loaded_at = 0.0, 0, [], None
        t_end = time.monotonic() + LOAD_WINDOW_S
        while time.monotonic() < t_end and (loaded_at is None or time.monotonic() < loaded_at + 4):
            age, healthy = sample(url)
            ages.append(round(age, 1))
            worst = max(worst, age)
            unhealthy += not healthy
            if loaded_at is None and '"msg":"snapshot loaded"' in self.s.log_of("bridge-run"):
                loaded_at = time.monotonic()
            time.sleep(0.2)
        log = self.s.log_of("bridge-run")
        self.assertLess(worst, MAX_HEARTBEAT_AGE_S,
                        f"the loop stalled: its heartbeat was {worst:.1f} s old with every "
                        f"Redis reply {REPLY_DELAY_S} s late; ages {ages}")
        self.assertEqual(unhealthy, 0, f"/healthz failed or took over {HEALTHZ_TIMEOUT_S} s")
        self.assertIsNotNone(loaded_at, "the snapshot was not loaded within the window")
        self.assertIn(f'"sessions":{SNAPSHOT_SESSIONS}', log)
        self.assertNotIn("lease lost", log)
        drained_meanwhile = len(receiver.received())
        self.assertGreater(drained_meanwhile, 0, "the outbox did not drain meanwhile")

        # Redis fast again: the rest drains, each event once.
        self.proxy.delay_s = 0.0
        st.wait_for(lambda: self.s.redis("HLEN", "sb:ob:hook") == "0", timeout=60,
                    what="the outbox to drain")
        got = collections.Counter(d["id"] for d in receiver.received())
        self.assertEqual(set(got), set(bodies))
        self.assertEqual([i for i, n in got.items() if n > 1], [], "an event came twice")
        # Slow again for the exit: the loop serves the lease's release until it is answered.
        self.assertEqual(self.s.redis("EXISTS", "sb:lease:century"), "1")
        self.proxy.delay_s = REPLY_DELAY_S
        time.sleep(0.5)
        t0 = time.monotonic()
        self.assertEqual(self.s.stop_bridge(), 0)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(self.s.redis("EXISTS", "sb:lease:century"), "0")
        self.assertNotIn("cannot release the lease", self.s.log_of("bridge-run"))


if __name__ == "__main__":
    unittest.main()
