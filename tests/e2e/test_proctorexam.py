"""End to end: simulated ProctorExam (signed queries, checked by the
simulator on every request: token, Accept, timestamp, nonce never reused,
HMAC) -> session-bridge once -> real Redis -> Kafka (mock cluster) -> read
back by kcat, compared with the simulator's ground truth."""

import collections
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "pe"
EXAM = 4711
SECRET = "pe-secret-" + os.urandom(6).hex()


def record_id(session_uuid):
    """The simulator's integer id of a session: the UUID's first 13 random
    hex digits (the version nibble skipped), see sim_proctorexam.c."""
    h = session_uuid.replace("-", "")
    return str(int(h[:12] + h[13], 16))


class ProctorExamEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(dialect="proctorexam", active=20, completed=10, seed=5,
                         extra=["--secret", SECRET, "--pending", "15"])
        self.conf = self.config()

    def config(self, secret="${TEST_PE_SECRET}", **keys):
        src = {"name": SOURCE, "provider": "proctorexam", "base_url": self.s.sim_url,
               "exam_id": EXAM,
               "auth": {"api_token": "${TEST_PE_TOKEN}", "secret_key": secret},
               # Pages of 7 so that every poll spans several pages.
               "interval_s": 1, "vanish_grace": 1, "page_size": 7}
        src.update(keys)
        return self.s.config(source=src)

    def once(self, conf, expect=0):
        env = self.s.env(TEST_PE_TOKEN=self.s.api_key, TEST_PE_SECRET=SECRET)
        rc, out, err = self.s.bridge("once", "-c", conf, env=env)
        if expect is not None and rc != expect:
            raise AssertionError(f"once exited {rc}, expected {expect}:\n{err[-3000:]}")
        self.assertNotIn(SECRET, err + out)
        self.assertNotIn(self.s.api_key, err + out)
        return rc, out, err

    def tick(self, **counts):
        q = "&".join(f"{k}={v}" for k, v in counts.items())
        return self.s.sim("POST", f"/_sim/tick?{q}")

    def baseline(self, conf=None):
        _, _, err = self.once(conf or self.conf)
        self.assertIn("baseline recorded", err)
        self.assertEqual(self.s.events(), [], "a baseline must not emit events")
        return int(self.s.snapshot_meta(SOURCE)["cycle"])

    def assert_events_match_truth(self):
        events = self.s.events()
        want = {(record_id(sid), t) for sid, t in st.expected_from_truth(self.s.truth(), SOURCE)}
        got = collections.Counter()
        for kind, m in events:
            ev = m["event"]
            sid = ev["subject"]
            got[(sid, ev["type"])] += 1
            self.assertEqual(ev["type"], "session." + kind)
            self.assertEqual(m["key"], f"{SOURCE}/{sid}")
            self.assertEqual(ev["id"], st.event_id(SOURCE, sid, ev["type"]))
            self.assertEqual(m["headers"].get("ce_id"), ev["id"])
            self.assertEqual(ev["source"], f"session-bridge/{SOURCE}")
            data = ev["data"]
            self.assertEqual(data["provider"], "proctorexam")
            self.assertEqual(data["session_id"], sid)
            if data["reason"] != "vanished":
                # The record as received; its number may come back in
                # exponent form (cJSON prints integers past 2^31 as %.15g),
                # the value is exact below 2^53.
                self.assertEqual(int(data["session"]["id"]), int(sid))
                self.assertEqual(data["session"]["status"], data["status"])
                self.assertEqual(data["session"]["exam_id"], EXAM)
            if kind == "started" and not data["synthesized"]:
                self.assertEqual(data["status"], "exam_started")
            if kind == "completed":
                self.assertEqual(data["status"], "exam_finished")
        self.assertEqual(set(got), want, "events differ from the ground truth")
        dups = {k: n for k, n in got.items() if n > 1}
        self.assertEqual(dups, {}, "an event was published twice")
        return events

    def run_ticks(self, conf):
        self.baseline(conf)
        for _ in range(4):
            self.tick(pending=4, started=2, activated=3, completed=4, vanished=2)
            self.once(conf)
        events = self.assert_events_match_truth()
        self.assertGreater(len(events), 30)
        kinds = collections.Counter(k for k, _ in events)
        self.assertTrue(kinds["started"] and kinds["completed"] and kinds["cancelled"], kinds)
        # pending -> active is a real transition with its previous raw status.
        from_pending = [m for k, m in events if k == "started"
                        and m["event"]["data"]["previous_state"] == "pending"]
        self.assertTrue(from_pending)
        for m in from_pending:
            self.assertIn(m["event"]["data"]["previous_status"],
                          ("registered", "before_check_req_mail", "email_bounced", "email_sent",
                           "after_check_req_mail", "before_check_req", "after_check_req",
                           "in_setup", "exam_not_started"))
        return events

    def test_ticks_match_ground_truth(self):
        self.run_ticks(self.conf)
        # Every request was signed, fresh and accepted: the simulator answers
        # 403 to a bad signature, an old timestamp or a reused nonce, which
        # would have failed a poll above. 45+ sessions in pages of 7: many
        # pages per poll.
        state = self.s.sim("GET", "/_sim/state")
        self.assertGreaterEqual(_served(state, f"/api/v3/exams/{EXAM}/index_students"), 5 * 7)
        # A cycle with no upstream change publishes nothing.
        before = len(self.s.events())
        _, _, err = self.once(self.conf)
        self.assertIn('"changes":0', err)
        self.assertEqual(len(self.s.events()), before)

    def test_successor_endpoint_student_sessions(self):
        conf = self.config(endpoint="student_sessions")
        self.run_ticks(conf)
        state = self.s.sim("GET", "/_sim/state")
        self.assertGreater(_served(state, "/api/v3/student_sessions"), 5)
        self.assertEqual(_served(state, f"/api/v3/exams/{EXAM}/index_students"), 0)

    def test_wrong_secret_fails_with_403_and_commits_nothing(self):
        cycle = self.baseline()
        self.tick(started=3, completed=2, vanished=1)
        bad = self.config(secret="not-the-secret")
        rc, _, err = self.once(bad, expect=1)
        self.assertIn("poll failed", err)
        self.assertIn("403", err)
        self.assertNotIn("not-the-secret", err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # The right secret then delivers everything, once.
        self.once(self.conf)
        self.assert_events_match_truth()

    def test_a_failed_page_is_retried_with_a_fresh_signature(self):
        # A 500 on the first page: the retry must be re-signed (a reused
        # nonce gets 403) and the poll complete, not fail at once.
        self.baseline()
        self.tick(started=3, completed=2, vanished=1)
        self.s.sim("POST", "/_sim/fail?status=500&count=1")
        _, _, err = self.once(self.conf)
        self.assertNotIn("poll failed", err)
        self.assert_events_match_truth()

    def test_status_filter_and_signed_json_filters(self):
        # The simulator filters by status and checks filter/sort are the
        # seed's stringified JSON; the signature covers all of them.
        conf = self.config(filters={"status": "exam_started",
                                    "filter": {"started_at": {"gte": "2020-01-01 00:00"}},
                                    "sort": [{"started_at": "asc"}]},
                           initial_snapshot="emit")
        self.once(conf)
        events = self.s.events()
        self.assertEqual(len(events), 20, "one started per exam_started session")
        for kind, m in events:
            self.assertEqual(kind, "started")
            self.assertEqual(m["event"]["data"]["status"], "exam_started")


def _served(state, path):
    """Requests the simulator served for path, from GET /_sim/state."""
    return int(state["requests"]["paths"].get(path, {}).get("served", 0))


if __name__ == "__main__":
    unittest.main(verbosity=2)
