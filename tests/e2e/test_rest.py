"""End to end: the `rest` provider (CONTRACT §4.1) -> session-bridge once ->
real Redis -> Kafka (mock cluster in its own process) -> read back by kcat.

- One simulator dialect per paging scheme (tests/stack/sim_rest.c: cursor,
  offset, page, next_url, link_header, none; each behind another auth
  scheme), compared with the simulator's ground truth.
- A next URL or a Link on another origin fails the poll, nothing sent there.
- Three seed platforms (Century, quiz_jsonapi, SmarterProctoring) configured
  as `rest` sources yield the events of their built-in providers, against
  the same simulator (ids, types, data but `provider`; times apart).
"""

import base64
import collections
import json
import os
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

KEY = "${TEST_CENTURY_KEY}"
REST_STATUS_MAP = {"waiting": "pending", "inprogress": "active", "finished": "completed",
                   "abandoned": "cancelled"}
RAW = {v: k for k, v in REST_STATUS_MAP.items()}

# scheme -> (the simulator's auth path segment, the source's auth, records,
# pagination). One auth scheme each, so that every one is driven too.
SCHEMES = {
    "cursor": ("bearer", {"type": "bearer", "token": KEY}, "data.items",
               {"type": "cursor", "param": "cursor", "next": "meta.next_cursor",
                "size_param": "limit"}),
    "offset": ("basic", {"type": "basic", "username": "sim", "password": KEY}, "results",
               {"type": "offset", "param": "offset", "size_param": "limit"}),
    "page": ("header", {"type": "header", "header": "X-Api-Key", "value": KEY}, "",
             {"type": "page", "param": "page", "size_param": "per_page", "start": 1}),
    "next_url": ("query", {"type": "query", "param": "api_key", "value": KEY}, "items",
                 {"type": "next_url", "next": "links.next", "size_param": "limit"}),
    "link": ("bearer", {"type": "bearer", "token": KEY}, "items",
             {"type": "link_header", "size_param": "limit"}),
    "none": ("none", {"type": "none"}, "sessions", {"type": "none"}),
}

SP_PATH = ("/v1/installs/AI" + "0123456789abcdef" * 2 + "/enrollments/EN" + "a" * 32 +
           "/exams/EX" + "5" * 32 + "/sessions")
SP_SIDS = {"install_sid": "AI" + "0123456789abcdef" * 2, "enrollment_sid": "EN" + "a" * 32,
           "exam_sid": "EX" + "5" * 32}

# Each seed platform: the simulator's dialect and extra flags, its built-in
# source, and the same API described as a `rest` source.
PLATFORMS = {
    "century": (
        [], "/api/v1",
        {"provider": "century_smart_ia", "auth": {"api_key": KEY}},
        {"provider": "rest",
         "path": ["/smart-ia/sessions/in-progress", "/smart-ia/sessions/completed"],
         "headers": {"Accept": "application/json"},
         "auth": {"type": "header", "header": "x-api-key", "value": KEY},
         "records": "data", "id": "sessionId", "status": "status",
         "pagination": {"type": "cursor", "param": "cursor", "next": "pagination.nextCursor",
                        "size_param": "limit"},
         "status_map": {"IN_PROGRESS": "active", "COMPLETED": "completed"}}),
    "quiz_jsonapi": (
        ["--pending", "6"], "",
        {"provider": "quiz_jsonapi", "auth": {"header": "Authorization",
                                              "value": "Bearer " + KEY}},
        {"provider": "rest", "path": "/api/v3/quiz/sessions",
         "headers": {"Accept": "application/vnd.api+json"},
         "auth": {"type": "bearer", "token": KEY},
         "records": "data", "id": "id", "status": "attributes.status",
         "pagination": {"type": "page", "param": "page[number]", "size_param": "page[size]"},
         "status_map": {"pending": "pending", "created": "pending", "started": "active",
                        "in_progress": "active", "active": "active",
                        "completed": "completed", "finished": "completed",
                        "submitted": "completed", "cancelled": "cancelled",
                        "canceled": "cancelled", "expired": "cancelled"}}),
    "smarterproctoring": (
        ["--pending", "6"], "",
        dict({"provider": "smarterproctoring", "auth": {"token": KEY}}, **SP_SIDS),
        {"provider": "rest", "path": SP_PATH, "query": {"includeActive": True},
         "headers": {"Accept": "application/json"},
         "auth": {"type": "header", "header": "token", "value": KEY},
         "records": "results", "id": "sid", "status": "status",
         "pagination": {"type": "next_url", "next": "next", "size_param": "limit"},
         "status_map": {"Needs Proctor": "pending", "Pending Approval": "pending",
                        "Scheduled": "pending", "Active": "active", "In Progress": "active",
                        "Incident": "active", "Processing": "completed", "Closed": "completed",
                        "Approval Denied": "cancelled"}}),
}
REST_TOPICS = {k: "rest." + v for k, v in st.TOPICS.items()}


class RestEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka(extra_topics=REST_TOPICS.values())

    def write_config(self, sources, topics=st.TOPICS, prefix="sb"):
        conf = {"redis": {"url": f"redis://127.0.0.1:{self.s.redis_port}/0", "prefix": prefix},
                "sources": sources,
                "sinks": [{"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
                           "topics": topics, "properties": {"message.timeout.ms": "5000"}}]}
        path = os.path.join(self.s.dir, f"config-{os.urandom(3).hex()}.json")
        with open(path, "w") as f:
            json.dump(conf, f, indent=2)
        return path

    def rest_source(self, scheme, page_size=3, **extra):
        auth_seg, auth, records, pagination = SCHEMES[scheme]
        src = {"name": f"r-{scheme.replace('_', '-')}", "provider": "rest",
               "base_url": self.s.sim_url, "path": f"/{scheme}/{auth_seg}/sessions",
               "auth": auth, "records": records, "id": "id", "status": "attributes.state",
               "pagination": pagination, "status_map": REST_STATUS_MAP,
               "interval_s": 1, "vanish_grace": 1}
        if scheme != "none":
            src["page_size"] = page_size
        src.update(extra)
        return src

    def served(self):
        return self.s.sim("GET", "/_sim/state")["requests"]["total"]

    def assert_no_secret(self, *texts):
        for text in texts:
            self.assertNotIn(self.s.api_key, text)
            self.assertNotIn(base64.b64encode(f"sim:{self.s.api_key}".encode()).decode(), text)

    def test_every_paging_scheme_matches_ground_truth(self):
        self.s.start_sim(dialect="rest", active=8, completed=4, seed=21,
                         extra=("--pending", "5"))
        confs = {scheme: self.write_config([self.rest_source(scheme)]) for scheme in SCHEMES}
        for scheme, conf in confs.items():
            _, _, err = self.s.once(conf)
            self.assertIn("baseline recorded", err, scheme)
        self.assertEqual(self.s.events(), [], "a baseline must not emit events")
        self.s.tick(started=2, pending=2, activated=2, completed=3, cancelled=2, vanished=1,
                    purged=1)
        for scheme, conf in confs.items():
            before = self.served()
            _, out, err = self.s.once(conf)
            pages = self.served() - before
            # 17 sessions in pages of 3; "none" takes them in one request.
            if scheme == "none":
                self.assertEqual(pages, 1)
            else:
                self.assertGreaterEqual(pages, 6, scheme)
            self.assert_no_secret(out, err)
        self.assert_no_secret(self.s.log_of("sim"))
        events = self.s.events()
        want = st.expected_from_truth(self.s.truth(), None, after_tick=0)
        self.assertTrue(want)
        kinds = collections.Counter()
        for scheme in SCHEMES:
            source = f"r-{scheme.replace('_', '-')}"
            got = collections.Counter()
            for kind, m in events:
                ev = m["event"]
                if ev["source"] != f"session-bridge/{source}":
                    continue
                sid = ev["subject"]
                got[(sid, ev["type"])] += 1
                kinds[ev["type"]] += 1
                self.assertEqual(ev["type"], "session." + kind)
                self.assertEqual(m["key"], f"{source}/{sid}")
                self.assertEqual(ev["id"], st.event_id(source, sid, ev["type"]))
                data = ev["data"]
                self.assertEqual(data["provider"], "rest")
                if data["reason"] != "vanished":
                    self.assertEqual(data["session"]["id"], sid)
                    self.assertEqual(data["status"], RAW[data["state"]])
                    self.assertEqual(data["session"]["attributes"]["state"], data["status"])
            self.assertEqual(set(got), want, f"{scheme}: events differ from the ground truth")
            self.assertEqual({k: n for k, n in got.items() if n > 1}, {}, scheme)
        self.assertTrue(kinds["session.started"] and kinds["session.completed"] and
                        kinds["session.cancelled"], kinds)

    def test_link_header_with_several_links(self):
        """The simulator's Link holds first, next (among a quoted title with
        a comma and a ';', and a two-valued rel) and last: the bridge walks
        next only, to the end."""
        self.s.start_sim(dialect="rest", active=10, completed=0, seed=5)
        req = urllib.request.Request(self.s.sim_url + "/link/bearer/sessions?limit=3",
                                     headers={"Authorization": "Bearer " + self.s.api_key})
        with urllib.request.urlopen(req, timeout=10) as r:
            link = r.headers["Link"]
        self.assertEqual(link.count("<"), 3, link)
        self.assertIn('rel="next nofollow"', link)
        conf = self.write_config([self.rest_source("link", initial_snapshot="emit")])
        before = self.served()
        self.s.once(conf)
        self.assertEqual(self.served() - before, 4, "10 sessions in pages of 3")
        got = {m["event"]["subject"] for k, m in self.s.events() if k == "started"}
        active = {t["session_id"] for t in self.s.truth() if t["to"] == "active"}
        self.assertEqual(got, active)

    def test_next_on_another_origin_is_refused(self):
        self.s.start_sim(dialect="rest", active=8, completed=2, seed=9)
        for scheme, how in (("next_url", "next_url_foreign"), ("link", "link_foreign")):
            with self.subTest(scheme=scheme):
                auth_seg = SCHEMES[scheme][0]
                src = self.rest_source(scheme, initial_snapshot="emit",
                                       path=f"/{how}/{auth_seg}/sessions")
                conf = self.write_config([src])
                before = self.served()
                rc, out, err = self.s.once(conf, expect=1)
                self.assertIn("poll failed", err)
                self.assertIn("next URL is on another origin (http://127.0.0.1:1", err)
                self.assertIn("refusing to send the credentials there", err)
                self.assertEqual(self.served() - before, 1, "only the first page was fetched")
                self.assert_no_secret(out, err)
                self.assertEqual(self.s.events(), [])
                self.assertEqual(self.s.snapshot_meta(src["name"]), {})

    def test_seed_platforms_as_rest_match_their_builtin_providers(self):
        for dialect, (flags, prefix, builtin, rest) in PLATFORMS.items():
            with self.subTest(platform=dialect):
                # A simulator per platform: the previous one's URL file goes first.
                if os.path.exists(os.path.join(self.s.dir, "sim-url")):
                    os.remove(os.path.join(self.s.dir, "sim-url"))
                self.s.start_sim(dialect=dialect, active=9, completed=4, seed=33, extra=flags)
                common = {"name": f"eq-{dialect.replace('_', '-')}",
                          "base_url": self.s.sim_url + prefix, "page_size": 4,
                          "interval_s": 1, "vanish_grace": 1, "initial_snapshot": "emit"}
                a = self.write_config([dict(common, **builtin)])
                b = self.write_config([dict(common, **rest)], topics=REST_TOPICS,
                                      prefix="rest")
                self.s.once(a)
                self.s.once(b)
                ticks = {"century": dict(started=3, completed=2, vanished=1)}.get(
                    dialect, dict(started=2, pending=2, activated=2, completed=2, cancelled=1,
                                  vanished=1))
                self.s.tick(**ticks)
                self.s.once(a)
                self.s.once(b)
                got_a = self.comparable(st.TOPICS, common["name"], builtin["provider"])
                got_b = self.comparable(REST_TOPICS, common["name"], "rest")
                self.assertGreater(len(got_a), 10)
                self.assertEqual(got_a, got_b)
                sim = self.s.procs.pop("sim")
                sim.terminate()
                sim.wait(timeout=10)

    def comparable(self, topics, source, provider):
        """The source's events, without their time and data.provider."""
        out = []
        for kind, topic in topics.items():
            for m in self.s.consume(topic):
                ev = m["event"]
                if ev["source"] != f"session-bridge/{source}":
                    continue
                self.assertEqual(ev["data"].pop("provider"), provider)
                ev.pop("time")
                out.append((kind, m["key"], json.dumps(ev, sort_keys=True)))
        return sorted(out)


if __name__ == "__main__":
    unittest.main()
