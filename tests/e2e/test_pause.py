"""End to end: a provider that asks for a pause (429 or 503 with
Retry-After, as delta-seconds or as an HTTP-date) gets it beyond the poll
that failed on it, up to the bridge's named maximum, and the source's log
and metrics say it is paused. The provider is a small HTTP server on
loopback that answers every request that way and counts them."""

import email.utils
import http.server
import json
import os
import re
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

INTERVAL_S = 2
WINDOW_S = 20
# The bridge's ENGINE_MAX_PAUSE_S (bridge/engine/engine.c).
MAX_PAUSE_S = 3600
# The retry policy's attempts of one poll (bridge/http.c http_default_retry).
POLL_ATTEMPTS = 4


class Pausing(http.server.BaseHTTPRequestHandler):
    """Every request under /<name>/ gets the answer MODES[name] describes."""

    MODES = {
        # name: (status, Retry-After value as a function of now)
        "seconds": (429, lambda now: "300"),
        "date": (503, lambda now: email.utils.formatdate(now + 300, usegmt=True)),
        "huge": (429, lambda now: "100000"),
    }

    def do_GET(self):
        name = self.path.split("/")[1]
        with self.server.lock:
            self.server.hits.setdefault(name, []).append(time.time())
        status, value = self.MODES.get(name, (404, None))
        body = b'{"error":"slow down"}'
        self.send_response(status)
        if value is not None:
            self.send_header("Retry-After", value(time.time()))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(\w+)\{source="([^"]*)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


class PauseEndToEnd(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pausing)
        self.srv.hits, self.srv.lock = {}, threading.Lock()
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)

    def config(self, names):
        base = f"http://127.0.0.1:{self.srv.server_address[1]}"
        sources = [{"name": n, "provider": "century_smart_ia",
                    "base_url": f"{base}/{n}/api/v1",
                    "auth": {"api_key": "${TEST_CENTURY_KEY}"},
                    "interval_s": INTERVAL_S, "timeout_s": 5} for n in names]
        conf = {"redis": {"url": f"redis://127.0.0.1:{self.s.redis_port}/0", "prefix": "sb"},
                "admin": {"listen": "127.0.0.1:0"},
                "sources": sources, "sinks": [{"name": "console", "type": "stdout"}]}
        path = os.path.join(self.s.dir, "pause.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def metrics(self):
        m = st.wait_for(lambda: re.search(r'"msg":"admin endpoint listening".*?"port":(\d+)',
                                          self.s.log_of("bridge-run")),
                        timeout=20, what="the admin endpoint")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode())

    def warnings(self, name):
        out = []
        for line in self.s.log_of("bridge-run").splitlines():
            if line.startswith("{") and f'"source":"{name}"' in line and "source paused" in line:
                out.append(json.loads(line))
        return out

    def test_retry_after_pauses_the_source_up_to_the_maximum(self):
        names = list(Pausing.MODES)
        self.s.start_bridge(self.config(names))
        started = time.time()
        time.sleep(WINDOW_S)
        metrics = self.metrics()
        hits = {n: list(self.srv.hits.get(n, [])) for n in names}
        self.assertEqual(self.s.stop_bridge(), 0)

        for n in names:
            # One poll's attempts at most (over 120 s it gives up at once):
            # without the pause, interval_s 2 meant ~10 polls in 20 s.
            self.assertGreaterEqual(len(hits[n]), 1, f"{n}: never polled")
            self.assertLessEqual(len(hits[n]), POLL_ATTEMPTS, f"{n}: {len(hits[n])} requests "
                                 f"in {WINDOW_S} s despite Retry-After")
            warns = self.warnings(n)
            self.assertEqual(len(warns), 1, f"{n}: the pause is not logged once: {warns}")
            w = warns[0]
            self.assertEqual(w["level"], "warn")
            self.assertRegex(w["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            until = metrics[("session_bridge_paused_until_timestamp_seconds", n)]
            want = MAX_PAUSE_S if n == "huge" else 300
            # The pause runs from the answer: the last request.
            self.assertAlmostEqual(until, hits[n][-1] + want, delta=3,
                                   msg=f"{n}: paused until {until}")
            self.assertAlmostEqual(w["delay_ms"], want * 1000, delta=2000)
            self.assertGreater(until, started + WINDOW_S)
        self.assertEqual(self.warnings("huge")[0]["capped"], True)
        self.assertEqual(self.warnings("huge")[0]["retry_after_ms"], 100000 * 1000)
        self.assertEqual(self.warnings("seconds")[0]["capped"], False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
