"""SIGHUP reloads the configuration (CONTRACT §2): sources and sinks added,
changed and removed take effect without a restart, without losing an event
or a lease that did not change; an invalid file is refused with its problems
logged and the running configuration stays. Under `once`, and before the
loop runs, a SIGHUP never ends the process."""

import collections
import json
import os
import re
import signal
import socket
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

WHSEC = "whsec_" + "A" * 43 + "="  # a test secret: 32 zero bytes


class Churn:
    """Upstream changes one tick at a time, each seen by every source: after
    a tick, step() waits until each source named in `sources` committed two
    cycles (the second one started after the tick), so that the ground
    truth's every transition is one the bridge could see. Counts commits in
    Redis (the snapshot's cycle), not in logs."""

    def __init__(self, stack):
        self.s = stack
        self.sources = set()
        self.last = 0

    def cycle(self, name):
        return int(self.s.snapshot_meta(name).get("cycle", 0))

    def tick(self):
        r = self.s.tick(started=2, completed=1, vanished=1)
        self.last = r["tick"]
        return self.last

    def settle(self, sources=None):
        names = set(sources if sources is not None else self.sources)
        start = {n: self.cycle(n) for n in names}
        st.wait_for(lambda: all(self.cycle(n) >= start[n] + 2 for n in names), timeout=30,
                    what=f"two cycles of {sorted(names)}")

    def step(self, n=1):
        for _ in range(n):
            self.tick()
            self.settle()


def kafka_events(stack):
    """Every event on Kafka as (source, session, type) -> Counter of ids."""
    out = collections.defaultdict(collections.Counter)
    for _, m in stack.events():
        ev = m["event"]
        out[(ev["data"]["source"], ev["subject"], ev["type"])][ev["id"]] += 1
    return out


