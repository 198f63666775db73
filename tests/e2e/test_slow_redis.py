"""End to end: a slow Redis holds nobody. Redis sits behind a proxy that
delays its replies (tests/bench/delay_proxy.py); with every reply 2 s late,
the loop of an idle `run` keeps turning: the heartbeat gauge, set by a
loop timer every second, stays fresh, and /healthz answers ok, while the
readiness PINGs, the member beats and the lease renewals (every lease
TTL / 3) wait for their replies. When those calls blocked the loop, each
one stalled it for its round trip (a beat, three of them)."""

import json
import os
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import stack as st  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

REPLY_DELAY_S = 2.0
WINDOW_S = 8.0
# The gauge is set every ENGINE_GAUGES_S (1 s), in practice every other
# tick (a tick that fires a hair early skips: ages reach ~2.2 s on an idle,
# healthy bridge), and a scrape may reuse a render for
# ADMIN_METRICS_REUSE_MS (0.5 s): older than this, the loop stalled. A loop
# that blocks on these calls shows ~9 s.
MAX_HEARTBEAT_AGE_S = 3.0


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def heartbeat(text):
    for line in text.splitlines():
        if line.startswith("session_bridge_heartbeat_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no heartbeat gauge in /metrics")


class SlowRedisTest(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack("slow-redis")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=3, completed=1, seed=5)
        self.proxy = DelayProxy(self.s.redis_port)
        self.addCleanup(self.proxy.close)

    def test_loop_keeps_turning_while_redis_is_slow(self):
        path = self.s.config(interval_s=60, initial_snapshot="emit")
        with open(path) as f:
            conf = json.load(f)
        conf["redis"]["url"] = f"redis://127.0.0.1:{self.proxy.port}/0"
        with open(path, "w") as f:
            json.dump(conf, f)
        self.s.start_bridge(path)
        url = self.s.admin_url()
        st.wait_for(lambda: "cycle committed" in self.s.log_of("bridge-run"), timeout=30,
                    what="the first cycle")
        self.assertEqual(len(self.s.events()), 5)

        mark = len(self.s.log_of("bridge-run"))
        self.proxy.delay_s = REPLY_DELAY_S
        time.sleep(1.0)
        worst, unhealthy, ages, t_end = 0.0, [], [], time.monotonic() + WINDOW_S
        while time.monotonic() < t_end:
            status, text = get(url + "/metrics")
            self.assertEqual(status, 200)
            age = time.time() - heartbeat(text)
            ages.append(round(age, 2))
            worst = max(worst, age)
            status, text = get(url + "/healthz")
            if status != 200:
                unhealthy.append(text)
            time.sleep(0.2)
        self.assertLess(worst, MAX_HEARTBEAT_AGE_S,
                        f"the loop stalled: its heartbeat was {worst:.1f} s old with every "
                        f"Redis reply {REPLY_DELAY_S} s late; ages {ages}")
        self.assertEqual(unhealthy, [])
        # the calls made meanwhile were answered, late: the leases held
        log = self.s.log_of("bridge-run")[mark:]
        self.assertNotIn("lease lost", log)
        self.assertNotIn("redis unreachable", log)

        self.proxy.delay_s = 0.0
        time.sleep(REPLY_DELAY_S + 0.5)
        self.assertEqual(self.s.stop_bridge(), 0)


if __name__ == "__main__":
    unittest.main()
