"""End to end: simulated SmarterProctoring (seed 004) -> session-bridge once ->
real Redis -> Kafka (mock cluster in its own process) -> read back by kcat,
compared with the simulator's ground truth.

The simulator's test hooks (tests/stack/sim_smarterproctoring.c) pick the
shape of the "next" links from the install SID: relative by default,
absolute on the same origin, query-only, without includeActive, or absolute
on another origin (which the bridge must refuse without sending anything
there)."""

import collections
import http.server
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "sp"
PROVIDER = "smarterproctoring"
INSTALL = "AI" + "0123456789abcdef" * 2
ENROLLMENT = "EN" + "a" * 32
EXAM = "EX" + "5" * 32
HOOK_ABSOLUTE = "AIffff0001" + "0" * 24
HOOK_QUERY = "AIffff0002" + "0" * 24
HOOK_NO_ACTIVE = "AIffff0004" + "0" * 24

RAW = {"pending": {"Needs Proctor", "Pending Approval", "Scheduled"},
       "active": {"Active", "In Progress", "Incident"},
       "completed": {"Processing", "Closed"},
       "cancelled": {"Approval Denied"}}


def foreign_hook(port):
    """The install SID that makes the simulator's next links point at
    http://127.0.0.1:<port>."""
    return f"AIffff0003{port:04x}" + "0" * 20


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request that reaches the "other host"."""
    seen = []

    def do_GET(self):
        Recorder.seen.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"results":[],"next":null}')

    def log_message(self, *args):
        pass


class SmarterProctoringEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(dialect="smarterproctoring", active=12, completed=6, seed=11,
                         extra=("--pending", "8"))
        self.conf = self.config()

    def config(self, name=SOURCE, install=INSTALL, page_size=4, **extra):
        # Pages of 4 so that every poll spans several pages.
        src = {"name": name, "provider": PROVIDER, "base_url": self.s.sim_url,
               "install_sid": install, "enrollment_sid": ENROLLMENT, "exam_sid": EXAM,
               "auth": {"token": "${TEST_CENTURY_KEY}"},
               "interval_s": 1, "vanish_grace": 1, "page_size": page_size}
        src.update(extra)
        return self.s.config(source=src)

    def tick(self, **counts):
        query = "&".join(f"{k}={v}" for k, v in counts.items())
        return self.s.sim("POST", "/_sim/tick?" + query)

    def served(self):
        return self.s.sim("GET", "/_sim/state")["requests"]["total"]

    def baseline(self, conf=None, name=SOURCE):
        _, _, err = self.s.once(conf or self.conf)
        self.assertIn("baseline recorded", err)
        self.assertEqual(self.s.events(), [], "a baseline must not emit events")
        return int(self.s.snapshot_meta(name)["cycle"])

    def assert_events_match_truth(self, source=SOURCE, after_tick=0):
        events = [(k, m) for k, m in self.s.events()
                  if m["event"]["source"] == f"session-bridge/{source}"]
        want = st.expected_from_truth(self.s.truth(), source, after_tick)
        got = collections.Counter()
        for kind, m in events:
            ev = m["event"]
            sid = ev["subject"]
            got[(sid, ev["type"])] += 1
            self.assertEqual(ev["type"], "session." + kind)
            self.assertEqual(m["key"], f"{source}/{sid}")
            self.assertEqual(ev["id"], st.event_id(source, sid, ev["type"]))
            self.assertEqual(m["headers"].get("ce_id"), ev["id"])
            self.assertEqual(m["headers"].get("ce_type"), ev["type"])
            self.assertEqual(m["headers"].get("ce_source"), f"session-bridge/{source}")
            data = ev["data"]
            self.assertEqual(data["session_id"], sid)
            self.assertEqual(data["provider"], PROVIDER)
            if data["reason"] != "vanished":
                self.assertEqual(data["session"]["sid"], sid)
                self.assertIn(data["status"], RAW[data["state"]])
                for key in ("sessionType", "appointmentDate", "createdDate", "editDate"):
                    self.assertIn(key, data["session"])
        self.assertEqual(set(got), want, "events differ from the ground truth")
        dups = {k: n for k, n in got.items() if n > 1}
        self.assertEqual(dups, {}, "an event was published twice")
        return events

    def test_ticks_match_ground_truth(self):
        self.baseline()
        kinds = collections.Counter()
        for _ in range(4):
            before = self.served()
            self.tick(started=2, pending=3, activated=2, completed=3, cancelled=2, vanished=1,
                      purged=1)
            self.s.once(self.conf)
            self.assertGreater(self.served() - before, 3, "a poll spans several pages")
        events = self.assert_events_match_truth()
        for _, m in events:
            ev = m["event"]
            kinds[(ev["type"], ev["data"]["reason"])] += 1
        # Every kind of transition happened: started, completed, cancelled
        # by status (Approval Denied) and by vanishing.
        self.assertTrue(kinds[("session.started", "status_change")], kinds)
        self.assertTrue(kinds[("session.completed", "status_change")], kinds)
        self.assertTrue(kinds[("session.cancelled", "status_change")], kinds)
        self.assertTrue(kinds[("session.cancelled", "vanished")], kinds)
        # Sessions born pending and cancelled never get started.
        started = {m["event"]["subject"] for k, m in events if k == "started"}
        for m in (m for k, m in events if k == "cancelled"):
            if m["event"]["data"]["previous_state"] == "pending":
                self.assertNotIn(m["event"]["subject"], started)
        # No upstream change: nothing published, an empty delta committed.
        before = len(self.s.events())
        _, _, err = self.s.once(self.conf)
        self.assertIn('"changes":0', err)
        self.assertEqual(len(self.s.events()), before)

    def test_every_link_form_reaches_the_same_events(self):
        forms = {"sp-rel": INSTALL, "sp-abs": HOOK_ABSOLUTE, "sp-query": HOOK_QUERY,
                 "sp-noactive": HOOK_NO_ACTIVE}
        confs = {name: self.config(name=name, install=sid, page_size=3)
                 for name, sid in forms.items()}
        for name, conf in confs.items():
            self.baseline(conf, name)
        self.tick(started=3, pending=2, activated=2, completed=2, cancelled=2, vanished=2)
        for conf in confs.values():
            self.s.once(conf)
        ids = {}
        for name in forms:
            events = self.assert_events_match_truth(source=name)
            self.assertTrue(events)
            ids[name] = sorted((m["event"]["subject"], m["event"]["type"]) for _, m in events)
        self.assertEqual(len({tuple(v) for v in ids.values()}), 1, ids)

    def test_next_on_another_origin_is_refused(self):
        Recorder.seen = []
        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        port = other.server_address[1]
        self.assertLess(port, 0x10000)
        thread = threading.Thread(target=other.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(other.server_close)
        self.addCleanup(other.shutdown)

        cycle = self.baseline()
        self.tick(started=3, completed=2, cancelled=1, vanished=1)
        bad = self.config(install=foreign_hook(port))
        before = self.served()
        rc, out, err = self.s.once(bad, expect=1)
        self.assertIn("poll failed", err)
        self.assertIn("port differs from base_url's", err)
        self.assertIn("refusing to send the token to another origin", err)
        self.assertEqual(self.served() - before, 1, "only the first page was fetched")
        self.assertEqual(Recorder.seen, [], "a request reached the other origin")
        for text in (out, err, self.s.log_of("sim")):
            self.assertNotIn(self.s.api_key, text)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        # The same source with well-behaved links catches up on everything.
        self.s.once(self.conf)
        self.assert_events_match_truth()
        self.assertEqual(Recorder.seen, [])

    def test_failed_page_mid_poll_emits_and_commits_nothing(self):
        cycle = self.baseline()
        self.tick(started=2, pending=2, completed=2, cancelled=1, vanished=1)
        self.s.sim("POST", "/_sim/fail?status=503&after=2&count=100")
        _, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("poll failed", err)
        self.assertEqual(self.s.events(), [])
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        self.s.sim("DELETE", "/_sim/fail")
        self.s.sim("POST", "/_sim/fail?status=200&body=malformed&after=1&count=1")
        _, _, err = self.s.once(self.conf, expect=1)
        self.assertIn("malformed JSON", err)
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle)
        self.s.sim("DELETE", "/_sim/fail")
        self.s.once(self.conf)
        self.assert_events_match_truth()

    def test_wrong_token_fails_without_leaking_it(self):
        conf = self.config(auth={"token": "wrong-" + os.urandom(4).hex()})
        rc, out, err = self.s.once(conf, expect=1)
        self.assertIn("401", err)
        self.assertNotIn("wrong-", out + err)
        self.assertEqual(self.s.snapshot_meta(SOURCE), {})

    def test_check_names_bad_sids(self):
        conf = self.config(exam_sid="EX" + "A" * 32)
        rc, out, err = self.s.bridge("check", "-c", conf)
        self.assertEqual(rc, 78, out + err)
        self.assertIn("sources[0].exam_sid", out + err)
        self.assertIn("^EX[a-f0-9]{32}$", out + err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
