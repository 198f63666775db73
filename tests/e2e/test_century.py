"""End to end: simulated Century Smart IA -> session-bridge once -> real Redis
-> Kafka (mock cluster in its own process) -> read back by kcat, compared
with the simulator's ground truth."""

import collections
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "century"


class CenturyEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=40, completed=15, seed=7)
        # Pages of 7 so that every list spans several pages.
        self.conf = self.s.config(SOURCE, page_size=7, vanish_grace=1)

    def baseline(self):
        _, _, err = self.s.once(self.conf)
        self.assertIn("baseline recorded", err)
        self.assertEqual(self.s.events(), [], "a baseline must not emit events")
        return int(self.s.snapshot_meta(SOURCE)["cycle"])

    def assert_events_match_truth(self, after_tick=0, allow_duplicates=False):
        events = self.s.events()
        want = st.expected_from_truth(self.s.truth(), SOURCE, after_tick)
        got = collections.Counter()
        for kind, m in events:
            ev = m["event"]
            sid = ev["subject"]
            got[(sid, ev["type"])] += 1
            # The topic, key, headers and id are what CONTRACT §6 says.
            self.assertEqual(ev["type"], "session." + kind)
            self.assertEqual(m["key"], f"{SOURCE}/{sid}")
            self.assertEqual(ev["id"], st.event_id(SOURCE, sid, ev["type"]))
            self.assertEqual(m["headers"].get("ce_id"), ev["id"])
            self.assertEqual(m["headers"].get("ce_type"), ev["type"])
            self.assertEqual(m["headers"].get("ce_source"), f"session-bridge/{SOURCE}")
            self.assertEqual(m["headers"].get("content-type"), "application/cloudevents+json")
            self.assertEqual(ev["specversion"], "1.0")
            self.assertEqual(ev["source"], f"session-bridge/{SOURCE}")
            self.assertEqual(ev["data"]["session_id"], sid)
            self.assertEqual(ev["data"]["provider"], "century_smart_ia")
            if ev["data"]["reason"] != "vanished":
                self.assertEqual(ev["data"]["session"]["sessionId"], sid)
        self.assertEqual(set(got), want, "events differ from the ground truth")
        if not allow_duplicates:
            dups = {k: n for k, n in got.items() if n > 1}
            self.assertEqual(dups, {}, "an event was published twice")
        # Per session: started is never after completed or cancelled, and a
        # session born after the baseline never completes without started.
        born_after = {t["session_id"] for t in self.s.truth()
                      if t["tick"] > after_tick and t["from"] == "none"}
        by_session = collections.defaultdict(dict)
        for kind, m in events:
            by_session[m["event"]["subject"]].setdefault(kind, m["event"]["time"])
        for sid, kinds in by_session.items():
            if "started" in kinds:
                for later in ("completed", "cancelled"):
                    if later in kinds:
                        self.assertLessEqual(kinds["started"], kinds[later], sid)
            elif "completed" in kinds and sid in born_after:
                self.fail(f"{sid}: completed without started")
        return events

    def test_ticks_match_ground_truth(self):
        self.baseline()
        for i in range(4):
            self.s.tick(started=6, completed=4, vanished=2)
            self.s.once(self.conf)
        events = self.assert_events_match_truth()
        self.assertGreater(len(events), 40)
        # A cycle with no upstream change publishes nothing and commits an
        # empty delta.
        before = len(events)
        _, _, err = self.s.once(self.conf)
        self.assertIn('"changes":0', err)
        self.assertEqual(len(self.s.events()), before)

    def test_vanish_grace_counts_complete_polls(self):
        conf = self.s.config(SOURCE, page_size=7, vanish_grace=2)
        self.s.once(conf)
        gone = self.s.tick(vanished=3)
        self.s.once(conf)
        self.assertEqual(self.s.consume(st.TOPICS["cancelled"]), [],
                         "cancelled before vanish_grace complete polls")
        # A failed poll does not count towards the grace.
        self.s.sim("POST", "/_sim/fail?status=500&count=100")
        self.s.once(conf, expect=1)
        self.s.sim("POST", "/_sim/fail?status=500&count=0")
        self.assertEqual(self.s.consume(st.TOPICS["cancelled"]), [])
        self.s.once(conf)
        cancelled = self.s.consume(st.TOPICS["cancelled"])
        self.assertEqual(len(cancelled), 3, gone)
        for m in cancelled:
            self.assertEqual(m["event"]["data"]["reason"], "vanished")
            self.assertEqual(m["event"]["data"]["previous_state"], "active")

    def test_initial_snapshot_emit(self):
        conf = self.s.config(SOURCE, page_size=50, initial_snapshot="emit")
        self.s.once(conf)
        events = self.s.events()
        started = [m for k, m in events if k == "started"]
        completed = [m for k, m in events if k == "completed"]
        self.assertEqual(len(started), 55)
        self.assertEqual(len(completed), 15)
        synth = [m for m in started if m["event"]["data"]["synthesized"]]
        self.assertEqual(len(synth), 15, "completed sessions first seen get a synthesized started")
        for m in completed:
            self.assertFalse(m["event"]["data"]["synthesized"])
            self.assertEqual(m["event"]["data"]["reason"], "first_seen")

    def test_failed_page_mid_poll_emits_and_commits_nothing(self):
        cycle = self.baseline()
        self.s.tick(started=5, completed=5, vanished=3)
        # Two pages succeed, then every attempt at the third fails.
        self.s.sim("POST", "/_sim/fail?status=503&after=2&count=100")
        rc, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("poll failed", err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # A malformed page is refused the same way.
        self.s.sim("POST", "/_sim/fail?status=0&count=0")
        self.s.sim("POST", "/_sim/fail?status=200&body=malformed&after=1&count=1")
        rc, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("malformed JSON", err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # Once the provider is healthy, everything arrives, no false cancel.
        self.s.sim("POST", "/_sim/fail?status=0&count=0")
        self.s.once(self.conf)
        self.assert_events_match_truth()

    def test_transient_errors_are_retried(self):
        self.baseline()
        self.s.tick(started=3)
        # One 429 with Retry-After and one 500: both retried inside the poll.
        self.s.sim("POST", "/_sim/fail?status=429&retry_after=1&after=1&count=1")
        self.s.once(self.conf)
        self.s.sim("POST", "/_sim/fail?status=500&after=0&count=1")
        self.s.tick(started=2)
        self.s.once(self.conf)
        self.assert_events_match_truth()

    def test_broker_outage_commits_nothing_then_delivers_same_ids(self):
        cycle = self.baseline()
        self.s.tick(started=5, completed=3, vanished=2)
        self.s.kafka_down()
        rc, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("nothing committed", err)
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        self.s.kafka_up()
        self.s.once(self.conf)
        self.assert_events_match_truth()

    def test_rerun_of_a_cycle_gives_the_same_ids(self):
        self.baseline()
        self.s.tick(started=4, completed=3, vanished=2)
        keys = [f"sb:snap:{SOURCE}", f"sb:meta:{SOURCE}"]
        for k in keys:
            self.assertEqual(self.s.redis("COPY", k, "backup:" + k), "1")
        self.s.once(self.conf)
        first = sorted(m["event"]["id"] for _, m in self.s.events())
        self.assertTrue(first)
        # Put the snapshot back as it was before that cycle, as if the
        # process had died after delivering and before committing.
        for k in keys:
            self.assertEqual(self.s.redis("COPY", "backup:" + k, k, "REPLACE"), "1")
        self.s.once(self.conf)
        again = sorted(m["event"]["id"] for _, m in self.s.events())
        self.assertEqual(again, sorted(first + first), "a re-run must repeat the same ids")

    def test_redis_restart_between_cycles_loses_nothing(self):
        self.baseline()
        self.s.tick(started=4, completed=2, vanished=1)
        self.s.once(self.conf)
        self.s.stop_redis()
        self.s.tick(started=3, completed=3, vanished=2)
        rc, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("cannot take the lease", err)
        self.s.start_redis()
        self.s.once(self.conf)
        self.assert_events_match_truth()

    def test_daemon_survives_redis_restart(self):
        self.baseline()
        # committed() counts every cycle: quiet ones log at debug.
        env = self.s.env(SB_LOG_LEVEL="debug")
        log = open(os.path.join(self.s.dir, "daemon.log"), "wb")
        p = subprocess.Popen([st.BRIDGE, "run", "-c", self.conf], stderr=log,
                             stdout=subprocess.DEVNULL, env=env)
        try:
            def committed():
                return st.read_text(log.name).count("cycle committed")
            st.wait_for(lambda: committed() >= 1, 30, "first daemon cycle")
            self.s.tick(started=3, completed=2, vanished=1)
            n = committed()
            st.wait_for(lambda: committed() > n + 1, 30, "daemon cycles")
            self.s.stop_redis()
            self.s.tick(started=3, completed=2, vanished=2)
            time.sleep(2.5)
            self.s.start_redis()
            n = committed()
            st.wait_for(lambda: committed() > n + 1, 30, "cycles after the restart")
        finally:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=30)
            log.close()
        text = st.read_text(log.name)
        st.check_sanitizers(text, "session-bridge run")
        self.assertEqual(rc, 0, text[-3000:])
        # A commit that fails after delivery (Redis gone between the PING
        # and the EXEC) redelivers: at least once, always with the same id.
        self.assert_events_match_truth(allow_duplicates=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
