"""`session-bridge once --dry-run` (CONTRACT §2): polls and diffs, prints the
events it would deliver, and writes nothing anywhere: every Redis key and
value is the same before and after, and no event reaches Kafka. The events
it printed are the ones a real `once` then delivers, byte for byte but for
the observation time."""

import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "century"


def resp_command(sock_file, *args):
    """One command over RESP; bulk strings come back as bytes (DUMP is binary)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock_file.write(out)
    sock_file.flush()
    return resp_read(sock_file)


def resp_read(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b":"):
        return rest
    if kind == b"-":
        raise AssertionError(f"redis error: {rest.decode()}")
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        return [resp_read(f) for _ in range(int(rest))]
    raise AssertionError(f"unexpected RESP reply {line!r}")


def redis_state(port):
    """Every key of the database with DUMP of its value (type, content and
    encoding, not the TTL): two equal states mean nothing was written."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        f = sock.makefile("rwb")
        keys, cursor = set(), b"0"
        while True:
            cursor, batch = resp_command(f, "SCAN", cursor, "COUNT", 1000)
            keys.update(batch)
            if cursor == b"0":
                break
        state = {k: resp_command(f, "DUMP", k) for k in sorted(keys)}
        dbsize = int(resp_command(f, "DBSIZE"))
    assert dbsize == len(state), (dbsize, len(state))
    return state


def without_time(event):
    event = dict(event)
    event.pop("time")
    return event


class DryRun(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=30, completed=10, seed=11)
        self.conf = self.s.config(SOURCE, page_size=7)

    def dry_run(self, *extra):
        rc, out, err = self.s.once(self.conf, "--dry-run", *extra)
        self.assertNotIn("cycle committed", err)
        return [st.check_event(json.loads(line), "a dry-run line")
                for line in out.splitlines()], err

    def test_prints_the_events_and_writes_nothing(self):
        _, _, err = self.s.once(self.conf)
        self.assertIn("baseline recorded", err)
        self.s.tick(started=3, completed=2, vanished=1)
        before = redis_state(self.s.redis_port)
        self.assertTrue(any(k.startswith(b"sb:meta:") for k in before), before.keys())

        printed, err = self.dry_run()
        self.assertIn('"msg":"dry run: events printed; nothing delivered, nothing committed"', err)
        self.assertEqual(redis_state(self.s.redis_port), before, "the dry run wrote to Redis")
        self.assertNotIn("lease acquired", err)
        self.assertEqual(self.s.events(), [], "the dry run delivered to Kafka")
        want = st.expected_from_truth(self.s.truth(), SOURCE, after_tick=0)
        self.assertEqual({(e["subject"], e["type"]) for e in printed}, want)
        self.assertEqual(len(printed), len(want), "an event was printed twice")

        # Twice in a row: the same events, since nothing moved.
        again, _ = self.dry_run("--source", SOURCE)
        self.assertEqual([without_time(e) for e in again], [without_time(e) for e in printed])
        self.assertEqual(redis_state(self.s.redis_port), before)

        # A real run delivers exactly what the dry run printed.
        self.s.once(self.conf)
        delivered = [m["event"] for _, m in self.s.events()]
        key = lambda e: e["id"]  # noqa: E731
        self.assertEqual(sorted(map(without_time, delivered), key=key),
                         sorted(map(without_time, printed), key=key))

    def test_a_source_without_snapshot_stays_without(self):
        printed, err = self.dry_run()
        self.assertEqual(printed, [], "a baseline has no events")
        self.assertEqual(redis_state(self.s.redis_port), {}, "the dry run wrote to Redis")
        self.assertEqual(self.s.events(), [])

    def test_only_with_once(self):
        rc, _, err = self.s.bridge("run", "-c", self.conf, "--dry-run")
        self.assertEqual(rc, 2)
        self.assertIn("--dry-run goes with once, not run", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