class Reload(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=12, completed=4, seed=5)
        self.path = os.path.join(self.s.dir, "bridge.json")
        self.events_file = os.path.join(self.s.dir, "events.jsonl")

    def source(self, name, **extra):
        src = {"name": name, "provider": "century_smart_ia",
               "base_url": self.s.sim_url + "/api/v1",
               "auth": {"api_key": "${TEST_CENTURY_KEY}"}, "interval_s": 1, "vanish_grace": 1,
               "page_size": 5}
        src.update(extra)
        return src

    def bus(self):
        return {"name": "bus", "type": "kafka", "brokers": self.s.bootstrap, "topics": st.TOPICS,
                "properties": {"message.timeout.ms": "5000"}}

    def write(self, sources, sinks, **top):
        conf = {"redis": {"url": f"redis://127.0.0.1:{self.s.redis_port}/0", "prefix": "sb"},
                "admin": {"listen": "127.0.0.1:0"}, "lease_ttl_s": 4,
                "sources": sources, "sinks": sinks}
        conf.update(top)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(conf, f, indent=2)
        os.replace(tmp, self.path)

    def log(self):
        return self.s.log_of("bridge-run")

    def lines(self, msg):
        out = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"msg":"{msg}"' in line:
                out.append(json.loads(line))
        return out

    def hup_and_wait(self, msg):
        """SIGHUP, then the next log line msg (its fields)."""
        before = len(self.lines(msg))
        self.proc.send_signal(signal.SIGHUP)
        st.wait_for(lambda: len(self.lines(msg)) > before, timeout=30, what=msg)
        self.assertIsNone(self.proc.poll(), "the bridge ended on a SIGHUP")
        return self.lines(msg)[before]

    def metrics(self):
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as r:
            return r.read().decode()

    def test_add_change_remove_under_churn(self):
        sinks1 = [self.bus()]
        self.write([self.source("keep"), self.source("chg"), self.source("gone")], sinks1)
        self.proc = self.s.start_bridge(self.path)
        self.admin = self.s.admin_url()
        st.wait_for(lambda: len(self.lines("baseline recorded")) == 3, what="three baselines")
        token = self.s.redis("GET", "sb:lease:keep")
        self.assertTrue(token)
        churn = Churn(self.s)
        churn.sources = {"keep", "chg", "gone"}
        churn.step(2)

        # Reload 1, under churn: chg changes (interval and a status_map that
        # restates the default), gone goes, new and the file sink come.
        chg = self.source("chg", interval_s=2, status_map={"IN_PROGRESS": "active"})
        files = {"name": "files", "type": "file", "path": self.events_file, "fsync": "never"}
        self.write([self.source("keep"), chg, self.source("new")], [self.bus(), files])
        # the reload comes with changes upstream no source has seen yet
        tick_file_added = churn.tick()
        done = self.hup_and_wait("configuration reloaded")
        self.assertIn("sources_added=new", done["changes"])
        self.assertIn("sources_changed=chg", done["changes"])
        self.assertIn("sources_removed=gone", done["changes"])
        self.assertIn("sinks_added=files", done["changes"])
        self.assertNotIn("keep", done["changes"])
        st.wait_for(lambda: self.s.redis("GET", "sb:lease:gone") == "", timeout=10,
                    what="the removed source's lease released")
        self.assertEqual(self.s.redis("GET", "sb:lease:keep"), token, "keep's lease changed")

        # new starts as at boot, with a baseline; churn goes on meanwhile.
        st.wait_for(lambda: any(ln.get("source") == "new"
                                for ln in self.lines("baseline recorded")), what="new's baseline")
        churn.sources = {"keep", "chg", "new"}
        churn.settle()
        churn.step(2)

        # Reload 2, under churn: the file sink changes (the same file).
        files2 = dict(files, fsync="always")
        self.write([self.source("keep"), chg, self.source("new")], [self.bus(), files2])
        churn.tick()
        done = self.hup_and_wait("configuration reloaded")
        self.assertIn("sinks_changed=files", done["changes"])
        self.assertIn("sources_changed=-", done["changes"])
        self.assertEqual(self.s.redis("GET", "sb:lease:keep"), token, "keep's lease changed")
        churn.settle()
        churn.step(2)

        # Reload 3: an invalid file is refused, everything goes on.
        bad = self.source("keep", intervall_s=3)
        self.write([bad, chg, self.source("new")], [self.bus(), files2])
        churn.tick()
        refused = self.hup_and_wait("configuration reload refused: the file is invalid; the "
                                    "running configuration stays")
        self.assertGreaterEqual(refused["problems"], 1)
        problems = [ln["error"] for ln in self.lines("configuration error")]
        self.assertTrue(any(p.startswith("sources[0].intervall_s: unknown key") for p in problems),
                        problems)
        # Reload 4: a setting that cannot change while running.
        self.write([self.source("keep"), chg, self.source("new")], [self.bus(), files2],
                   redis={"url": f"redis://127.0.0.1:{self.s.redis_port}/0", "prefix": "other"})
        fixed = self.hup_and_wait("configuration reload refused: this setting cannot change "
                                  "while running; restart to change it. The running "
                                  "configuration stays")
        self.assertEqual(fixed["key"], "redis.prefix")
        self.assertNotIn(str(self.s.redis_port) + "/0", json.dumps(fixed))
        churn.settle()
        churn.step(2)
        self.assertIn('session_bridge_sink_ready{sink="files"} 1', self.metrics())

        # Reload 5: the file sink goes; every tick so far reached it.
        tick_file_removed = churn.last
        self.write([self.source("keep"), chg, self.source("new")], [self.bus()])
        done = self.hup_and_wait("configuration reloaded")
        self.assertIn("sinks_removed=files", done["changes"])
        self.assertIn("sources_added=- sources_changed=- sources_removed=-", done["changes"])
        churn.step(2)
        last_tick = churn.last
        self.assertEqual(self.s.redis("GET", "sb:lease:keep"), token, "keep's lease changed")
        text = self.metrics()
        self.assertIn('session_bridge_config_reloads_total{result="ok"} 3\n', text)
        self.assertIn('session_bridge_config_reloads_total{result="invalid"} 2\n', text)
        stamp = re.search(r"^session_bridge_config_last_reload_success_timestamp_seconds (\S+)$",
                          text, re.M)
        self.assertGreater(float(stamp.group(1)), time.time() - 120)
        self.assertNotIn('source="gone"', text, "the removed source kept its series")
        self.assertNotIn('sink="files"', text, "the removed sink kept its series")
        self.assertEqual(self.s.stop_bridge(), 0)

        # Counting: nothing lost, every duplicate with the same id.
        truth = self.s.truth()
        got = kafka_events(self.s)
        for key, ids in got.items():
            source, sid, type_name = key
            self.assertEqual(set(ids), {st.event_id(source, sid, type_name)},
                             f"an event of {key} with another id")
        for name in ("keep", "chg"):
            want = st.expected_from_truth(truth, name, after_tick=0)
            have = {(sid, t) for (src, sid, t) in got if src == name}
            self.assertEqual(have, want, f"events of {name} lost or invented")
        new_baseline = [ln for ln in self.lines("baseline recorded") if ln["source"] == "new"]
        self.assertEqual(len(new_baseline), 1)
        have_new = {(sid, t) for (src, sid, t) in got if src == "new"}
        self.assertLessEqual(have_new, st.expected_from_truth(truth, "new", after_tick=0))
        self.assertTrue(have_new, "the added source published nothing")
        gone = {(sid, t) for (src, sid, t) in got if src == "gone"}
        self.assertLessEqual(gone, st.expected_from_truth(truth, "gone", after_tick=0))
        self.assertTrue(gone, "the removed source published nothing before it went")
        # The file sink, added, changed, then removed, lost nothing while it
        # was there: every event of keep from the tick after it was added on,
        # up to the last tick every source saw before it went.
        with open(self.events_file) as f:
            in_file = {(e["data"]["source"], e["subject"], e["type"])
                       for e in st.event_lines(f.read(), "a file sink line")}
        until = [t for t in truth if t["tick"] <= tick_file_removed]
        want_file = {("keep", sid, t) for sid, t in
                     st.expected_from_truth(until, "keep", after_tick=tick_file_added)}
        self.assertLessEqual(want_file, in_file, "the file sink lost events across its change")
        self.assertLessEqual(in_file, set(got), "the file sink has events Kafka has not")
        self.assertGreater(last_tick, tick_file_removed)
        self.assertGreater(tick_file_removed, tick_file_added)

    def test_a_changed_outbox_sink_keeps_its_outbox(self):
        receiver = Receiver(st.free_port(), [WHSEC])
        self.addCleanup(receiver.stop)
        hook = {"name": "hook", "type": "webhook", "url": receiver.url, "secrets": [WHSEC],
                "retry_schedule_s": [0, 0.5, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3], "timeout_s": 2}
        self.write([self.source("keep")], [self.bus(), hook])
        self.proc = self.s.start_bridge(self.path)
        churn = Churn(self.s)
        churn.sources = {"keep"}
        churn.settle()
        # The receiver is down: the events wait in the outbox.
        churn.step(2)
        depth = int(self.s.redis("ZCARD", "sb:ob:hook:due"))
        self.assertGreater(depth, 0)
        # The sink changes while its outbox holds events, then the receiver comes back.
        self.write([self.source("keep")], [self.bus(), dict(hook, max_in_flight=2)])
        churn.tick()
        done = self.hup_and_wait("configuration reloaded")
        self.assertIn("sinks_changed=hook", done["changes"])
        churn.settle()
        churn.step(1)
        receiver.start()
        want = {st.event_id("keep", sid, t)
                for sid, t in st.expected_from_truth(self.s.truth(), "keep", after_tick=0)}
        try:
            st.wait_for(lambda: set(receiver.unique()) == want, timeout=60,
                        what="the webhook to get every event, those of the old instance included")
        except TimeoutError:
            self.assertEqual(set(receiver.unique()), want, "webhook deliveries")
        st.wait_for(lambda: self.s.redis("ZCARD", "sb:ob:hook:due") == "0", timeout=15,
                    what="the outbox to drain")
        self.assertEqual(self.s.stop_bridge(), 0)

    def test_sighup_never_ends_the_process(self):
        # A provider that never answers keeps `once` busy for seconds.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        self.addCleanup(hole.close)
        slow = self.source("slow", base_url=f"http://127.0.0.1:{hole.getsockname()[1]}/api/v1",
                           timeout_s=1)
        self.write([self.source("one"), slow], [self.bus()])
        # once: the reload is for run; a SIGHUP at any moment changes nothing.
        for i, delay in enumerate((0, 0.2, 1.5)):
            p = self.s._spawn("once", [st.BRIDGE, "once", "-c", self.path], env=self.s.env())
            # from its first line on: before main() runs, no process can catch a signal
            st.wait_for(lambda: self.s.log_of("once").count('"msg":"starting"') > i,
                        what="once starting")
            time.sleep(delay)
            self.assertIsNone(p.poll(), "once ended before the SIGHUP")
            p.send_signal(signal.SIGHUP)
            # 1: the slow source failed, as it would have without the signal
            self.assertEqual(p.wait(timeout=60), 1, self.s.log_of("once")[-2000:])
        self.assertGreaterEqual(self.s.log_of("once").count(
            '"msg":"SIGHUP ignored: once reads its configuration once"'), 2)
        st.check_sanitizers(self.s.log_of("once"), "once")
        # run: a SIGHUP right at the start, before the loop runs, is a reload.
        self.write([self.source("one"), self.source("two")], [self.bus()])
        self.proc = self.s.start_bridge(self.path)
        st.wait_for(lambda: '"msg":"starting"' in self.log(), what="run starting")
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIsNone(self.proc.poll(), "the bridge ended on an early SIGHUP")
        self.s.admin_url()
        churn = Churn(self.s)
        churn.settle({"one", "two"})
        self.assertEqual(len(self.lines("configuration reloaded")), 1, "the early SIGHUP was lost")
        self.assertEqual(self.s.stop_bridge(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
