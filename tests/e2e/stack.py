"""The local stack for end-to-end tests and the benchmark.

Starts real processes on loopback, each on a port of its own, in a temporary
directory: redis-server, sb-kafka-mock (librdkafka's mock cluster as its own
process), sb-provider-sim (the simulated provider APIs), and runs the
session-bridge binary against them. Events are read back with kcat, a real
Kafka consumer. Nothing here imports project code: expectations are computed
independently (event ids with hashlib, from the simulator's ground truth).
Every event read back (kcat, the webhook receiver, stdout, files, streams)
is held to the published schema, conf/schema/event.schema.json, by a real
validator (Debian's python3-jsonschema) when it is installed.
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BUILD = os.environ.get("SB_BUILD_DIR") or os.path.join(ROOT, "build")
EVENT_SCHEMA = os.path.join(ROOT, "conf", "schema", "event.schema.json")
BRIDGE = os.path.join(BUILD, "bridge", "session-bridge")
KAFKA_MOCK = os.path.join(BUILD, "tests", "stack", "sb-kafka-mock")
SIM = os.path.join(BUILD, "tests", "stack", "sb-provider-sim")

TOPICS = {"started": "sessions.started", "completed": "sessions.completed",
          "cancelled": "sessions.cancelled"}
# One SB_LOG_FORMAT=text line: time, the level column, the message.
TEXT_LOG_LINE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN |INFO |DEBUG) \S"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def event_id(source, session_id, type_name):
    """CONTRACT §6, computed here without the project's code."""
    h = hashlib.sha256(f"{source}\n{session_id}\n{type_name}".encode())
    return h.hexdigest()[:32]


_validator = []  # [the event schema's validator, or None without jsonschema]


def event_validator():
    """A Draft 7 validator of the event schema, or None when
    python3-jsonschema is not installed. Its date-time check is
    Python's own: Debian's jsonschema has none without an extra package."""
    if not _validator:
        try:
            import jsonschema
        except ImportError:
            _validator.append(None)
            return None
        checker = jsonschema.FormatChecker()

        @checker.checks("date-time", raises=ValueError)
        def date_time(value):
            if isinstance(value, str):
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return True

        with open(EVENT_SCHEMA) as f:
            schema = json.load(f)
        jsonschema.Draft7Validator.check_schema(schema)
        _validator.append(jsonschema.Draft7Validator(schema, format_checker=checker))
    return _validator[0]


def schema_problems(event):
    """What the event schema finds wrong with event, one "path: message"
    each; [] when it is valid or no validator is installed."""
    v = event_validator()
    if v is None:
        return []
    out = []
    for e in sorted(v.iter_errors(event), key=lambda e: list(e.absolute_path)):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        out.append(f"{path or '.'}: {e.message}")
    return out


def check_event(event, where="event"):
    """Raises AssertionError when event does not follow the schema."""
    problems = schema_problems(event)
    if problems:
        raise AssertionError(f"{where} does not follow {EVENT_SCHEMA}:\n  " +
                             "\n  ".join(problems) + f"\n{json.dumps(event)[:2000]}")
    return event


def event_lines(text, where="line"):
    """The events of a stdout or file sink's output, one JSON per line,
    each held to the schema."""
    return [check_event(json.loads(line), where) for line in text.splitlines() if line.strip()]


