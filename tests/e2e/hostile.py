"""A hostile Century Smart IA on loopback, for the hardening tests.

Serves Century-shaped pages (CONTRACT §4: GET .../smart-ia/sessions/in-progress
and .../completed, {"data": [...], "pagination": {"nextCursor": ...}}) in one
of a few modes, switched by the test while the server runs:

- "normal": a fixed population of in-progress sessions (NORMAL_ACTIVE), one
  page per list, then nextCursor null;
- "endless": every page holds PAGE_SIZE sessions never seen before and a
  fresh cursor, for ever (a provider that never ends a poll);
- "statuses": one in-progress page whose STATUS_FLOOD records each carry a
  raw status of their own;
- "raw": the in-progress list answers with the bytes in `raw_body` as they
  are (invalid UTF-8, escapes, ...).

Standard library only; the server runs on a thread of the test process and
answers on 127.0.0.1 only.
"""

import http.server
import json
import threading
import urllib.parse

PAGE_SIZE = 100
STATUS_FLOOD = 1100
NORMAL_ACTIVE = 3


def record(session_id, status="IN_PROGRESS"):
    """A record shaped like the simulator's (tests/stack/sim_century.c), so
    that per-record costs measured here are those of real pages."""
    return {
        "test": {"name": "Fractions and decimals", "testId": "9c1e2a4e-8f2b-4c55-9d61-1f0e6a7b3c21",
                 "subject": "Mathematics", "testVersionId": "0b6f3c8a-2d4e-4f1a-8b9c-7e5d3a2f1c0b"},
        "user": {"emails": ["ada.lovelace@example.org"], "gender": "female",
                 "userId": "5a7d9e1f-3b2c-4d6e-8f0a-1b2c3d4e5f60", "fullName": "Ada Lovelace",
                 "lastName": "Lovelace", "username": "ada.lovelace", "firstName": "Ada",
                 "dateOfBirth": "2010-12-10"},
        "status": status,
        "sessionId": session_id,
        "startDate": "2026-11-23T10:00:00.000Z",
    }


def page(records, next_cursor):
    return json.dumps({"data": records, "pagination": {"nextCursor": next_cursor}}).encode()


# The endless pages are the hot path: built from one encoded record with the
# id spliced in, so that the server outruns the bridge.
_HEAD, _TAIL = json.dumps(record("@ID@")).encode().split(b"@ID@")


def fresh_page(first, n):
    recs = b",".join(_HEAD + b"fresh-%09d" % (first + i) + _TAIL for i in range(n))
    cursor = b"c%d" % (first + n)
    return b'{"data":[' + recs + b'],"pagination":{"nextCursor":"' + cursor + b'"}}'


class Hostile:
    def __init__(self):
        self.mode = "normal"
        self.raw_body = b""
        self.end_after = None  # endless: records after which nextCursor is null
        self.active = NORMAL_ACTIVE  # normal: sessions in progress
        self.lock = threading.Lock()
        self.requests = 0
        self.served_records = 0
        self._fresh = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle
            # and the client's delayed ACK add 40 ms to every page
            disable_nagle_algorithm = True

            def do_GET(self):
                body = owner._answer(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set_mode(self, mode, raw_body=b""):
        with self.lock:
            self.mode = mode
            self.raw_body = raw_body

    def _answer(self, path):
        url = urllib.parse.urlsplit(path)
        completed = url.path.endswith("/completed")
        with self.lock:
            self.requests += 1
            mode, raw = self.mode, self.raw_body
            if mode == "endless":
                first = self._fresh
                self._fresh += PAGE_SIZE
        if mode == "endless":
            with self.lock:
                self.served_records += PAGE_SIZE
            body = fresh_page(first, PAGE_SIZE)
            if self.end_after is not None and first + PAGE_SIZE >= self.end_after:
                body = body.replace(b'"nextCursor":"c%d"' % (first + PAGE_SIZE), b'"nextCursor":null')
            return body
        if completed:
            return page([], None)
        if mode == "statuses":
            return page([record(f"flood-{i}", f"STATUS_{i}") for i in range(STATUS_FLOOD)], None)
        if mode == "raw":
            return raw
        return page([record(f"normal-{i}") for i in range(self.active)], None)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
