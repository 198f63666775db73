"""End to end for the sinks beyond Kafka: webhooks through the durable
outbox (a receiver that verifies every signature, taken down, answering 410,
hanging while the bridge is killed), dead letters and the dlq command,
Redis Streams, files, and a sink module built as an outside author would
build it."""

import base64
import collections
import glob
import json
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

SOURCE = "century"
# Compressed for the tests; the default is Standard Webhooks' 8 attempts
# over about 28 hours.
FAST_SCHEDULE = [0, 0.3, 0.5, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]


def whsec():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class SinksEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=30, completed=10, seed=11)
        self.secrets = [whsec(), whsec()]
        self.port = st.free_port()
        self.receiver = Receiver(self.port, self.secrets)
        self.addCleanup(self.receiver.stop)

    # ---- helpers ----

    def kafka_sink(self, **props):
        return {"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
                "topics": st.TOPICS,
                "properties": {"message.timeout.ms": "5000", **props}}

    def webhook_sink(self, **keys):
        sink = {"name": "hook", "type": "webhook", "url": self.receiver.url,
                "secrets": self.secrets, "retry_schedule_s": FAST_SCHEDULE,
                "timeout_s": 2, "max_in_flight": 4}
        sink.update(keys)
        return sink

    def expected_ids(self, after_tick=0):
        want = st.expected_from_truth(self.s.truth(), SOURCE, after_tick)
        return {st.event_id(SOURCE, sid, t) for sid, t in want}

    def kafka_ids(self):
        return collections.Counter(m["event"]["id"] for _, m in self.s.events())

    def outbox_depth(self):
        return int(self.s.redis("ZCARD", "sb:ob:hook:due"))

    def dead_ids(self, sink):
        raw = self.s.redis("HKEYS", f"sb:dlq:{sink}")
        return set(raw.split("\n")) if raw else set()

    def assert_no_secret_in(self, text):
        for secret in self.secrets:
            self.assertNotIn(secret, text)
            self.assertNotIn(secret.split("_", 1)[1], text)
        self.assertNotIn("not-for-logs", text, "the webhook URL's query reached a log")

    def assert_all_valid(self):
        bad = [d for d in self.receiver.received() if not d["valid"]]
        self.assertEqual(bad, [], "a delivery carried a signature the receiver rejects")
        for d in self.receiver.received():
            # CloudEvents HTTP binding, structured mode: the body is the event
            self.assertEqual(d["content_type"], "application/cloudevents+json")
            self.assertEqual(d["event"]["id"], d["id"], "webhook-id must be the event id")

    def baseline(self, conf):
        _, _, err = self.s.once(conf)
        self.assertIn("baseline recorded", err)

    # ---- webhooks ----

    def test_webhook_down_then_back_delivers_everything_once_and_kafka_does_not_wait(self):
        conf = self.s.config(SOURCE, sinks=[self.kafka_sink(), self.webhook_sink()])
        self.baseline(conf)
        self.s.start_bridge(conf)
        # The receiver is down: Kafka gets every event of both ticks anyway,
        # and the webhook's events wait in the outbox.
        for _ in range(2):
            self.s.tick(started=8, completed=5, vanished=2)
            want = self.expected_ids()
            st.wait_for(lambda: set(self.kafka_ids()) == want, timeout=30,
                        what="Kafka to get the events while the webhook is down")
        self.assertGreater(self.outbox_depth(), 0)
        self.assertEqual(self.receiver.received(), [])

        self.receiver.start()
        st.wait_for(lambda: set(self.receiver.unique()) == want, timeout=60,
                    what="the webhook to get every event once it is back")
        st.wait_for(lambda: self.outbox_depth() == 0, timeout=15, what="the outbox to drain")
        self.assert_all_valid()
        self.assertEqual(self.dead_ids("hook"), set())
        self.assertEqual(self.s.stop_bridge(), 0)
        self.assert_no_secret_in(self.s.log_of("bridge-run"))

    def test_gone_disables_the_endpoint_and_dlq_replay_delivers(self):
        conf = self.s.config(SOURCE, sinks=[self.webhook_sink()])
        self.baseline(conf)
        self.receiver.mode = "gone"
        self.receiver.start()
        self.s.tick(started=6, completed=4, vanished=1)
        _, _, err = self.s.once(conf)
        self.assertIn("endpoint disabled", err)
        self.assertTrue(self.s.redis("GET", "sb:ob:hook:off"))
        asked = len(self.receiver.received())
        self.assertGreaterEqual(asked, 1)

        # Disabled: the next cycle's events go straight to the dead letters.
        self.s.tick(started=3, completed=2)
        self.s.once(conf)
        self.assertEqual(len(self.receiver.received()), asked)
        want = self.expected_ids()
        self.assertEqual(self.dead_ids("hook"), want)
        self.assertEqual(self.outbox_depth(), 0)

        rc, out, err = self.s.bridge("dlq", "list", "-c", conf)
        self.assertEqual(rc, 0, err)
        listed = [json.loads(line) for line in out.splitlines()]
        self.assertEqual({d["id"] for d in listed}, want)
        for d in listed:
            self.assertEqual(d["sink"], "hook")
            self.assertEqual(d["source"], SOURCE)
            self.assertIn(d["type"], ("session.started", "session.completed",
                                      "session.cancelled"))
            self.assertTrue(d["error"])
        self.assertIn(f"sink hook: {len(want)} dead letters", err)

        self.receiver.mode = "ok"
        rc, _, err = self.s.bridge("dlq", "replay", "-c", conf, "--sink", "hook")
        self.assertEqual(rc, 0, err)
        self.assertEqual(set(self.receiver.unique()), want)
        self.assertEqual(self.dead_ids("hook"), set())
        self.assertEqual(self.s.redis("EXISTS", "sb:ob:hook:off"), "0")
        self.assert_all_valid()
        self.assert_no_secret_in(err)

        rc, _, err = self.s.bridge("dlq", "purge", "-c", conf)
        self.assertEqual(rc, 0)
        self.assertIn("purged 0 dead letters", err)
        rc, _, err = self.s.bridge("dlq", "list", "-c", conf, "--sink", "nope")
        self.assertEqual(rc, 2)

    def test_kill9_between_commit_and_delivery_delivers_after_restart(self):
        conf = self.s.config(SOURCE, sinks=[self.kafka_sink(), self.webhook_sink()])
        self.baseline(conf)
        self.receiver.mode = "hang"
        self.receiver.start()
        p = self.s.start_bridge(conf)
        self.s.tick(started=6, completed=4, vanished=1)
        want = self.expected_ids()
        # Committed (Kafka acknowledged, outbox written), webhook attempts in
        # flight and unanswered: now the bridge dies without a word.
        st.wait_for(lambda: set(self.kafka_ids()) == want, timeout=30, what="the commit")
        st.wait_for(lambda: self.receiver.received(), timeout=30, what="webhook attempts")
        self.s.stop_bridge(sig=signal.SIGKILL)
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertEqual(int(self.s.redis("HLEN", "sb:ob:hook")), len(want),
                         "every event must still be in the outbox")

        self.receiver.stop()
        self.receiver = Receiver(self.port, self.secrets)
        self.addCleanup(self.receiver.stop)
        self.receiver.start()
        self.s.start_bridge(conf, name="bridge-restarted")
        st.wait_for(lambda: set(self.receiver.unique()) == want, timeout=60,
                    what="delivery after the restart")
        self.assert_all_valid()
        self.assertEqual(self.s.stop_bridge("bridge-restarted"), 0)

    # ---- dead letters from Kafka ----

    def test_kafka_refusing_an_event_for_good_dead_letters_it_and_commits(self):
        # librdkafka refuses messages above message.max.bytes for good; the
        # cycle must not be blocked forever by them.
        small = self.s.config(SOURCE, sinks=[self.kafka_sink(**{"message.max.bytes": "1000"})])
        self.baseline(small)
        cycle = int(self.s.snapshot_meta(SOURCE)["cycle"])
        self.s.tick(started=6, completed=4)
        _, _, err = self.s.once(small)
        self.assertIn("dead letters", err)
        want = self.expected_ids()
        dead = self.dead_ids("bus")
        self.assertTrue(dead, "no event was large enough to be refused: raise the test's sizes")
        self.assertEqual(set(self.kafka_ids()) | dead, want)
        self.assertEqual(int(self.s.snapshot_meta(SOURCE)["cycle"]), cycle + 1)

        big = self.s.config(SOURCE, sinks=[self.kafka_sink()])
        rc, _, err = self.s.bridge("dlq", "replay", "-c", big)
        self.assertEqual(rc, 0, err)
        self.assertEqual(set(self.kafka_ids()), want)
        self.assertEqual(self.dead_ids("bus"), set())

    # ---- streams, files, modules ----

    def build_module_as_readme_says(self):
        """Installs the project into a prefix and compiles the example module
        from the installed header and source, as README tells an author to."""
        prefix = os.path.join(self.s.dir, "prefix")
        subprocess.run(["cmake", "--install", st.BUILD, "--prefix", prefix], check=True,
                       capture_output=True, timeout=120)
        cflags = subprocess.run(["pkg-config", "--cflags", "libcjson"], check=True,
                                capture_output=True, text=True).stdout.split()
        so = os.path.join(self.s.dir, "summary_sink.so")
        src = os.path.join(prefix, "share", "session-bridge", "examples", "summary_sink.c")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2",
                        "-I" + os.path.join(prefix, "include", "session-bridge"), *cflags,
                        "-o", so, src], check=True, capture_output=True, timeout=120)
        return so

    def test_stream_file_and_module_sinks_read_back(self):
        events_file = os.path.join(self.s.dir, "events.jsonl")
        summary = os.path.join(self.s.dir, "summary.txt")
        conf = self.s.config(SOURCE, sinks=[
            {"name": "stream", "type": "redis_stream", "stream": "events:{source}",
             "maxlen": 10000},
            {"name": "files", "type": "file", "path": events_file, "fsync": "always",
             "rotate_bytes": 8192, "keep": 100},
            {"name": "summary", "type": "module", "path": self.build_module_as_readme_says(),
             "output": summary, "prefix": "ev "}])
        self.baseline(conf)
        for _ in range(3):
            self.s.tick(started=6, completed=4, vanished=1)
            self.s.once(conf)
        want = self.expected_ids()

        raw = self.s.redis("XRANGE", f"events:{SOURCE}", "-", "+").split("\n")
        # --raw prints: entry id, then field, value pairs, entry after entry.
        stream_ids = [raw[i + 1] for i in range(len(raw)) if raw[i] == "id"]
        self.assertEqual(collections.Counter(stream_ids), collections.Counter(want))
        stream_events = [st.check_event(json.loads(raw[i + 1]), "a stream entry's event")
                         for i in range(len(raw)) if raw[i] == "event"]
        self.assertEqual(collections.Counter(e["id"] for e in stream_events),
                         collections.Counter(want))

        lines = []
        for path in sorted(glob.glob(events_file + "*")):
            lines += st.read_text(path).splitlines()
        self.assertGreater(len(glob.glob(events_file + ".*")), 0, "no rotation happened")
        file_ids = [e["id"] for e in st.event_lines("\n".join(lines), "a file sink line")]
        self.assertEqual(collections.Counter(file_ids), collections.Counter(want))

        rows = [line.split(" ") for line in st.read_text(summary).splitlines()]
        self.assertTrue(all(r[0] == "ev" and r[2] == SOURCE for r in rows))
        self.assertEqual(collections.Counter(r[4] for r in rows), collections.Counter(want))

    def test_module_with_another_abi_or_no_symbol_is_a_config_error(self):
        so = os.path.join(self.s.dir, "old_abi.so")
        src = os.path.join(self.s.dir, "old_abi.c")
        with open(src, "w") as f:
            f.write("struct m { unsigned v; const void *t; };\n"
                    "const struct m session_bridge_sink_module = { 999, 0 };\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-o", so, src], check=True, timeout=60)
        conf = self.s.config(SOURCE, sinks=[{"name": "old", "type": "module", "path": so}])
        rc, out, err = self.s.bridge("check", "-c", conf)
        self.assertEqual(rc, 78)
        self.assertIn("sinks[0].path", err)
        self.assertIn("sink ABI 999", err)
        conf = self.s.config(SOURCE, sinks=[{"name": "none", "type": "module",
                                             "path": "/nonexistent/x.so"}])
        rc, out, err = self.s.bridge("check", "-c", conf)
        self.assertEqual(rc, 78)
        self.assertIn("cannot load the sink module", err)


