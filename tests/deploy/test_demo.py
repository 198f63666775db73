"""deploy/demo.sh as a newcomer runs it, on the build under test
(SB_BUILD_DIR: no deps.sh, no build) with a short DEMO_SECONDS: it shows
events from the stdout sink and from Kafka and exits 0; and when a process
it started dies (here the bridge, whose admin port 9464 is taken), it says
which, shows the end of that process's log, stops everything else and
exits 1 at once rather than showing its banner for the whole run."""

import errno
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import time
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo.sh"
ADMIN = ("127.0.0.1", 9464)  # admin.listen of conf/demo.json
# Long enough for kcat to join its group and read the first events back.
RUN_S = 12
# A failure must be reported this soon, far below DEMO_SECONDS.
FAIL_WITHIN_S = 15
FAILING_RUN_S = 120


def build_dir(test):
    build = pathlib.Path(os.environ.get("SB_BUILD_DIR") or ROOT / "build")
    if not (build / "bridge" / "session-bridge").is_file():
        test.skipTest(f"no build at {build} (set SB_BUILD_DIR to a build directory)")
    return build


def hold(addr):
    """A listening socket on addr, or None when another process has it already."""
    s = socket.socket()
    try:
        s.bind(addr)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    s.listen()
    return s


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Demo(unittest.TestCase):
    def run_demo(self, seconds):
        tmp = tempfile.mkdtemp(prefix="sb-demo-")
        env = {**os.environ, "SB_BUILD_DIR": str(build_dir(self)), "DEMO_DIR": tmp,
               "DEMO_SECONDS": str(seconds)}
        start = time.monotonic()
        p = subprocess.run(["bash", str(DEMO)], env=env, capture_output=True, text=True,
                           timeout=seconds + 60, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - start

    def assert_stack_stopped(self, out):
        m = re.search(r"local stack: redis redis://127\.0\.0\.1:(\d+)/0", out)
        self.assertIsNotNone(m, out)
        self.assertFalse(port_open(int(m.group(1))), "redis-server left running")

    def test_taken_admin_port_fails_loudly_and_stops_the_stack(self):
        held = hold(ADMIN)  # None: something else holds it, which is the case under test too
        try:
            rc, out, err, took = self.run_demo(FAILING_RUN_S)
        finally:
            if held:
                held.close()
        self.assertEqual(rc, 1, out + err)
        self.assertLess(took, FAIL_WITHIN_S, "the failure was not noticed at once")
        self.assertIn("demo: the bridge (session-bridge run) exited (status 1)", err)
        self.assertIn("the last lines of", err)
        self.assertIn("cannot serve the admin endpoint", err)  # from the bridge's own log
        self.assertIn("Address already in use", err)
        self.assertIn("==> stopped", out)
        self.assert_stack_stopped(out)

    def test_runs_shows_events_and_stops(self):
        free = hold(ADMIN)
        if free is None:
            self.skipTest("127.0.0.1:9464 is taken by another process")
        free.close()
        rc, out, err, _ = self.run_demo(RUN_S)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("demo:", err)
        self.assertRegex(out, r"\nstdout session\.started +century-demo/")
        self.assertRegex(out, r"\nkafka  sessions\.started  key=century-demo/")
        self.assert_stack_stopped(out)


if __name__ == "__main__":
    unittest.main()
