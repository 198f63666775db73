"""End to end: simulated JSON:API quiz provider (seed 002) -> session-bridge
once -> real Redis -> Kafka (mock cluster in its own process) -> read back by
kcat, compared with the simulator's ground truth.

The simulator's quiz_jsonapi dialect lists every state in one page[number]
paged list and wants "Authorization: Bearer <api key>"; the bridge is
configured with auth.header "Authorization" and auth.value
"Bearer ${TEST_QUIZ_KEY}". Dialects cannot change the population, so the
seed's PATCH .../cancel and DELETE are played by the control API's ticks:
cancelled=N (the session then shows a cancelled raw status) and vanished=N /
purged=N (the session disappears from the list)."""

import collections
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "quiz"
PATH = "/api/v3/quiz/sessions"
# CONTRACT §5, the quiz_jsonapi row.
RAW = {"pending": {"pending", "created"},
       "active": {"started", "in_progress", "active"},
       "completed": {"completed", "finished", "submitted"},
       "cancelled": {"cancelled", "canceled", "expired"}}


class QuizJsonApiEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()

    # ---- helpers ----

    def start_sim(self, pending=10, active=15, completed=12, seed=11, extra=()):
        self.s.start_sim(dialect="quiz_jsonapi", active=active, completed=completed, seed=seed,
                         extra=("--pending", str(pending), *extra))

    def source(self, **keys):
        src = {"name": SOURCE, "provider": "quiz_jsonapi", "base_url": self.s.sim_url,
               "auth": {"header": "Authorization", "value": "Bearer ${TEST_QUIZ_KEY}"},
               "interval_s": 1, "vanish_grace": 1, "page_size": 7}
        src.update(keys)
        return self.s.config(source=src)

    def env(self, key=None):
        return self.s.env(TEST_QUIZ_KEY=key if key is not None else self.s.api_key)

    def once(self, conf, expect=0, key=None):
        rc, out, err = self.s.bridge("once", "-c", conf, env=self.env(key))
        if expect is not None and rc != expect:
            raise AssertionError(f"once exited {rc}, expected {expect}:\n{err[-3000:]}")
        self.assertNotIn(self.s.api_key, err, "the credential leaked into the log")
        return rc, out, err

    def tick(self, **counts):
        q = "&".join(f"{k}={v}" for k, v in counts.items())
        return self.s.sim("POST", f"/_sim/tick?{q}")

    def baseline(self, conf):
        _, _, err = self.once(conf)
        self.assertIn("baseline recorded", err)
        self.assertEqual(self.s.events(), [], "a baseline must not emit events")
        return int(self.s.snapshot_meta(SOURCE)["cycle"])

    def assert_events_match_truth(self, after_tick=0):
        events = self.s.events()
        want = st.expected_from_truth(self.s.truth(), SOURCE, after_tick)
        got = collections.Counter()
        for kind, m in events:
            ev = m["event"]
            sid = ev["subject"]
            data = ev["data"]
            got[(sid, ev["type"])] += 1
            self.assertEqual(ev["type"], "session." + kind)
            self.assertEqual(m["key"], f"{SOURCE}/{sid}")
            self.assertEqual(ev["id"], st.event_id(SOURCE, sid, ev["type"]))
            self.assertEqual(m["headers"].get("ce_id"), ev["id"])
            self.assertEqual(m["headers"].get("ce_type"), ev["type"])
            self.assertEqual(m["headers"].get("ce_source"), f"session-bridge/{SOURCE}")
            self.assertEqual(ev["source"], f"session-bridge/{SOURCE}")
            self.assertEqual(data["session_id"], sid)
            self.assertEqual(data["provider"], "quiz_jsonapi")
            if data["reason"] == "vanished":
                self.assertIsNone(data["status"])
                self.assertIn(data["previous_state"], ("pending", "active"))
            else:
                # The record is the JSON:API resource object as received.
                self.assertEqual(data["session"]["type"], "quiz/sessions")
                self.assertEqual(data["session"]["id"], sid)
                self.assertEqual(data["session"]["attributes"]["status"], data["status"])
                self.assertIn(data["status"], RAW[data["state"]])
        self.assertEqual(set(got), want, "events differ from the ground truth")
        dups = {k: n for k, n in got.items() if n > 1}
        self.assertEqual(dups, {}, "an event was published twice")
        return events

    def served(self, path=PATH):
        return self.s.sim("GET", "/_sim/state")["requests"]["paths"].get(path, {}).get("served", 0)

    # ---- tests ----

    def test_lifecycle_matches_ground_truth(self):
        self.start_sim()
        conf = self.source()
        self.baseline(conf)
        for _ in range(4):
            self.tick(pending=3, started=2, activated=3, completed=3, cancelled=2, vanished=1,
                      purged=1)
            _, _, err = self.once(conf)
            self.assertIn("cycle committed", err)
        events = self.assert_events_match_truth()
        self.assertGreater(len(events), 40)
        # 37 sessions at first, pages of 7: every poll spans several pages.
        self.assertGreaterEqual(self.served(), 5 * 6)
        # Every kind of transition happened, under several raw statuses.
        reasons = collections.Counter((k, m["event"]["data"]["reason"]) for k, m in events)
        for k in (("started", "status_change"), ("completed", "status_change"),
                  ("cancelled", "status_change"), ("cancelled", "vanished")):
            self.assertGreater(reasons[k], 0, f"no {k} event: {reasons}")
        statuses = {m["event"]["data"]["status"] for _, m in events} - {None}
        self.assertGreaterEqual(len(statuses & RAW["active"]), 2, statuses)
        self.assertGreaterEqual(len(statuses & RAW["completed"]), 2, statuses)
        self.assertGreaterEqual(len(statuses & RAW["cancelled"]), 2, statuses)
        # Nothing changed upstream: nothing published, an empty delta.
        before = len(events)
        _, _, err = self.once(conf)
        self.assertIn('"changes":0', err)
        self.assertEqual(len(self.s.events()), before)

    def test_cancel_and_delete(self):
        """The seed's PATCH .../cancel (a cancelled raw status) and DELETE (the
        session disappears), played by ticks, with vanish_grace 2."""
        self.start_sim(pending=6, active=10, completed=4, seed=3)
        conf = self.source(vanish_grace=2)
        self.baseline(conf)
        tr = self.tick(cancelled=4)["transitions"]
        self.assertEqual(len(tr), 4)
        self.once(conf)
        cancelled = self.s.consume(st.TOPICS["cancelled"])
        self.assertEqual({m["event"]["subject"] for m in cancelled},
                         {t["session_id"] for t in tr})
        for m in cancelled:
            data = m["event"]["data"]
            self.assertEqual(data["reason"], "status_change")
            self.assertIn(data["status"], RAW["cancelled"])
            self.assertIn(data["previous_state"], ("pending", "active"))
        # A session cancelled before it was ever active gets only cancelled.
        self.assertEqual(self.s.consume(st.TOPICS["started"]), [])

        gone = {t["session_id"] for t in self.tick(vanished=2)["transitions"]}
        self.once(conf)
        self.assertEqual(len(self.s.consume(st.TOPICS["cancelled"])), 4,
                         "cancelled before vanish_grace complete polls")
        self.once(conf)
        vanished = [m for m in self.s.consume(st.TOPICS["cancelled"])
                    if m["event"]["data"]["reason"] == "vanished"]
        self.assertEqual({m["event"]["subject"] for m in vanished}, gone)
        for m in vanished:
            self.assertEqual(m["event"]["data"]["previous_state"], "active")
            self.assertIn(m["event"]["data"]["previous_status"], RAW["active"])

        # Deleting terminal sessions publishes nothing.
        self.tick(purged=3)
        self.once(conf)
        self.once(conf)
        self.assert_events_match_truth()

    def test_deletion_between_two_pages_is_absorbed_by_vanish_grace(self):
        """page[number] paging is by offset: a session deleted after page 1
        was read shifts page 2 by one, and the session that slid onto page 1
        is missed by that poll. With vanish_grace 2 (the default) a single
        miss publishes nothing; the next polls see it again."""
        # Newest first: the 7 active sessions are exactly page 1.
        self.start_sim(pending=0, active=7, completed=10, seed=5, extra=("--verbose",))
        conf = self.source(vanish_grace=2, sort="-created_at")
        self.baseline(conf)
        # Page 2 answers 503, Retry-After 3: the bridge waits, we delete.
        self.s.sim("POST", "/_sim/fail?status=503&retry_after=3&after=1&count=1&path=" + PATH)
        marks = self.s.log_of("sim").count("-> 503")
        p = subprocess.Popen([st.BRIDGE, "once", "-c", conf], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=self.env())
        try:
            st.wait_for(lambda: self.s.log_of("sim").count("-> 503") > marks, 20,
                        "the 503 on page 2")
            gone = self.tick(vanished=1)["transitions"]
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        err = err.decode(errors="replace")
        st.check_sanitizers(err, "session-bridge once")
        self.assertEqual(p.returncode, 0, err[-3000:])
        # 17 listed when page 1 was read, the deleted one among them; 16
        # after. Page 2 then started one further: one completed session
        # was in no page of this poll.
        self.assertIn('"observed":16', err)
        self.assertEqual(self.s.events(), [], "a single miss must publish nothing")
        _, _, err = self.once(conf)
        self.assertIn('"observed":16', err)
        self.assertEqual(self.s.events(), [])
        self.once(conf)
        cancelled = self.s.consume(st.TOPICS["cancelled"])
        self.assertEqual([m["event"]["subject"] for m in cancelled],
                         [gone[0]["session_id"]])
        self.assertEqual(cancelled[0]["event"]["data"]["reason"], "vanished")
        self.assert_events_match_truth()

    def test_failing_page_commits_nothing(self):
        self.start_sim()
        conf = self.source()
        cycle = self.baseline(conf)
        self.tick(pending=2, started=3, activated=2, completed=3, cancelled=2, vanished=2)
        # Two pages succeed, then every attempt at the third fails.
        self.s.sim("POST", f"/_sim/fail?status=503&after=2&count=100&path={PATH}")
        _, _, err = self.once(conf, expect=1)
        self.assertIn("poll failed", err)
        self.assertIn(PATH, err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # A page cut in half is refused the same way.
        self.s.sim("DELETE", "/_sim/fail")
        self.s.sim("POST", "/_sim/fail?status=200&body=malformed&after=1&count=1")
        _, _, err = self.once(conf, expect=1)
        self.assertIn("malformed JSON", err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # A wrong credential: 401, and the value is in no log line.
        self.s.sim("DELETE", "/_sim/fail")
        wrong = "wrong-" + os.urandom(6).hex()
        _, _, err = self.once(conf, expect=1, key=wrong)
        self.assertIn("401", err)
        self.assertNotIn(wrong, err)
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # Healthy again: everything arrives, no false cancellation.
        self.once(conf)
        self.assert_events_match_truth()

    def test_filters_and_config_errors(self):
        self.start_sim(pending=5, active=8, completed=6, seed=9)
        # Only active sessions listed with the seed's status filter.
        conf = self.source(filters={"status": "in_progress"}, initial_snapshot="emit",
                           page_size=3)
        self.once(conf)
        started = self.s.consume(st.TOPICS["started"])
        self.assertTrue(started)
        for m in started:
            self.assertEqual(m["event"]["data"]["status"], "in_progress")
        self.assertEqual(self.s.consume(st.TOPICS["completed"]), [])
        # check: path, expectation, exit 78, no secret.
        bad = self.source(auth={"header": "Bad Header", "value": "Bearer ${TEST_QUIZ_KEY}"},
                          filters={"state": "x"}, page_size=1001)
        rc, _, err = self.s.bridge("check", "-c", bad, env=self.env())
        self.assertEqual(rc, 78, err)
        for want in ("sources[0].auth.header", "sources[0].filters.state",
                     "sources[0].page_size"):
            self.assertIn(want, err)
        self.assertNotIn(self.s.api_key, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