def sanitized(pid):
    """Whether the process runs with ASan (its RSS says nothing then)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


class LargeOutboxEndToEnd(unittest.TestCase):
    """A first emit cycle whose events all go through the outbox, with more
    events than one window of the commit (the store's 1,000 letters) and
    than one claim of the delivery worker (100)."""

    def start(self, active, completed):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_sim(active=active, completed=completed, seed=23)
        self.secrets = [whsec()]
        self.receiver = Receiver(st.free_port(), self.secrets)
        self.addCleanup(self.receiver.stop)
        sink = {"name": "hook", "type": "webhook", "url": self.receiver.url,
                "secrets": self.secrets, "retry_schedule_s": FAST_SCHEDULE,
                "timeout_s": 2, "max_in_flight": 16}
        return self.s.config(SOURCE, sinks=[sink], initial_snapshot="emit", interval_s=60,
                             max_sessions=max(100000, active + completed))

    def committed(self, name="bridge-run"):
        return '"msg":"cycle committed"' in self.s.log_of(name)

    def test_large_outbox_is_written_whole_and_delivered_exactly_once(self):
        conf = self.start(active=2700, completed=300)
        want = {st.event_id(SOURCE, sid, t)
                for sid, t in st.expected_from_truth(self.s.truth(), SOURCE, -1)}
        self.assertGreater(len(want), 3000)
        self.s.start_bridge(conf)
        st.wait_for(self.committed, timeout=60, what="the first cycle's commit")
        # Everything went in with the snapshot, before any delivery.
        self.assertEqual(int(self.s.redis("HLEN", "sb:ob:hook")), len(want))
        self.assertEqual(set(self.s.redis("HKEYS", "sb:ob:hook").split("\n")), want)
        self.assertEqual(self.s.snapshot_meta(SOURCE).get("sessions"), "3000")
        self.receiver.start()
        st.wait_for(lambda: len(self.receiver.received()) >= len(want), timeout=120,
                    what="every event delivered")
        st.wait_for(lambda: self.s.redis("HLEN", "sb:ob:hook") == "0", timeout=15,
                    what="the outbox to drain")
        got = collections.Counter(d["id"] for d in self.receiver.received())
        self.assertEqual(set(got), want)
        self.assertEqual([i for i, n in got.items() if n > 1], [], "an event came twice")
        for d in self.receiver.received():
            self.assertTrue(d["valid"])
            self.assertEqual(d["event"]["id"], d["id"])
        self.assertEqual(self.s.stop_bridge(), 0)

    def test_commit_does_not_hold_every_event_text(self):
        # 44,000 events of ~1.3 KiB: their texts alone are more than the
        # whole bridge may take at its peak when it holds one window of them.
        conf = self.start(active=36000, completed=4000)
        p = self.s.start_bridge(conf)
        st.wait_for(self.committed, timeout=120, what="the first cycle's commit")
        peak = st.vm_hwm_kib(p.pid) * 1024
        asan = sanitized(p.pid)
        texts = int(self.s.redis(
            "EVAL", "local n = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do "
            "n = n + #v end return n", "1", "sb:ob:hook"))
        self.assertEqual(self.s.stop_bridge(), 0)
        if asan:
            self.skipTest("RSS under AddressSanitizer says nothing about the bridge's own")
        self.assertLess(peak, texts,
                        f"peak RSS {peak >> 20} MiB, the outbox's texts {texts >> 20} MiB: "
                        "the commit held them all")


if __name__ == "__main__":
    unittest.main()
