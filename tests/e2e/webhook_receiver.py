"""A webhook receiver for the end-to-end tests, as a downstream team would
write one: it verifies every Standard Webhooks signature with the secrets it
was given (independently of the project's code: hmac + base64 from Python's
standard library), remembers every delivery, and deduplicates by
webhook-id. It can be taken down, brought back on the same port, told to
answer 410 or another status, or to hang without answering. Every body is
held to the event schema (stack.check_event): a delivery that breaks it
fails the test at its next look at what arrived.
"""

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time

import stack


def sign(secret, msg_id, timestamp, body):
    """v1 signature of Standard Webhooks: HMAC-SHA256 keyed by the
    base64-decoded part of a whsec_ secret over id.timestamp.body."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class Receiver:
    def __init__(self, port, secrets):
        self.port = port
        self.secrets = list(secrets)
        self.mode = "ok"          # ok | gone | status:<n> | hang
        self.lock = threading.Lock()
        self.deliveries = []      # every request: dict(id, valid, event, headers)
        self.schema_errors = []   # (webhook-id, what the schema found wrong)
        self.release = threading.Event()
        self.server = None
        self.thread = None

    # ---- lifecycle ----

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver._record(self.headers, body)
                mode = receiver.mode
                if mode == "hang":
                    receiver.release.wait(120)
                    return
                code = 200 if mode == "ok" else 410 if mode == "gone" else int(mode.split(":")[1])
                self.send_response(code)
                if code in (429, 503) and receiver.retry_after is not None:
                    self.send_header("Retry-After", str(receiver.retry_after))
                self.send_header("content-length", "0")
                self.end_headers()

        self.retry_after = None
        self.release.clear()
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks/sessions?token=not-for-logs"

    # ---- what arrived ----

    def _record(self, headers, body):
        msg_id = headers.get("webhook-id", "")
        ts = headers.get("webhook-timestamp", "")
        sigs = headers.get("webhook-signature", "").split(" ")
        expected = {sign(s, msg_id, ts, body) for s in self.secrets}
        try:
            fresh = abs(time.time() - int(ts)) < 300
        except ValueError:
            fresh = False
        valid = fresh and len(sigs) == len(self.secrets) and set(sigs) == expected
        try:
            event = json.loads(body)
            problems = stack.schema_problems(event)
        except ValueError:
            event, problems = None, ["the body is not JSON"]
        with self.lock:
            if problems:
                self.schema_errors.append((msg_id, problems))
            self.deliveries.append({"id": msg_id, "valid": valid, "event": event,
                                    "content_type": headers.get("content-type"),
                                    "headers": {k.lower(): v for k, v in headers.items()}})

    def received(self):
        with self.lock:
            if self.schema_errors:
                raise AssertionError(f"deliveries that do not follow {stack.EVENT_SCHEMA}: "
                                     f"{self.schema_errors[:5]}")
            return list(self.deliveries)

    def unique(self):
        """Deduplicated by webhook-id, as a careful receiver does."""
        out = {}
        for d in self.received():
            out.setdefault(d["id"], d)
        return out
