"""End to end: no client, slow or idle, and no number of them, keeps the
admin endpoint of `run` from answering its probes (CONTRACT §8; issue 10,
item 1). Real sockets against the real binary, on loopback only, from
several source addresses of 127.0.0.0/8 (all loopback on Linux): idle
sockets, slow-loris clients sending a header line every second, and
more connections than the whole pool from the probes' own address (what
a NodePort behind SNAT does: every outside client gets the kubelet's
address). Each attack is one thread with a bounded number of sockets,
reconnecting when the server closes one, and stops by itself."""

import os
import re
import select
import socket
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "century"
# bridge/admin.h: ADMIN_DEFAULT_MAX_CONNECTIONS, ..._PER_IP
MAX_CONNECTIONS = 64
PER_IP = 8
# A kubelet gives up after timeoutSeconds (1 s by default); the bound
# leaves room for a machine loaded by the attack itself and sanitizers.
PROBE_BOUND_S = 1.5
PROBES = 10
PROBE_EVERY_S = 2.0
# Long enough for every probe and the deadlines (2 s) many times over.
ATTACK_S = 3 + PROBES * PROBE_EVERY_S + 3
# A client the server closed comes back after this: a steady pressure
# without a busy loop.
RECONNECT_S = 0.5
# Below the request deadline (2 s), so that lines do arrive before it cuts
# the client off; every line resets an idle timer, which is what starved
# the probes before the deadline counted from accept.
SLOW_LINE_EVERY_S = 1.0
PROBE_ADDRESS = "127.0.0.1"


