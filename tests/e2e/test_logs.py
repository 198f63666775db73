"""End to end: logs for people (CONTRACT §8, issue 14). A quiet source (no
event, nothing changed, nothing failed) logs its cycles at debug and one
info summary per period instead; a cycle with events still logs at info;
durations are milliseconds (JSON) or a short unit (text), never seconds
in exponent notation; and stderr on a terminal gets text lines unless
SB_LOG_FORMAT says otherwise.

The summary's period is five minutes in production. SB_TEST_HOOK_SUMMARY_S
is a test hook, not a setting (bridge/engine.c, ENGINE_SUMMARY_HOOK_ENV):
it shortens the period so that this test sees summaries within seconds."""

import json
import os
import pty
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SUMMARY_S = 2
# Every duration a log line carries: milliseconds, a plain number.
DURATION_KEY = re.compile(r"_ms$")


def json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


class Logs(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack("logs")
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=3, completed=1, seed=7)

    def run_bridge(self, **env):
        path = self.s.config(interval_s=1)
        self.s.start_bridge(path, env=self.s.env(SB_TEST_HOOK_SUMMARY_S=str(SUMMARY_S), **env))
        st.wait_for(lambda: '"msg":"baseline recorded"' in self.s.log_of("bridge-run"),
                    timeout=30, what="the baseline")

    def lines(self, msg):
        return [ln for ln in json_lines(self.s.log_of("bridge-run")) if ln["msg"] == msg]

    def test_quiet_cycles_log_a_summary_not_a_line_each(self):
        self.run_bridge()
        st.wait_for(lambda: len(self.lines("source summary")) >= 2, timeout=30,
                    what="two summaries")
        # A cycle with events is still told at info, whole.
        self.s.tick(started=2)
        st.wait_for(lambda: self.lines("cycle committed"), timeout=30, what="the events' cycle")
        st.wait_for(lambda: len(self.lines("source summary")) >= 3, timeout=30,
                    what="the summary after the events")
        self.assertEqual(self.s.stop_bridge(), 0)

        committed = self.lines("cycle committed")
        self.assertEqual([c["events"] for c in committed], [2], committed)
        self.assertEqual(committed[0]["level"], "info")
        summaries = self.lines("source summary")
        for sm in summaries:
            self.assertEqual(sm["level"], "info")
            self.assertEqual(sm["source"], "century")
            self.assertEqual(sm["failed"], 0)
            self.assertGreaterEqual(sm["cycles"], 1)
            self.assertGreaterEqual(sm["period_ms"], SUMMARY_S * 1000)
            self.assertLess(sm["period_ms"], (SUMMARY_S + 3) * 1000)
            self.assertGreater(sm["last_cycle_ms"], 0)
        self.assertEqual(summaries[0]["sessions"], 4)
        self.assertEqual(summaries[-1]["sessions"], 6)
        self.assertEqual(sum(sm["events"] for sm in summaries), 2)
        # Quiet cycles happened (the summaries count them) and logged no
        # info line of their own.
        self.assertGreater(sum(sm["cycles"] for sm in summaries), len(committed) + 2)

        # Durations: milliseconds under *_ms, never seconds, never an exponent.
        for ln in self.s.log_of("bridge-run").splitlines():
            if not ln.startswith("{"):
                continue
            self.assertNotRegex(ln, r'"[a-z_]+_s":', ln)
            self.assertNotRegex(ln, r'":-?\d+(\.\d+)?e[-+]?\d+', ln)
            for key, value in json.loads(ln).items():
                if DURATION_KEY.search(key):
                    self.assertIsInstance(value, (int, float), ln)

    def test_debug_shows_every_cycle(self):
        self.run_bridge(SB_LOG_LEVEL="debug")
        st.wait_for(lambda: len(self.lines("cycle committed")) >= 2, timeout=30,
                    what="two quiet cycles")
        self.assertEqual(self.s.stop_bridge(), 0)
        quiet = self.lines("cycle committed")
        self.assertTrue(all(c["level"] == "debug" and c["events"] == 0 for c in quiet), quiet)

    def test_text_lines_on_a_terminal(self):
        """once with stderr on a pseudo-terminal and SB_LOG_FORMAT unset
        (empty): text lines, the cycle's durations with their unit."""
        path = self.s.config(interval_s=1)
        master, slave = pty.openpty()
        p = subprocess.Popen([st.BRIDGE, "once", "-c", path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=slave,
                             env=self.s.env(SB_LOG_FORMAT=""))
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        self.assertEqual(p.wait(timeout=60), 0)
        text = out.decode().replace("\r\n", "\n")
        st.check_sanitizers(text, "session-bridge")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        self.assertTrue(lines)
        for ln in lines:
            self.assertRegex(ln, st.TEXT_LOG_LINE)
        baseline = [ln for ln in lines if " baseline recorded " in ln]
        self.assertEqual(len(baseline), 1, text)
        self.assertRegex(baseline[0], r" source=century cycle=1 ")
        self.assertRegex(baseline[0], r" poll=\d+(\.\d+)?(µs|ms|s) ")
        self.assertNotIn("poll_ms", baseline[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
