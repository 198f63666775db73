"""End to end for the admin endpoint of `run`: /metrics scraped and checked
by a real parser (promtool) and against the ground truth, /healthz staying
up while Redis is down and /readyz saying so, no secret in any output, and
an admin address that cannot be listened on failing the start."""

import base64
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "century"
SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of every sample (the format's
    grammar is checked by promtool; this only reads the values)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SERIES.match(line)
        if m is None:
            raise AssertionError(f"unparsable sample line: {line!r}")
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def get(url, timeout=5):
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class AdminEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=20, completed=5, seed=21)
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.token = "tok" + os.urandom(8).hex()

    def config(self):
        # A webhook whose receiver never answers: its events wait in the outbox.
        hook = {"name": "hook", "type": "webhook",
                "url": f"http://127.0.0.1:{st.free_port()}/in?token={self.token}",
                "secrets": [self.secret], "retry_schedule_s": [0, 600], "timeout_s": 2}
        bus = {"name": "bus", "type": "kafka", "brokers": self.s.bootstrap, "topics": st.TOPICS,
               "properties": {"message.timeout.ms": "5000"}}
        return self.s.config(SOURCE, sinks=[bus, hook])

    def admin_url(self, name="bridge-run"):
        return self.s.admin_url(name)

    def scrape(self, url):
        status, text = get(url + "/metrics")
        self.assertEqual(status, 200)
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        # promtool exits 1 for lint findings as well as for format errors;
        # we want neither.
        self.assertEqual(p.returncode, 0,
                         f"promtool check metrics: {p.stdout.decode()}{p.stderr.decode()}")
        return text, parse_metrics(text)

    def test_metrics_follow_the_cycles_and_probes_follow_redis(self):
        conf = self.config()
        self.s.once(conf)  # the baseline: no events
        self.s.start_bridge(conf)
        url = self.admin_url()
        st.wait_for(lambda: get(url + "/readyz")[0] == 200, timeout=20, what="ready")
        self.assertEqual(get(url + "/healthz"), (200, "ok\n"))

        self.s.tick(started=5, completed=4, vanished=2)
        want = st.expected_from_truth(self.s.truth(), SOURCE)
        ids = {st.event_id(SOURCE, sid, t) for sid, t in want}
        st.wait_for(lambda: {m["event"]["id"] for _, m in self.s.events()} == ids,
                    timeout=40, what="the tick's events in Kafka")
        by_type = collections.Counter(t.split(".")[1] for _, t in want)

        def outbox_full():
            return self.scrape(url)[1].get(
                ("session_bridge_outbox_depth", frozenset({("sink", "hook")}))) == len(want)
        # gauges read from Redis are refreshed every 5 s
        st.wait_for(outbox_full, timeout=20, what="the webhook's events counted in the outbox")
        text, m = self.scrape(url)

        def v(name, **labels):
            return m.get((name, frozenset(labels.items())))

        for t in ("started", "completed", "cancelled"):
            self.assertEqual(v("session_bridge_events_total", source=SOURCE, type=t), by_type[t],
                             f"events of type {t}")
        self.assertEqual(v("session_bridge_sink_deliveries_total", sink="bus", result="ok"),
                         len(want))
        self.assertEqual(v("session_bridge_sink_deliveries_total", sink="bus", result="failed"), 0)
        self.assertGreaterEqual(v("session_bridge_sink_deliveries_total", sink="hook",
                                  result="retry"), 1)
        self.assertEqual(v("session_bridge_dead_letters", sink="hook"), 0)
        self.assertEqual(v("session_bridge_sink_disabled", sink="hook"), 0)
        self.assertEqual(v("session_bridge_sink_fatal", sink="bus"), 0)
        self.assertEqual(v("session_bridge_sink_ready", sink="bus"), 1)
        self.assertEqual(v("session_bridge_lease_owned", source=SOURCE), 1)
        self.assertEqual(v("session_bridge_lease_lost_total", source=SOURCE), 0)
        self.assertGreaterEqual(v("session_bridge_polls_total", source=SOURCE, result="ok"), 1)
        self.assertEqual(v("session_bridge_polls_total", source=SOURCE, result="failed"), 0)
        self.assertGreaterEqual(v("session_bridge_http_requests_total", source=SOURCE,
                                  code="200"), 1)
        self.assertGreaterEqual(v("session_bridge_poll_duration_seconds_count", source=SOURCE), 1)
        self.assertEqual(v("session_bridge_build_info", version=self.version()), 1)
        now = time.time()
        self.assertLess(abs(now - v("session_bridge_heartbeat_timestamp_seconds")), 10)
        self.assertLess(now - v("session_bridge_last_success_timestamp_seconds", source=SOURCE),
                        10)
        # the sessions gauge equals the upstream population by state
        state = {}
        for t in self.s.truth():
            state[t["session_id"]] = t["to"]
        population = collections.Counter(s for s in state.values() if s != "gone")
        for s in ("pending", "active", "completed"):
            self.assertEqual(v("session_bridge_sessions", source=SOURCE, state=s), population[s],
                             f"sessions {s}")
        for secret in (self.secret, self.token, self.s.api_key):
            self.assertNotIn(secret, text)

        # Redis away: alive, not ready, errors counted; back: ready again.
        errors = v("session_bridge_redis_errors_total")
        self.s.stop_redis()
        st.wait_for(lambda: get(url + "/readyz") == (503, "not ready: redis unreachable\n"), timeout=20,
                    what="/readyz to report Redis")
        for _ in range(4):
            self.assertEqual(get(url + "/healthz")[0], 200, "liveness must not follow Redis")
            time.sleep(1)
        self.assertGreater(self.scrape(url)[1][("session_bridge_redis_errors_total",
                                                frozenset())], errors)
        self.s.start_redis()
        st.wait_for(lambda: get(url + "/readyz")[0] == 200, timeout=20, what="ready again")

        self.assertEqual(self.s.stop_bridge(), 0)
        log = self.s.log_of("bridge-run")
        for secret in (self.secret, self.token, self.s.api_key):
            self.assertNotIn(secret, log)

    def version(self):
        rc, out, _ = self.s.bridge("version")
        self.assertEqual(rc, 0)
        return out.split()[1]

    def test_busy_admin_address_fails_the_start(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            conf = self.s.config(SOURCE)
            with open(conf) as f:
                text = f.read().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
            with open(conf, "w") as f:
                f.write(text)
            p = self.s.start_bridge(conf)
            rc = p.wait(timeout=30)
        self.s.procs.pop("bridge-run")
        log = self.s.log_of("bridge-run")
        st.check_sanitizers(log, "session-bridge")
        self.assertEqual(rc, 1, log)
        self.assertIn('"msg":"cannot serve the admin endpoint"', log)
        self.assertIn(f"127.0.0.1:{port}", log)

    def test_readyz_says_shutting_down_during_the_grace(self):
        conf = self.s.config(SOURCE, sinks=[{
            "name": "bus", "type": "kafka", "brokers": self.s.bootstrap, "topics": st.TOPICS,
            "properties": {"message.timeout.ms": "30000"}}])
        self.s.once(conf)
        self.s.start_bridge(conf)
        url = self.admin_url()
        st.wait_for(lambda: get(url + "/readyz")[0] == 200, timeout=20, what="ready")
        # a cycle delivering to a broker that is down holds the stop
        self.s.kafka_down()
        self.s.tick(started=3)
        queued = ("session_bridge_sink_queue_depth", frozenset({("sink", "bus")}))
        st.wait_for(lambda: parse_metrics(get(url + "/metrics")[1]).get(queued, 0) > 0,
                    timeout=20, what="events waiting for the broker")
        self.s.procs["bridge-run"].send_signal(signal.SIGTERM)
        # the broker being down is a reason too: "shutting down; sink bus not ready"
        st.wait_for(lambda: get(url + "/readyz")[1].startswith("not ready: shutting down"),
                    timeout=10, what="/readyz to report the shutdown")
        self.assertEqual(get(url + "/readyz")[0], 503)
        self.assertEqual(get(url + "/healthz")[0], 200)
        self.s.kafka_up()
        p = self.s.procs.pop("bridge-run")
        self.assertEqual(p.wait(timeout=30), 0)
        st.check_sanitizers(self.s.log_of("bridge-run"), "session-bridge")
        # the cycle in flight finished within the grace: its events are out
        want = {st.event_id(SOURCE, sid, t)
                for sid, t in st.expected_from_truth(self.s.truth(), SOURCE)}
        self.assertEqual({m["event"]["id"] for _, m in self.s.events()}, want)

if __name__ == "__main__":
    unittest.main()
