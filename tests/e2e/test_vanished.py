"""End to end: the last record of a session that vanishes (CONTRACT §6).

A stub Century provider serves records with formatting no serializer would
reproduce (spaces, escapes, a trailing zero), so that the cancelled event of
a vanished session can be checked to carry its last record byte for byte as
received. Every cycle is a separate `once` process: the record comes from
Redis (sb:rec:<source>), not from the memory of the process that saw it. A
session that completes leaves no record behind, and a session whose record
Redis lacks (state from before records were kept) vanishes with a null
session, counted in the cycle's log line and not logged per event."""

import json
import os
import subprocess
import sys
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

SOURCE = "century"
REC_KEY = f"sb:rec:{SOURCE}"


def record(sid, status, extra):
    # Deliberately odd but valid JSON: what the event must carry unchanged.
    return ('{ "sessionId" : "%s","status":"%s" , "note": "caf\\u00e9 \u00e9t\u00e9",'
            ' "score" : 1.50, "extra":%s ,"nested":{"a":[1, 2 ,3]} }' % (sid, status, extra))


class Provider:
    """Century's two lists, one page each, served from in_progress and
    completed: dicts session id -> record text."""

    def __init__(self):
        self.in_progress = {}
        self.completed = {}
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with provider.lock:
                    src = provider.in_progress if "in-progress" in self.path else provider.completed
                    body = ('{"data":[%s],"pagination":{"nextCursor":null}}'
                            % ",".join(src.values())).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class VanishedRecord(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka()
        self.p = Provider()
        self.addCleanup(self.p.close)
        self.s.sim_url = self.p.url[: -len("/api/v1")]  # config() appends it
        self.conf = self.s.config(SOURCE)

    def once(self):
        _, _, err = self.s.once(self.conf)
        return err

    def stored(self, sid):
        """The record Redis keeps for sid, as bytes, or None."""
        if self.s.redis("HEXISTS", REC_KEY, sid) != "1":
            return None
        out = subprocess.run(["redis-cli", "-p", str(self.s.redis_port), "--raw",
                                 "HGET", REC_KEY, sid], check=True, capture_output=True)
        return out.stdout[:-1]  # redis-cli ends the value with a newline

    def cancelled(self):
        return {m["event"]["subject"]: m for k, m in self.s.events() if k == "cancelled"}

    def test_more_vanished_than_one_read_each_carry_their_record(self):
        # The last records are read STORE_BATCH (1,000) at a time, the next
        # window asked for from the answer of the last: 2,500 take three.
        n = 2500
        self.p.in_progress.update({f"v{i}": record(f"v{i}", "IN_PROGRESS", str(i))
                                   for i in range(n)})
        self.once()
        self.assertEqual(self.s.redis("HLEN", REC_KEY), str(n))
        self.p.in_progress.clear()
        err = self.once()
        got = self.cancelled()
        self.assertEqual(len(got), n)
        for i in (0, 999, 1000, 1999, 2000, n - 1):
            self.assertEqual(got[f"v{i}"]["event"]["data"]["session"]["extra"], i)
        self.assertTrue(all(m["event"]["data"]["session"] is not None for m in got.values()))
        self.assertIn('"vanished_without_record":0', err)

    def test_vanished_session_carries_its_last_record(self):
        p = self.p
        r1 = record("s1", "IN_PROGRESS", '"first"')
        r2a, r2b = record("s2", "IN_PROGRESS", "[]"), record("s2", "IN_PROGRESS", '{"v": 2}')
        r3, r3done = record("s3", "IN_PROGRESS", "null"), record("s3", "COMPLETED", "true")
        p.in_progress.update(s1=r1, s2=r2a, s3=r3)

        # a baseline records every session, and their records with it
        self.once()
        self.assertEqual(self.stored("s1"), r1.encode())
        self.assertEqual(self.stored("s2"), r2a.encode())
        self.assertEqual(self.stored("s3"), r3.encode())

        # a changed record replaces the stored one, without an event
        p.in_progress["s2"] = r2b
        self.once()
        self.assertEqual(self.stored("s2"), r2b.encode())
        self.assertEqual(self.s.redis("HLEN", REC_KEY), "3")

        # a session that completes leaves no record behind
        del p.in_progress["s3"]
        p.completed["s3"] = r3done
        self.once()
        self.assertIsNone(self.stored("s3"))
        self.assertEqual(self.s.redis("HLEN", REC_KEY), "2")

        # every session goes; a new process reads the records from Redis
        p.in_progress.clear()
        p.completed.clear()
        err = self.once()
        got = self.cancelled()
        self.assertEqual(set(got), {"s1", "s2"}, "a terminal session gone is forgotten silently")
        for sid, raw in (("s1", r1), ("s2", r2b)):
            ev = got[sid]["event"]
            self.assertEqual(ev["data"]["reason"], "vanished")
            self.assertIsNone(ev["data"]["status"])
            self.assertEqual(ev["data"]["previous_status"], "IN_PROGRESS")
            self.assertEqual(ev["data"]["session"], json.loads(raw))
            # byte for byte: the payload holds the record as received
            self.assertIn('"session":' + raw + "}", got[sid]["payload"])
        self.assertEqual(self.s.redis("HLEN", REC_KEY), "0", "records of forgotten sessions stay")
        self.assertEqual(self.s.redis("HLEN", f"sb:snap:{SOURCE}"), "0")
        self.assertIn('"vanished_without_record":0', err)

    def test_daemon_restarted_between_cycles(self):
        p = self.p
        r = record("d1", "IN_PROGRESS", '"kept"')
        p.in_progress.update(d1=r, d2=record("d2", "IN_PROGRESS", "0"))
        self.s.start_bridge(self.conf)
        log = lambda: self.s.log_of("bridge-run")  # noqa: E731
        st.wait_for(lambda: '"msg":"baseline recorded"' in log(), 30, "the baseline")
        self.assertEqual(self.s.stop_bridge(), 0)
        p.in_progress.pop("d1")
        self.s.start_bridge(self.conf, name="bridge-again")
        st.wait_for(lambda: "d1" in self.cancelled(), 30, "the cancelled event of d1")
        ev = self.cancelled()["d1"]
        self.assertEqual(ev["event"]["data"]["session"], json.loads(r))
        self.assertIn('"session":' + r + "}", ev["payload"])
        self.assertIsNone(self.stored("d1"))
        self.assertIsNotNone(self.stored("d2"))

    def test_missing_record_gives_null_and_a_count(self):
        p = self.p
        p.in_progress.update(old=record("old", "IN_PROGRESS", "1"),
                             new=record("new", "IN_PROGRESS", "2"),
                             bad=record("bad", "IN_PROGRESS", "3"))
        self.once()
        # as if stored by a version that kept no records, and a value that
        # is not a record (written by hand): neither reaches an event
        self.s.redis("HDEL", REC_KEY, "old")
        self.s.redis("HSET", REC_KEY, "bad", '{"cut": ')
        p.in_progress.clear()
        err = self.once()
        got = self.cancelled()
        self.assertEqual(set(got), {"old", "new", "bad"})
        self.assertIsNone(got["old"]["event"]["data"]["session"])
        self.assertIsNone(got["bad"]["event"]["data"]["session"])
        self.assertEqual(got["new"]["event"]["data"]["session"],
                         json.loads(record("new", "IN_PROGRESS", "2")))
        committed = [json.loads(line) for line in err.splitlines()
                     if line.startswith("{") and '"msg":"cycle committed"' in line]
        self.assertEqual(committed[-1]["vanished_without_record"], 2)
        # nothing logged per event
        self.assertNotIn('"old"', err)
        self.assertNotIn('"bad"', err)


if __name__ == "__main__":
    unittest.main()
