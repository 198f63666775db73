"""End to end: the bridge runs on one event loop. An idle `run` (its
cycles a minute apart) sleeps until its next timer instead of waking on a
fixed short period, a SIGTERM wakes it at once, and events still reach
Kafka and the file sink while it sleeps between them. Wake-ups are the
loop thread's context switches (/proc/PID/task/PID/status); librdkafka's
and the admin server's own threads are not counted."""

import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

WINDOW_S = 4.0
IDLE_LEASE_TTL_S = 60
# What the loop thread may do per second while idle: the metrics tick (1/s,
# with a PING and a few counts every 5 s, each a blocking Redis round trip)
# and librdkafka's occasional wake-ups on the main queue. The polling loop
# this replaced woke at least every 100 ms (10/s) while idle.
MAX_IDLE_WAKEUPS_PER_S = 5.0


def loop_switches(pid):
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        text = f.read()
    return sum(int(v) for v in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", text, re.M))


class LoopTest(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack("loop")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=3, completed=1, seed=4)

    def idle_config(self, sinks=None):
        path = self.s.config(interval_s=60, initial_snapshot="emit", sinks=sinks)
        with open(path) as f:
            conf = json.load(f)
        # Lease beats and renewals are Redis round trips (a wake-up for each
        # reply): a long TTL keeps them out of the window, which then
        # counts the loop's own wake-ups.
        conf["lease_ttl_s"] = IDLE_LEASE_TTL_S
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def test_idle_bridge_sleeps_until_its_next_timer(self):
        out = os.path.join(self.s.dir, "events.jsonl")
        sinks = [{"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
                  "topics": st.TOPICS, "properties": {"message.timeout.ms": "5000"}},
                 {"name": "file", "type": "file", "path": out, "fsync": "always"}]
        p = self.s.start_bridge(self.idle_config(sinks))
        st.wait_for(lambda: "cycle committed" in self.s.log_of("bridge-run"), timeout=30,
                    what="the first cycle")
        # delivered through both sinks while the loop sleeps between events:
        # 3 started, and the completed one's synthesized started and completed
        self.assertEqual(len(self.s.events()), 5)
        with open(out) as f:
            self.assertEqual(len([json.loads(line) for line in f]), 5)
        time.sleep(1.0)
        n0, t0 = loop_switches(p.pid), time.monotonic()
        time.sleep(WINDOW_S)
        rate = (loop_switches(p.pid) - n0) / (time.monotonic() - t0)
        self.assertLess(rate, MAX_IDLE_WAKEUPS_PER_S,
                        f"the idle loop woke {rate:.1f} times a second")
        self.assertEqual(self.s.stop_bridge(), 0)

    def test_sigterm_wakes_a_sleeping_bridge_at_once(self):
        p = self.s.start_bridge(self.idle_config())
        st.wait_for(lambda: "cycle committed" in self.s.log_of("bridge-run"), timeout=30,
                    what="the first cycle")
        time.sleep(0.5)
        t0 = time.monotonic()
        self.assertEqual(self.s.stop_bridge(), 0)
        self.assertLess(time.monotonic() - t0, 2.0)
        log = self.s.log_of("bridge-run")
        self.assertIn("stop requested", log)
        self.assertIn('"msg":"exiting"', log)
        del p


if __name__ == "__main__":
    unittest.main()