class Attack(threading.Thread):
    """count sockets from the addresses given (round robin), each sending
    first (b"" for none) once connected, then line every line_every_s
    seconds (None: nothing more); a socket the server closes is opened
    again after RECONNECT_S. Stops at deadline (a monotonic time)."""

    def __init__(self, name, port, addresses, count, deadline, first=b"", line=None,
                 line_every_s=None):
        super().__init__(name=name, daemon=True)
        self.port, self.addresses, self.count, self.deadline = port, addresses, count, deadline
        self.first, self.line, self.line_every_s = first, line, line_every_s
        self.connects = 0
        self.closed_by_server = 0
        self.lines_sent = 0
        self.most_open = 0
        self.errors = []

    def _open(self, i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((self.addresses[i % len(self.addresses)], 0))
            s.settimeout(1.0)
            s.connect(("127.0.0.1", self.port))
            if self.first:
                s.sendall(self.first)
            s.setblocking(False)
        except OSError:
            s.close()
            return None
        self.connects += 1
        return s

    def run(self):
        socks = [None] * self.count
        due = [0.0] * self.count  # reconnect or next line
        try:
            while time.monotonic() < self.deadline:
                now = time.monotonic()
                for i in range(self.count):
                    if socks[i] is None and now >= due[i]:
                        socks[i] = self._open(i)
                        due[i] = now + (self.line_every_s or RECONNECT_S)
                    elif socks[i] is not None and self.line and now >= due[i]:
                        try:
                            socks[i].send(self.line)
                            self.lines_sent += 1
                        except OSError:
                            pass  # closed: seen below
                        due[i] = now + self.line_every_s
                live = [s for s in socks if s is not None]
                self.most_open = max(self.most_open, len(live))
                readable = select.select(live, [], [], 0.05)[0] if live else []
                if not live:
                    time.sleep(0.05)
                for s in readable:
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        continue  # an answer (MHD's 4xx to a bad line): the close follows
                    i = socks.index(s)
                    s.close()
                    socks[i] = None
                    due[i] = time.monotonic() + RECONNECT_S
                    self.closed_by_server += 1
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.errors.append(repr(e))
        finally:
            for s in socks:
                if s is not None:
                    s.close()


def probe(url, timeout):
    """(status or the error, seconds taken) of one GET on a new connection,
    as a kubelet sends it (Connection: close)."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError as e:
        status = repr(e)
    return status, time.monotonic() - t0


class AdminUnderAttack(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim(active=5, completed=2, seed=7)

    def test_probes_answer_through_idle_slow_and_flooding_clients(self):
        conf = self.s.config(SOURCE)
        self.s.start_bridge(conf)
        url = self.s.admin_url()
        port = int(url.rsplit(":", 1)[1])
        st.wait_for(lambda: probe(url + "/readyz", 5)[0] == 200, timeout=30, what="ready")

        start = time.monotonic()
        deadline = start + ATTACK_S
        attacks = [
            # more idle sockets than the old shared limit (32), from 5 addresses
            Attack("idle", port, [f"127.0.2.{i}" for i in range(1, 6)], 40, deadline),
            # slow-loris: 48 clients from 12 addresses, a header line every second
            Attack("slowloris", port, [f"127.0.3.{i}" for i in range(1, 13)], 48, deadline,
                   first=b"GET /healthz HTTP/1.1\r\nHost: x\r\n", line=b"X-Slow: 1\r\n",
                   line_every_s=SLOW_LINE_EVERY_S),
            # more than the whole pool from the probes' own address
            Attack("flood", port, [PROBE_ADDRESS], MAX_CONNECTIONS + 16, deadline),
        ]
        for i, a in enumerate(attacks):
            a.start()
            time.sleep(1.0)  # one after the other: idle, then slow, then the flood

        results = []
        for i in range(PROBES):
            for path in ("/healthz", "/readyz"):
                status, took = probe(url + path, PROBE_BOUND_S + 1)
                results.append((round(time.monotonic() - start, 1), path, status,
                                round(took, 3)))
            time.sleep(PROBE_EVERY_S)
        for a in attacks:
            a.join(timeout=ATTACK_S + 10)
            self.assertFalse(a.is_alive(), f"attack {a.name} did not stop")
            self.assertEqual(a.errors, [], f"attack {a.name}")

        report = "\n".join(str(r) for r in results) + "\n" + "\n".join(
            f"{a.name}: {a.connects} connects, {a.closed_by_server} closed by the server, "
            f"at most {a.most_open} open, {a.lines_sent} lines" for a in attacks)
        bad = [r for r in results if r[2] != 200 or r[3] > PROBE_BOUND_S]
        self.assertEqual(bad, [], f"probes not answered 200 within {PROBE_BOUND_S} s:\n{report}")
        print(report, file=sys.stderr)

        # the attacks were real: the pool was over its limits, and the
        # slow clients got their lines in before being cut off
        idle, slow, flood = attacks
        self.assertGreaterEqual(idle.most_open, 32)
        self.assertGreaterEqual(slow.most_open, 40)
        self.assertGreater(slow.lines_sent, 0)
        self.assertGreater(flood.most_open, MAX_CONNECTIONS)
        self.assertGreater(idle.closed_by_server, 0)
        self.assertGreater(slow.closed_by_server, 0)

        # the server says what it shed, in the metric and in few log lines
        status, took = probe(url + "/healthz", PROBE_BOUND_S)
        self.assertEqual(status, 200)
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        shed = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^session_bridge_admin_connections_shed_total\{reason="(\w+)"\} (\S+)$', text,
            re.M)}
        # (the pool is over its limit all along: the idle and slow clients
        # are mostly evicted before their deadline; unit.admin tests that)
        self.assertGreater(shed.get("evicted", 0), 0, text)
        self.assertEqual(self.s.stop_bridge(), 0)
        log = self.s.log_of("bridge-run")
        # thousands of connections shed, and the log says so in a line or two
        # of each kind (one a minute at most; this run is shorter)
        for msg in ("admin connections shed to keep the probes answered", "admin server"):
            lines = log.count(f'"msg":"{msg}"')
            self.assertGreaterEqual(lines, 1, msg)
            self.assertLessEqual(lines, 2, f"{msg}: one line a minute at most")


if __name__ == "__main__":
    unittest.main()
