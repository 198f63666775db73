"""Many sources in one process: polled concurrently, each with its own
snapshot, and a stuck provider never holds up the others."""

import json
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402


def century(stack, name, base_url=None, **extra):
    src = {"name": name, "provider": "century_smart_ia",
           "base_url": base_url or stack.sim_url + "/api/v1",
           "auth": {"api_key": "${TEST_CENTURY_KEY}"}, "interval_s": 1, "vanish_grace": 1}
    src.update(extra)
    return src


def write_config(stack, sources):
    conf = {"redis": {"url": f"redis://127.0.0.1:{stack.redis_port}/0"},
            "sources": sources,
            "sinks": [{"name": "bus", "type": "kafka", "brokers": stack.bootstrap,
                       "topics": st.TOPICS, "properties": {"message.timeout.ms": "5000"}}]}
    path = os.path.join(stack.dir, "many.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    return path


class BlackHole:
    """A TCP server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class ManySources(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=6, completed=2, seed=3)

    def test_hundreds_of_sources_in_one_cycle(self):
        n = 300
        path = write_config(self.s, [century(self.s, f"c{i:03d}", page_size=4)
                                     for i in range(n)])
        _, _, err = self.s.once(path)
        self.assertEqual(err.count('"msg":"baseline recorded"'), n)
        self.s.tick(started=2, completed=1, vanished=1)
        _, _, err = self.s.once(path)
        self.assertEqual(err.count('"msg":"cycle committed"'), n)
        # Each source published the upstream change on its own: 4 events
        # (2 started, 1 completed, 1 cancelled) times n, each id once.
        events = self.s.events()
        self.assertEqual(len(events), 4 * n)
        ids = {m["event"]["id"] for _, m in events}
        self.assertEqual(len(ids), 4 * n)
        for _, m in events:
            src = m["event"]["data"]["source"]
            self.assertEqual(m["event"]["id"],
                             st.event_id(src, m["event"]["subject"], m["event"]["type"]))
        # Every source kept its own snapshot.
        self.assertEqual(len(self.s.redis("KEYS", "sb:meta:*").split()), n)

    def test_a_stuck_provider_does_not_delay_the_others(self):
        hole = BlackHole()
        self.addCleanup(hole.close)
        stuck = century(self.s, "stuck", base_url=f"http://127.0.0.1:{hole.port}/api/v1",
                        timeout_s=2)
        path = write_config(self.s, [stuck, century(self.s, "healthy", page_size=3)])
        rc, _, err = self.s.once(path, expect=1)
        lines = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
        order = [(ln["msg"], ln.get("source")) for ln in lines]
        done = order.index(("baseline recorded", "healthy"))
        failed = order.index(("poll failed; nothing emitted, nothing committed", "stuck"))
        self.assertLess(done, failed, "the healthy source waited for the stuck one")
        self.assertIn("after 4 attempts", lines[failed]["error"])
        self.assertEqual(self.s.snapshot_meta("stuck"), {})
        self.assertTrue(self.s.snapshot_meta("healthy"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
