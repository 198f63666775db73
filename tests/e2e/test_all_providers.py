"""All four providers in one process: four simulators (one per dialect, each
enforcing its seed), one bridge configuration with a source for each (the
ProctorExam one expanded from exam_ids into two), one Kafka broker. Every
source's events must equal its own simulator's ground truth."""

import collections
import hashlib
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

PE_SECRET = "pe-secret-" + "4c" * 8
SP_PATH = {"install_sid": "AI" + "0123456789abcdef" * 2, "enrollment_sid": "EN" + "b" * 32,
           "exam_sid": "EX" + "c" * 32}


def pe_record_id(session_uuid):
    """The ProctorExam simulator's numeric student id for a population UUID
    (sim_proctorexam.c: 52 bits of the UUID)."""
    h = session_uuid.replace("-", "")
    return str(int(h[:12] + h[13], 16))


class AllProviders(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack("all")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.sims = {}
        for dialect, extra in (("century", []), ("quiz_jsonapi", ["--pending", "6"]),
                               ("proctorexam", ["--pending", "6", "--secret", PE_SECRET]),
                               ("smarterproctoring", ["--pending", "6"])):
            self.sims[dialect] = self.start_sim(dialect, extra)

    def start_sim(self, dialect, extra):
        urlfile = os.path.join(self.s.dir, f"{dialect}.url")
        truth = os.path.join(self.s.dir, f"{dialect}.truth")
        seed = int(hashlib.sha256(dialect.encode()).hexdigest()[:6], 16)
        self.s._spawn(f"sim-{dialect}", [st.SIM, "--port", "0", "--url-file", urlfile,
                                         "--dialect", dialect, "--api-key", self.s.api_key,
                                         "--active", "12", "--completed", "5",
                                         "--seed", str(seed), "--truth", truth, *extra])
        url = st.wait_for(lambda: st.read_text(urlfile), what=f"{dialect} simulator")
        return {"url": url, "truth": truth}

    def sim(self, dialect, path):
        self.s.sim_url = self.sims[dialect]["url"]
        return self.s.sim("POST", path)

    def truth(self, dialect):
        with open(self.sims[dialect]["truth"]) as f:
            return [json.loads(line) for line in f if line.strip()]

    def config(self):
        key = "${TEST_CENTURY_KEY}"
        common = {"interval_s": 1, "vanish_grace": 1}
        sources = [
            dict(common, name="century", provider="century_smart_ia",
                 base_url=self.sims["century"]["url"] + "/api/v1", page_size=5,
                 auth={"api_key": key}),
            dict(common, name="quiz", provider="quiz_jsonapi",
                 base_url=self.sims["quiz_jsonapi"]["url"], page_size=5,
                 auth={"header": "Authorization", "value": "Bearer " + key}),
            dict(common, name="pe", provider="proctorexam",
                 base_url=self.sims["proctorexam"]["url"], page_size=5, exam_ids=[11, "12"],
                 auth={"api_token": key, "secret_key": PE_SECRET}),
            dict(common, name="sp", provider="smarterproctoring",
                 base_url=self.sims["smarterproctoring"]["url"], page_size=5,
                 auth={"token": key}, **SP_PATH),
        ]
        conf = {"redis": {"url": f"redis://127.0.0.1:{self.s.redis_port}/0"},
                "sources": sources,
                "sinks": [{"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
                           "topics": {k: "sessions.{type}" for k in st.TOPICS},
                           "properties": {"message.timeout.ms": "5000"}},
                          {"name": "completions", "type": "stdout", "events": ["completed"],
                           "sources": ["quiz", "pe-11"]}]}
        path = os.path.join(self.s.dir, "all.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def test_four_providers_at_once_match_their_ground_truth(self):
        conf = self.config()
        _, _, err = self.s.once(conf)
        for name in ("century", "quiz", "pe-11", "pe-12", "sp"):
            self.assertIn(f'"msg":"baseline recorded","source":"{name}"', err)
        ticks = {"century": dict(started=3, completed=2, vanished=1),
                 "quiz_jsonapi": dict(started=2, activated=2, completed=2, cancelled=1,
                                      vanished=1),
                 "proctorexam": dict(pending=2, activated=2, completed=2, vanished=1),
                 "smarterproctoring": dict(started=2, activated=1, completed=2, cancelled=1,
                                           vanished=1)}
        stdout_lines = []
        for _ in range(3):
            for dialect, counts in ticks.items():
                self.sim(dialect, "/_sim/tick?" + "&".join(f"{k}={v}" for k, v in counts.items()))
            _, out, err = self.s.once(conf)
            self.assertEqual(err.count('"msg":"cycle committed"'), 5, err[-2000:])
            stdout_lines += st.event_lines(out, "a stdout sink line")

        got = collections.defaultdict(collections.Counter)
        for kind, m in self.s.events():
            ev = m["event"]
            got[ev["data"]["source"]][(ev["subject"], ev["type"])] += 1
            self.assertEqual(ev["id"], st.event_id(ev["data"]["source"], ev["subject"],
                                                   ev["type"]))
            self.assertEqual(m["key"], f'{ev["data"]["source"]}/{ev["subject"]}')
        plan = {"century": ("century", str), "quiz": ("quiz_jsonapi", str),
                "pe-11": ("proctorexam", pe_record_id), "pe-12": ("proctorexam", pe_record_id),
                "sp": ("smarterproctoring", str)}
        for source, (dialect, to_id) in plan.items():
            want = {(to_id(sid), t) for sid, t in st.expected_from_truth(self.truth(dialect),
                                                                          source)}
            self.assertTrue(want, source)
            self.assertEqual(set(got[source]), want, source)
            self.assertEqual(max(got[source].values()), 1, f"{source}: an event twice")
        # Every event type occurred, from several providers.
        types = collections.Counter(t for c in got.values() for _, t in c)
        for t in ("session.started", "session.completed", "session.cancelled"):
            self.assertGreater(types[t], 0, t)
        # The stdout sink took only what it routes.
        self.assertTrue(stdout_lines)
        for ev in stdout_lines:
            self.assertEqual(ev["type"], "session.completed")
            self.assertIn(ev["data"]["source"], ("quiz", "pe-11"))
        self.assertEqual(len(stdout_lines), sum(n for src in ("quiz", "pe-11")
                                                for (_, t), n in got[src].items()
                                                if t == "session.completed"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
