"""End to end: two bridges on one Redis and one broker. Sources are spread
over both and each event reaches Kafka once; a holder paused past its lease
TTL is replaced, its late commit is refused, and no event is lost."""

import collections
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

TTL = 4


class Replicas(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=20, completed=5, seed=5)

    def config(self, names):
        path = self.s.config(names[0])
        with open(path) as f:
            conf = json.load(f)
        base = conf["sources"][0]
        conf["sources"] = [dict(base, name=n) for n in names]
        conf["lease_ttl_s"] = TTL
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def want(self, names):
        truth = self.s.truth()
        return collections.Counter(
            st.event_id(n, sid, t) for n in names
            for sid, t in st.expected_from_truth(truth, n))

    def got(self):
        return collections.Counter(m["event"]["id"] for _, m in self.s.events())

    def holders(self, name):
        """The replicas whose log says they acquired the lease of source name."""
        return [r for r in ("a", "b") if r in self.s.procs
                and f'"msg":"lease acquired","source":"{name}"' in self.s.log_of(r)]

    def test_two_replicas_spread_the_sources_and_publish_each_event_once(self):
        names = [f"src{i}" for i in range(6)]
        conf = self.config(names)
        self.s.once(conf)  # baselines
        self.s.start_bridge(conf, name="a")
        self.s.start_bridge(conf, name="b")
        for _ in range(3):
            self.s.tick(started=4, completed=3, vanished=1)
            want = self.want(names)
            st.wait_for(lambda: set(self.got()) == set(want), timeout=40,
                        what="every source's events in Kafka")
        time.sleep(2)  # anything published twice would show up by now
        self.assertEqual(self.got(), want, "an event was published twice or is missing")
        for r in ("a", "b"):
            held = [n for n in names if f'"msg":"cycle committed","source":"{n}"'
                    in self.s.log_of(r)]
            self.assertTrue(held, f"replica {r} polled nothing: sources were not spread")
        self.assertEqual(self.s.stop_bridge("a"), 0)
        self.assertEqual(self.s.stop_bridge("b"), 0)
        self.assertEqual(self.s.redis("KEYS", "sb:lease:*"), "", "leases not released at exit")

    def test_paused_holder_is_replaced_and_its_late_commit_refused(self):
        names = ["solo"]
        conf = self.config(names)
        self.s.once(conf)
        self.s.start_bridge(conf, name="a")
        st.wait_for(lambda: self.holders("solo") == ["a"], timeout=20, what="a to hold the lease")
        self.s.start_bridge(conf, name="b")
        # a polls, hands the events to a broker that is down, and freezes
        # before any acknowledgement: its cycle is in flight, uncommitted.
        self.s.kafka_down()
        self.s.tick(started=5, completed=3, vanished=1)
        time.sleep(2)  # interval_s is 1: a has polled and is waiting for acks
        self.s.procs["a"].send_signal(signal.SIGSTOP)
        commits = self.s.log_of("a").count('"msg":"cycle committed"')
        self.s.kafka_up()
        st.wait_for(lambda: "b" in self.holders("solo"), timeout=4 * TTL,
                    what="b to take the lease over")
        want = self.want(names)
        st.wait_for(lambda: set(self.got()) >= set(want), timeout=40,
                    what="b to deliver the events")
        self.s.procs["a"].send_signal(signal.SIGCONT)
        st.wait_for(lambda: "lease lost" in self.s.log_of("a")
                    or "commit refused" in self.s.log_of("a"), timeout=20,
                    what="a to notice it lost the lease")
        time.sleep(2)
        self.assertEqual(self.s.log_of("a").count('"msg":"cycle committed"'), commits,
                         "a stale holder committed")
        # Nothing lost; a's late deliveries may repeat ids (at least once).
        self.assertEqual(set(self.got()), set(want))
        self.s.tick(started=3, completed=2)
        want = self.want(names)
        st.wait_for(lambda: set(self.got()) == set(want), timeout=40,
                    what="the next tick's events")
        self.assertEqual(self.s.stop_bridge("a"), 0)
        self.assertEqual(self.s.stop_bridge("b"), 0)

    def test_terminated_replica_hands_its_sources_over(self):
        names = [f"src{i}" for i in range(4)]
        conf = self.config(names)
        self.s.once(conf)
        self.s.start_bridge(conf, name="a")
        self.s.start_bridge(conf, name="b")
        st.wait_for(lambda: all(self.holders(n) for n in names), timeout=20,
                    what="every source leased")
        # a, started first, holds at least its fair share (2) throughout
        st.wait_for(lambda: any("b" in self.holders(n) for n in names), timeout=30,
                    what="the sources spread over both replicas")
        # a rolling update: a leaves with SIGTERM and releases its leases
        self.assertEqual(self.s.stop_bridge("a"), 0)
        t0 = time.monotonic()
        st.wait_for(lambda: all("b" in self.holders(n) for n in names), timeout=TTL + 2,
                    what="b to hold every source within the lease TTL")
        self.assertLess(time.monotonic() - t0, TTL + 2)
        self.s.tick(started=4, completed=3, vanished=1)
        want = self.want(names)
        st.wait_for(lambda: set(self.got()) == set(want), timeout=40,
                    what="every source's events from b alone")
        self.assertEqual(self.s.stop_bridge("b"), 0)

    def test_sigterm_with_a_cycle_stuck_exits_0_within_the_grace(self):
        names = ["slow"]
        conf = self.config(names)
        with open(conf) as f:
            c = json.load(f)
        c["shutdown_grace_s"] = 3
        c["sinks"][0]["properties"]["message.timeout.ms"] = "60000"
        with open(conf, "w") as f:
            json.dump(c, f)
        self.s.once(conf)
        p = self.s.start_bridge(conf, name="a")
        self.s.kafka_down()
        self.s.tick(started=5)
        st.wait_for(lambda: "lease acquired" in self.s.log_of("a"), timeout=20, what="a")
        time.sleep(2)  # the cycle now waits for acks that cannot come
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        self.assertLess(time.monotonic() - t0, 3 + 2, "the grace was not kept")
        log = self.s.log_of("a")
        self.assertIn("shutdown grace exceeded", log)
        self.assertNotIn('"msg":"cycle committed","source":"slow","cycle":3', log)
        self.assertEqual(self.s.redis("KEYS", "sb:lease:*"), "", "lease not released")
        self.s.procs.pop("a")


if __name__ == "__main__":
    unittest.main()
