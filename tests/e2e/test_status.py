"""End to end: `session-bridge status` from a third process while two
replicas of `run` work on a real stack (redis-server, the Kafka mock, the
provider simulator). What it says is held to what Redis holds (lease
holders, snapshot sizes, outbox and dead-letter counts, a failing source's
last error), and it writes nothing: Redis's keys are the same before and
after, and the only commands it sent are reads."""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

GOOD = ["src0", "src1", "src2"]
WRONG_KEY = "wrong-" + os.urandom(6).hex()
# Long enough that frozen replicas keep their leases while the test reads.
TTL = 30
# What status may send: reads only (INFO commandstats names them lowercase).
READS = {"ping", "hmget", "getrange", "pttl", "scan", "hlen", "get", "auth", "select", "info",
         "config|resetstat", "config"}


class Status(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=20, completed=5, seed=7)
        secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
        self.gone = Receiver(st.free_port(), [secret])
        self.gone.mode = "gone"
        self.gone.start()
        self.addCleanup(self.gone.stop)
        self.secret = secret

    def config(self, names, broken=True, ttl=TTL):
        path = self.s.config(names[0])
        with open(path) as f:
            conf = json.load(f)
        base = conf["sources"][0]
        conf["sources"] = [dict(base, name=n) for n in names]
        if broken:
            conf["sources"].append(dict(base, name="broken", auth={"api_key": WRONG_KEY}))
        conf["lease_ttl_s"] = ttl
        conf["sinks"].append({"name": "gone", "type": "webhook", "url": self.gone.url,
                              "secret": self.secret, "retry_schedule_s": [0], "timeout_s": 2})
        # Nobody listens there, and the next attempt is an hour away: its
        # events stay in the outbox.
        conf["sinks"].append({"name": "stuck", "type": "webhook",
                              "url": f"http://127.0.0.1:{st.free_port()}/hook",
                              "secret": self.secret, "retry_schedule_s": [0, 3600],
                              "timeout_s": 1})
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def status(self, conf, *extra, expect=0):
        rc, out, err = self.s.bridge("status", "-c", conf, *extra)
        self.assertEqual(rc, expect, f"status exited {rc}:\n{err}")
        for secret in (WRONG_KEY, self.s.api_key, self.secret, self.secret[6:]):
            self.assertNotIn(secret, out + err, "a secret reached status's output")
        return out, err

    def status_json(self, conf, *extra):
        out, _ = self.status(conf, "--json", *extra)
        lines = out.splitlines()
        self.assertEqual(len(lines), 1, "--json prints one object on one line")
        return json.loads(lines[0])

    def redis_state(self):
        """DBSIZE, every key, and what each holds (DUMP: the value's bytes)."""
        keys = sorted(k for k in self.s.redis("KEYS", "*").split("\n") if k)
        return (self.s.redis("DBSIZE"), keys,
                {k: subprocess_dump(self.s.redis_port, k) for k in keys})

    def check_frozen(self, conf, pids):
        """With every replica stopped: status against Redis, and Redis unchanged."""
        before = self.redis_state()
        self.s.redis("CONFIG", "RESETSTAT")
        table, _ = self.status(conf)
        doc = self.status_json(conf)
        sent = self.s.redis("INFO", "commandstats")
        after = self.redis_state()
        self.assertEqual(before, after, "status changed Redis")
        cmds = {line.split(":")[0][len("cmdstat_"):] for line in sent.splitlines()
                if line.startswith("cmdstat_")}
        self.assertLessEqual(cmds, READS, f"status sent a command that is not a read: {cmds}")
        self.assertIn("hmget", cmds, "status read nothing?")

        by = {x["name"]: x for x in doc["sources"]}
        self.assertEqual(sorted(by), sorted(GOOD + ["broken"]))
        for name, x in by.items():
            self.assertTrue(x["configured"])
            holder = self.s.redis("GET", f"sb:lease:{name}")
            self.assertEqual(x["lease"]["holder"], holder, name)
            record = json.loads(self.s.redis("GET", f"sb:replica:{holder}"))
            self.assertEqual(x["lease"]["replica"]["pid"], record["pid"], name)
            self.assertIn(record["pid"], pids)
            self.assertTrue(0 < x["lease"]["ttl_ms"] <= TTL * 1000)
            self.assertIn(f"{record['host']} pid {record['pid']}", table)
        for name in GOOD:
            x = by[name]
            self.assertEqual(x["sessions"], int(self.s.redis("HLEN", f"sb:snap:{name}")), name)
            self.assertEqual(x["last_commit"]["cycle"],
                             int(self.s.snapshot_meta(name)["cycle"]), name)
            self.assertEqual(x["last_poll"]["outcome"], "ok", name)
            self.assertIsNone(x["last_poll"]["error"])
        self.assertIsNone(by["broken"]["last_commit"])
        self.assertEqual(by["broken"]["last_poll"]["outcome"], "failed")
        self.assertIn("401", by["broken"]["last_poll"]["error"])
        self.assertIn("broken: poll failed", table)
        self.assertIn("gone: HTTP 410", table)

        sinks = {k["name"]: k for k in doc["sinks"]}
        self.assertEqual(sorted(sinks), ["bus", "gone", "stuck"])
        for k in ("bus", "gone", "stuck"):
            self.assertEqual(sinks[k]["dead_letters"],
                             int(self.s.redis("HLEN", f"sb:dlq:{k}")), k)
        for k in ("gone", "stuck"):
            self.assertEqual(sinks[k]["outbox"], int(self.s.redis("HLEN", f"sb:ob:{k}")), k)
        self.assertGreater(sinks["gone"]["dead_letters"], 0)
        self.assertGreater(sinks["stuck"]["outbox"], 0)
        self.assertIsNone(sinks["bus"]["outbox"])
        self.assertTrue(sinks["gone"]["disabled"])
        self.assertTrue(sinks["gone"]["disabled_reason"])
        self.assertFalse(sinks["stuck"]["disabled"])
        for title in ("SOURCE", "LEASE HOLDER", "SINK", "DEAD LETTERS"):
            self.assertIn(title, table)

    def test_two_replicas_seen_from_a_third_process_as_redis_holds_them(self):
        conf = self.config(GOOD)
        self.s.once(conf, expect=1)  # baselines; broken fails (401)
        a = self.s.start_bridge(conf, name="a")
        b = self.s.start_bridge(conf, name="b")
        pids = {a.pid, b.pid}
        self.s.tick(started=4, completed=3, vanished=1)

        def settled():
            """Every source leased, the good ones committed since the tick,
            the webhooks' events in their outbox and dead letters."""
            doc = self.status_json(conf)
            by = {x["name"]: x for x in doc["sources"]}
            sinks = {k["name"]: k for k in doc["sinks"]}
            # Balanced, not only shared: while the first replica hands the
            # second its fair share, a released lease has no holder for a
            # moment, and a freeze then would catch a source nobody holds.
            held = [x["lease"]["replica"]["pid"] for x in by.values()
                    if x["lease"] and x["lease"]["replica"]]
            balanced = (len(held) == len(by)
                        and sorted(held.count(p) for p in pids) == [len(by) // 2] * 2)
            committed = all(by[n]["last_commit"] and by[n]["last_commit"]["cycle"] >= 2
                            for n in GOOD)
            return (balanced and committed and by["broken"]["last_poll"]
                    and sinks["gone"]["dead_letters"] > 0 and sinks["stuck"]["outbox"] > 0)
        st.wait_for(settled, timeout=60, what="both replicas holding sources, the sinks filled")

        # Frozen, so that Redis holds still: what status says is what Redis holds.
        for p in (a, b):
            p.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.5)
            self.check_frozen(conf, pids)
        finally:
            for p in (a, b):
                p.send_signal(signal.SIGCONT)

        # While they run too: the same holders, from any process.
        doc = self.status_json(conf, "--source", "src0")
        self.assertEqual([x["name"] for x in doc["sources"]], ["src0"])
        self.assertIn(doc["sources"][0]["lease"]["replica"]["pid"], pids)
        self.assertEqual(self.s.stop_bridge("a"), 0)
        self.assertEqual(self.s.stop_bridge("b"), 0)
        # Leases released and membership left at exit: nobody holds anything.
        doc = self.status_json(conf)
        self.assertEqual([x["lease"] for x in doc["sources"]], [None] * 4)
        self.assertEqual(self.s.redis("KEYS", "sb:replica:*"), "")

    def test_exit_codes_leftovers_and_a_lease_without_a_record(self):
        conf = self.config(["alpha", "removed"], broken=False)
        self.s.once(conf)
        now = self.config(["alpha"], broken=False)

        # A source removed from the configuration is still shown, marked.
        doc = self.status_json(now)
        by = {x["name"]: x for x in doc["sources"]}
        self.assertEqual(sorted(by), ["alpha", "removed"])
        self.assertTrue(by["alpha"]["configured"])
        self.assertFalse(by["removed"]["configured"])
        self.assertIsNone(by["alpha"]["lease"], "once released its lease")
        self.assertEqual(by["alpha"]["last_poll"]["outcome"], "ok", "once wrote its last poll")
        table, _ = self.status(now)
        self.assertIn("removed *", table)
        self.assertIn("not in the configuration", table)

        # A lease written without a replica record (an older version): its token alone.
        token = os.urandom(16).hex()
        self.s.redis("SET", "sb:lease:alpha", token, "PX", "20000")
        doc = self.status_json(now, "--source", "alpha")
        self.assertEqual(doc["sources"][0]["lease"]["holder"], token)
        self.assertIsNone(doc["sources"][0]["lease"]["replica"])
        table, _ = self.status(now, "--source", "alpha")
        self.assertIn(f"token {token[:8]}...", table)
        self.assertNotIn("removed", table)

        # --source: a removed source Redis still holds, or a typo (usage error).
        doc = self.status_json(now, "--source", "removed")
        self.assertFalse(doc["sources"][0]["configured"])
        _, err = self.status(now, "--source", "alpah", expect=2)
        self.assertIn('no source named "alpah"', err)

        # Redis unreachable: one line, exit 1.
        with open(now) as f:
            c = json.load(f)
        c["redis"]["url"] = f"redis://:hunter2-pw@127.0.0.1:{st.free_port()}/0"
        down = os.path.join(self.s.dir, "down.json")
        with open(down, "w") as f:
            json.dump(c, f)
        out, err = self.status(down, expect=1)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("redis 127.0.0.1:", err)
        self.assertNotIn("hunter2", err)

        # An invalid configuration: 78, and its problems named.
        c["sources"][0]["interval_s"] = "often"
        with open(down, "w") as f:
            json.dump(c, f)
        _, err = self.status(down, expect=78)
        self.assertIn("interval_s", err)
        _, err = self.status(now, "--sink", "bus", expect=2)


def subprocess_dump(port, key):
    """DUMP of key as bytes (redis-cli --raw would mangle the binary)."""
    import subprocess
    out = subprocess.run(["redis-cli", "-p", str(port), "--no-raw", "DUMP", key],
                         check=True, capture_output=True, timeout=15)
    return out.stdout


if __name__ == "__main__":
    unittest.main()
