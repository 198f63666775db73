"""`session-bridge check --connect` against the real stack (CONTRACT §2):
one line per target (Redis, every sink, every source), exit 0 when all
answered, 1 when any failed, 78 for an invalid file; nothing anywhere
written (Redis, Kafka, the webhook receiver, the file sink's directory);
every probe bounded; no secret in the output.
"""

import base64
import os
import re
import subprocess
import time
import unittest

import stack
import webhook_receiver

# The longest bound of a probe without a timeout of its own (Kafka's metadata
# request, bridge/connect_check.c) plus the grace the command allows past it.
SINK_BOUND_S = 10
GRACE_S = 3


class CheckConnect(unittest.TestCase):
    def setUp(self):
        self.s = stack.Stack("connect")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim()
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.hook_port = stack.free_port()
        self.receiver = webhook_receiver.Receiver(self.hook_port, [self.secret])
        self.receiver.start()
        self.addCleanup(self.receiver.stop)
        self.file_path = os.path.join(self.s.dir, "archive", "events.jsonl")
        os.makedirs(os.path.dirname(self.file_path))

    def sinks(self, **kafka):
        bus = {"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
               "topics": stack.TOPICS, "properties": {"message.timeout.ms": "5000"}}
        bus.update(kafka)
        return [bus,
                {"name": "hook", "type": "webhook", "secret": self.secret,
                 # a token in the query, as webhook URLs often carry: never printed
                 "url": f"http://127.0.0.1:{self.hook_port}/hooks?token=t0ps3cret"},
                {"name": "archive", "type": "file", "path": self.file_path},
                {"name": "stream", "type": "redis_stream", "stream": "sb:events:{source}"},
                {"name": "console", "type": "stdout"}]

    def check(self, config, expect, env=None):
        t0 = time.monotonic()
        rc, out, err = self.s.bridge("check", "-c", config, "--connect", env=env)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, expect, f"exit {rc}:\n{out}\n{err}")
        for secret in (self.s.api_key, self.secret, "t0ps3cret"):
            self.assertNotIn(secret, out + err)
        return out, elapsed

    @staticmethod
    def line(out, label):
        """The status and message of the line of target label."""
        m = re.search(rf"^{re.escape(label)}\s+(ok|FAILED|skipped)\s+(.*)$", out, re.M)
        if m is None:
            raise AssertionError(f"no line for {label!r} in:\n{out}")
        return m.group(1), m.group(2)

    def redis_state(self):
        """Every key with its DUMP (escaped by redis-cli): any write would change it."""
        def dump(key):
            return subprocess.run(["redis-cli", "-p", str(self.s.redis_port), "--no-raw", "DUMP", key],
                                  check=True, capture_output=True, timeout=15).stdout
        keys = sorted(k for k in self.s.redis("KEYS", "*").split("\n") if k)
        self.assertGreater(len(keys), 3)
        return {k: dump(k) for k in keys}, self.s.redis("DBSIZE")

    def kafka_counts(self):
        return {t: len(self.s.consume(t)) for t in stack.TOPICS.values()}

    def kafka_topics(self):
        """Every topic of the cluster, as kcat -L lists them (all topics:
        naming one would create it on the mock)."""
        p = subprocess.run(["kcat", "-b", self.s.bootstrap, "-L"], capture_output=True,
                           timeout=60, check=True)
        return set(re.findall(r'topic "([^"]+)"', p.stdout.decode()))

    def test_every_target_ok_and_nothing_written(self):
        config = self.s.config(sinks=self.sinks(), initial_snapshot="emit")
        # A state worth protecting: a committed snapshot, an outbox drained to
        # the webhook (once waits for it), events on Kafka and in the streams.
        self.s.once(config)
        self.assertGreater(len(self.receiver.deliveries), 0)
        os.remove(self.file_path)
        before, hooks = self.redis_state(), len(self.receiver.deliveries)
        counts = self.kafka_counts()

        out, elapsed = self.check(config, 0)

        self.assertEqual(self.redis_state(), before)
        self.assertEqual(self.kafka_counts(), counts)
        self.assertEqual(len(self.receiver.deliveries), hooks)
        self.assertFalse(os.path.exists(self.file_path), "the file sink's probe created its file")
        self.assertLess(elapsed, SINK_BOUND_S)
        status, msg = self.line(out, "redis")
        self.assertEqual(status, "ok")
        self.assertRegex(msg, rf"^redis \d+\.\d+\.\d+ at 127\.0\.0\.1:{self.s.redis_port}$")
        status, msg = self.line(out, "sink bus")
        self.assertEqual(status, "ok")
        self.assertEqual(msg, "1 broker, " + ", ".join(
            f"topic {t}: 3 partitions" for t in stack.TOPICS.values()))
        status, msg = self.line(out, "sink hook")
        self.assertEqual(status, "ok")
        self.assertRegex(msg, rf"^http://127\.0\.0\.1:{self.hook_port}: connected in \d+ ms "
                              r"\(no request sent\)$")
        self.assertEqual(self.line(out, "sink archive"),
                         ("ok", f"directory {os.path.dirname(self.file_path)} is writable"))
        status, msg = self.line(out, "sink stream")
        self.assertEqual(status, "ok")
        self.assertEqual(self.line(out, "sink console"), ("ok", "standard output"))
        status, msg = self.line(out, "source century")
        self.assertEqual(status, "ok")
        self.assertEqual(msg, "HTTP 200, 20 records on page 1 (/smart-ia/sessions/in-progress)")

    def test_missing_topic_fails_and_is_not_created(self):
        topics = dict(stack.TOPICS, cancelled="sessions.never-created")
        config = self.s.config(sinks=self.sinks(topics=topics)[:1])
        out, _ = self.check(config, 1)
        status, msg = self.line(out, "sink bus")
        self.assertEqual(status, "FAILED")
        self.assertIn("topic sessions.never-created: does not exist", msg)
        self.assertIn("topic sessions.started: 3 partitions", msg)
        self.assertNotIn("sessions.never-created", self.kafka_topics())

    def test_wrong_broker_address(self):
        config = self.s.config(sinks=self.sinks(brokers=f"127.0.0.1:{stack.free_port()}")[:1])
        out, elapsed = self.check(config, 1)
        status, msg = self.line(out, "sink bus")
        self.assertEqual(status, "FAILED")
        self.assertRegex(msg, r"^no metadata from 127\.0\.0\.1:\d+: ")
        self.assertEqual(self.line(out, "redis")[0], "ok")
        self.assertEqual(self.line(out, "source century")[0], "ok")
        self.assertLess(elapsed, SINK_BOUND_S + GRACE_S + 2)

    def test_bad_api_key(self):
        config = self.s.config(sinks=self.sinks()[4:])
        out, _ = self.check(config, 1, env=self.s.env(TEST_CENTURY_KEY="not-the-key"))
        self.assertEqual(self.line(out, "source century"),
                         ("FAILED", "HTTP 401 on page 1 (/smart-ia/sessions/in-progress)"))
        self.assertNotIn("not-the-key", out)
        self.assertEqual(self.line(out, "redis")[0], "ok")

    def test_redis_down(self):
        config = self.s.config(sinks=self.sinks()[4:])
        self.s.stop_redis()
        out, elapsed = self.check(config, 1)
        status, msg = self.line(out, "redis")
        self.assertEqual(status, "FAILED")
        self.assertEqual(msg, f"redis 127.0.0.1:{self.s.redis_port}: connect: Connection refused")
        self.assertEqual(self.line(out, "source century")[0], "ok")
        self.assertLess(elapsed, SINK_BOUND_S)

    def test_invalid_config_is_78_and_contacts_nothing(self):
        config = self.s.config(sinks=[{"name": "bus", "type": "kafka"}])
        rc, out, err = self.s.bridge("check", "-c", config, "--connect")
        self.assertEqual(rc, 78, err)
        self.assertIn("sinks[0].brokers", err)
        self.assertEqual(out, "")


if __name__ == "__main__":
    unittest.main()