def duration_s(line, name):
    """A duration of a log line in seconds: its <name>_ms field, or the
    <name>_s field of builds from before durations were milliseconds (for
    benchmarks that run an older binary beside this one)."""
    if f"{name}_ms" in line:
        return line[f"{name}_ms"] / 1000
    return line[f"{name}_s"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def read_text(path):
    """The file's content, or "" when it does not exist yet."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def vm_hwm_kib(pid):
    """Peak RSS of a running process (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def check_sanitizers(text, who):
    for mark in SANITIZER_MARKS:
        if mark in text:
            raise AssertionError(f"{who}: sanitizer report:\n{text[-4000:]}")


class Stack:
    def __init__(self, name="e2e"):
        self.dir = tempfile.mkdtemp(prefix=f"sb-{name}-")
        self.procs = {}
        self.redis_port = None
        self.bootstrap = None
        self.sim_url = None
        self.api_key = "k-" + os.urandom(8).hex()

    # ---- processes ----

    def _spawn(self, name, argv, **kw):
        with open(os.path.join(self.dir, f"{name}.log"), "ab") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, **kw)
        self.procs[name] = p
        return p

    def log_of(self, name):
        with open(os.path.join(self.dir, f"{name}.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def start_redis(self):
        if self.redis_port is None:
            self.redis_port = free_port()
        data = os.path.join(self.dir, "redis")
        os.makedirs(data, exist_ok=True)
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port),
                              "--bind", "127.0.0.1", "--dir", data,
                              "--appendonly", "yes", "--appendfsync", "always",
                              "--save", "", "--protected-mode", "no"])
        wait_for(lambda: self._redis_ping(), what="redis")

    def _redis_ping(self):
        try:
            return self.redis("PING") == "PONG"
        except subprocess.CalledProcessError:
            return False

    def stop_redis(self):
        p = self.procs.pop("redis")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)

    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--raw", *args],
                             check=True, capture_output=True, timeout=15)
        return out.stdout.decode().rstrip("\n")

    def snapshot_meta(self, source):
        raw = self.redis("HGETALL", f"sb:meta:{source}").split("\n")
        return dict(zip(raw[0::2], raw[1::2])) if raw != [""] else {}

    def start_kafka(self, partitions=3, extra_topics=()):
        bootfile = os.path.join(self.dir, "bootstrap")
        argv = [KAFKA_MOCK, "--bootstrap-file", bootfile, "--partitions", str(partitions)]
        for t in (*TOPICS.values(), *extra_topics):
            argv += ["--topic", t]
        self._spawn("kafka", argv)
        self.bootstrap = wait_for(lambda: read_text(bootfile), what="kafka mock")

    def kafka_down(self):
        self.procs["kafka"].send_signal(signal.SIGUSR1)
        wait_for(lambda: "down" in self.log_of("kafka"), what="brokers down")

    def kafka_up(self):
        self.procs["kafka"].send_signal(signal.SIGUSR2)
        wait_for(lambda: " up" in self.log_of("kafka") or "up\n" in self.log_of("kafka"),
                 what="brokers up")

    def start_sim(self, dialect="century", active=20, completed=10, seed=1, extra=()):
        urlfile = os.path.join(self.dir, "sim-url")
        self.truth_path = os.path.join(self.dir, "truth.jsonl")
        self._spawn("sim", [SIM, "--port", "0", "--url-file", urlfile, "--dialect", dialect,
                            "--api-key", self.api_key, "--active", str(active),
                            "--completed", str(completed), "--seed", str(seed),
                            "--truth", self.truth_path, *extra])
        self.sim_url = wait_for(lambda: read_text(urlfile), what="simulator")

    def sim(self, method, path):
        req = urllib.request.Request(self.sim_url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def tick(self, **counts):
        """One upstream tick: started=, completed=, vanished=, and for the
        dialects that show them pending=, activated=, cancelled=, purged=."""
        query = "&".join(f"{k}={v}" for k, v in counts.items())
        return self.sim("POST", f"/_sim/tick?{query}")

    def truth(self):
        with open(self.truth_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    # ---- the bridge ----

    def config(self, name="century", source=None, sinks=None, **source_keys):
        src = {"name": name, "provider": "century_smart_ia",
               "base_url": self.sim_url + "/api/v1",
               "auth": {"api_key": "${TEST_CENTURY_KEY}"},
               "interval_s": 1, "vanish_grace": 1}
        src.update(source_keys)
        if source is not None:
            src = source
        if sinks is None:
            sinks = [{"name": "bus", "type": "kafka", "brokers": self.bootstrap,
                      "topics": TOPICS,
                      "properties": {"message.timeout.ms": "5000"}}]
        conf = {"redis": {"url": f"redis://127.0.0.1:{self.redis_port}/0", "prefix": "sb"},
                "admin": {"listen": "127.0.0.1:0"},
                # Short, so that a test that kills a bridge does not wait long
                # for its leases to expire.
                "lease_ttl_s": 4,
                "sources": [src], "sinks": sinks}
        path = os.path.join(self.dir, f"config-{os.urandom(3).hex()}.json")
        with open(path, "w") as f:
            json.dump(conf, f, indent=2)
        return path

    def env(self, **extra):
        env = dict(os.environ)
        env["TEST_CENTURY_KEY"] = self.api_key
        env.setdefault("SB_LOG_LEVEL", "info")
        # The tests read JSON lines, whatever the shell that runs them says.
        env["SB_LOG_FORMAT"] = "json"
        env.update(extra)
        return env

    def bridge(self, *args, timeout=120, env=None):
        """Runs session-bridge to completion; returns (rc, stdout, stderr)."""
        p = subprocess.run([BRIDGE, *args], capture_output=True, timeout=timeout,
                           env=env or self.env(), stdin=subprocess.DEVNULL)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        with open(os.path.join(self.dir, "bridge.log"), "a") as f:
            f.write(f"$ session-bridge {' '.join(args)} -> {p.returncode}\n{err}\n")
        check_sanitizers(err, "session-bridge")
        return p.returncode, out, err

    def start_bridge(self, config, name="bridge-run", env=None):
        """session-bridge run in the background; its log is log_of(name)."""
        return self._spawn(name, [BRIDGE, "run", "-c", config], env=env or self.env())

    def admin_url(self, name="bridge-run"):
        """http://127.0.0.1:<port> of a running bridge's admin endpoint, the
        port from its log line (the configs listen on port 0)."""
        m = wait_for(lambda: re.search(r'"msg":"admin endpoint listening".*?"port":(\d+)',
                                       self.log_of(name)),
                     timeout=20, what="the admin endpoint")
        return f"http://127.0.0.1:{m.group(1)}"

    def stop_bridge(self, name="bridge-run", sig=signal.SIGTERM):
        """Stops it (SIGKILL: no chance to flush) and returns its exit code."""
        p = self.procs.pop(name)
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        check_sanitizers(self.log_of(name), name)
        return rc

    def once(self, config, *extra, expect=0):
        rc, out, err = self.bridge("once", "-c", config, *extra)
        if expect is not None and rc != expect:
            raise AssertionError(f"once exited {rc}, expected {expect}:\n{err[-3000:]}")
        return rc, out, err

    # ---- reading back ----

    def consume(self, topic):
        """Every message of topic, as kcat -J prints them."""
        p = subprocess.run(["kcat", "-b", self.bootstrap, "-C", "-t", topic, "-o", "beginning",
                            "-e", "-J", "-q", "-X", "topic.metadata.refresh.interval.ms=1000"],
                           capture_output=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"kcat failed: {p.stderr.decode()}")
        msgs = []
        for line in p.stdout.decode().splitlines():
            if not line.strip():
                continue
            m = json.loads(line)
            hdrs = m.get("headers") or []
            m["headers"] = dict(zip(hdrs[0::2], hdrs[1::2]))
            m["event"] = check_event(json.loads(m["payload"]), f"a message of {topic}")
            msgs.append(m)
        return msgs

    def events(self):
        """Every event on the three topics: a list of (topic kind, message)."""
        out = []
        for kind, topic in TOPICS.items():
            out += [(kind, m) for m in self.consume(topic)]
        return out

    def close(self):
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        if os.environ.get("SB_KEEP_TMP"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def expected_from_truth(truth, source, after_tick=0):
    """The (session_id, type) events CONTRACT §5 requires for the upstream
    transitions after tick after_tick, assuming the bridge polled after every
    tick: entering active -> started; entering completed -> completed, with
    a synthesized started when the session was not active before; entering
    cancelled -> cancelled; gone while pending or active -> cancelled
    (vanished); gone while terminal -> nothing."""
    state = {}
    want = set()
    for t in truth:
        sid, to, tick = t["session_id"], t["to"], t["tick"]
        prev = state.get(sid)
        state[sid] = to
        if tick <= after_tick:
            continue
        if to == "active":
            want.add((sid, "session.started"))
        elif to == "completed":
            if prev != "active":
                want.add((sid, "session.started"))
            want.add((sid, "session.completed"))
        elif to == "cancelled" and prev not in ("completed", "cancelled"):
            want.add((sid, "session.cancelled"))
        elif to == "gone" and prev in ("active", "pending"):
            want.add((sid, "session.cancelled"))
    return want

