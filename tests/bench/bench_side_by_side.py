#!/usr/bin/env python3
"""Benchmark: session-bridge, a Python reference and a parse-only floor, side by side.

    tests/bench/bench_side_by_side.py [--sessions 10000,100000,1000000] [--reps 3]
                                      [--churn 0.01] [--verify-sessions 2000] [--perf]

One command, one upstream, one Redis, one broker, three programs doing one
cycle of one Century Smart IA source each, measured as whole processes
(and, for the first cycle, the bare producer of the same messages):

- session-bridge `once` (the build in ./build, or $SB_BUILD_DIR);
- tests/bench/reference_bridge.py: the same job in idiomatic Python
  (requests, redis-py, confluent-kafka; see its docstring for what it skips);
- the floor: tests/bench/floor_cjson.c (and floor_simdjson.cpp when Debian's
  libsimdjson-dev is here) reading the same page files and parsing each
  one, nothing else. Built here with cc/c++ (-O2, -march=native: simdjson's
  On Demand API picks its SIMD kernels at compile time).

Why each part is there:

- The upstream is static. The Century pages (100 records a page, the API's
  maximum) are generated once per population size and per churn step by the
  provider simulator (tests/stack/sim_century.c, so the records have the
  real shape), saved as files with each page's nextCursor rewritten to the
  name of the next file, and served by Debian's nginx, started here as our
  own process on a loopback port with its own config in the run's temp dir
  (no system service). nginx maps ?cursor= to a file name (`map` on
  $arg_cursor, then `try_files`), checks x-api-key, and keeps connections
  alive: the upstream costs next to nothing, so the figures are the
  clients'. Two page sets per size: step 0, the initial population (90%
  in progress, 10% completed), and step 1, the same after one upstream tick
  of --churn changes (a third start, a third complete, a third vanish).
- Redis and the broker are the e2e stack's (tests/e2e/stack.py):
  redis-server with AOF (appendfsync always) and sb-kafka-mock. The broker
  is restarted before every run (it keeps every message in memory) and
  Redis is reset to the run's starting state (flushed, or the snapshot and
  meta hashes, and the last records, restored with DUMP/RESTORE), outside
  the timed part.
- Equivalence first, at --verify-sessions (small): from the same starting
  state, bridge and reference (with --fingerprint bridge, the port of
  diff_fingerprint()) must leave the same snapshot hash, byte for byte, and
  the same meta cycle and sessions, and put the same events on Kafka (read
  back with kcat): the same ids, each with the same key, headers and
  partition and the same CloudEvent apart from its `time`. Checked for a
  first cycle with initial_snapshot emit and for a churn cycle. The timed
  reference runs use its default fingerprint (BLAKE2b, see
  reference_bridge.py): the same work, its own 16 hex digits.
- Two phases per size. First cycle: empty Redis, initial_snapshot emit, step
  0 (every session is an event). Churn: the snapshot a baseline cycle over
  step 0 left (each implementation's own), then one cycle over step 1.
- The broker's own limit, in the first-cycle phase: tests/bench/bare_producer.c
  (built by tests/bench's CMake) produces the same messages with librdkafka
  alone, configured as the Kafka sink configures its producer (acks=all,
  idempotence, the sink's defaults and SINK_PROPERTIES, librdkafka's linger
  and batch defaults, which the sink keeps), to a fresh broker, and waits for
  every delivery report. Its messages are the bridge's own, in the bridge's
  order: an untimed bridge run of the same first cycle with a file sink
  gives every event as the Kafka sink's value, and the topic, key, headers
  and partition (murmur2) follow from it as sinks/kafka.c makes them; the
  equivalence check proves them equal to what the bridge put on Kafka, and
  the producer checks each delivery landed in that partition. It runs
  third in each round (bridge, reference, bare), its ratio taken per round
  like the others.
- Timing is /usr/bin/time -v style accounting from wait4(): user + sys
  CPU, wall time and peak RSS of the whole process (start-up, snapshot
  load, poll, diff, delivery, commit), taken by tests/bench/rusage_run.c,
  a small launcher (a child forked from this harness would report the
  harness's RSS as its own peak: see there). Runs alternate A B A B (bridge,
  reference) --reps times per phase, ratios are taken per pair, medians
  printed, CPU per session is CPU / sessions observed.
- --perf records `perf record -g` of one bridge churn cycle and of one
  first cycle (emit) and prints the top of `perf report --stdio
  --no-children` of each.

Benchmark-only packages (nginx-light, python3-requests, python3-redis,
python3-confluent-kafka, libsimdjson-dev; linux-perf with --perf) are
installed when missing, as deploy/deps.sh does: only what is missing,
`apt-get update` only then. (On a systemd host the nginx package starts a
system nginx on port 80; it is left alone, ours has its own port.) The
figures belong in BENCHMARKS.md; this is not a test.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import stack as st  # noqa: E402

SOURCE = "century"
PREFIX = "sb"
PAGE_LIMIT = 100  # records a page: the Century API's maximum
REFERENCE = os.path.join(HERE, "reference_bridge.py")
# Debian's interpreter, the one python3-requests, -redis and -confluent-kafka
# are installed for (a python3 first on PATH, e.g. pyenv's, does not see them).
DEBIAN_PY = "/usr/bin/python3"
# package -> what shows it is there (a command, a Python module or a header)
PACKAGES = {
    "nginx-light": ("file", "/usr/sbin/nginx"),
    "python3-requests": ("py", "requests"),
    "python3-redis": ("py", "redis"),
    "python3-confluent-kafka": ("py", "confluent_kafka"),
    "libcjson-dev": ("file", "/usr/include/cjson/cJSON.h"),
    "libsimdjson-dev": ("file", "/usr/include/simdjson.h"),
}
OPTIONAL = {"libsimdjson-dev"}  # the simdjson floor is skipped without it


# ---- dependencies ----

def ensure_packages(perf):
    """Installs the missing benchmark-only packages (idempotent)."""
    want = dict(PACKAGES)
    if perf:
        want["linux-perf"] = ("cmd", "perf")
    missing = []
    for pkg, (kind, what) in want.items():
        if kind == "cmd":
            there = shutil.which(what)
        elif kind == "py":
            there = subprocess.run([DEBIAN_PY, "-c", f"import {what}"],
                                   capture_output=True).returncode == 0
        else:
            there = os.path.exists(what)
        if not there:
            missing.append(pkg)
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {' '.join(missing)}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    for pkg in missing:
        rc = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                    pkg], env=env, stdout=subprocess.DEVNULL).returncode
        if rc != 0 and pkg not in OPTIONAL:
            sys.exit(f"cannot install {pkg}")


def build_tools(outdir):
    """The launcher and {name: path} of the floor programs built here."""
    launcher = os.path.join(outdir, "rusage_run")
    subprocess.run(["cc", "-O2", "-o", launcher, os.path.join(HERE, "rusage_run.c")], check=True)
    floors = {}
    cjson = os.path.join(outdir, "floor_cjson")
    subprocess.run(["cc", "-O2", "-o", cjson,
                    os.path.join(HERE, "floor_cjson.c"), "-I/usr/include/cjson", "-lcjson"],
                   check=True)
    floors["cjson"] = cjson
    if os.path.exists("/usr/include/simdjson.h"):
        simd = os.path.join(outdir, "floor_simdjson")
        subprocess.run(["c++", "-O2", "-march=native", "-std=c++17", "-o", simd,
                        os.path.join(HERE, "floor_simdjson.cpp"), "-lsimdjson"], check=True)
        floors["simdjson"] = simd
    return launcher, floors


# ---- the static upstream ----

class PageSet:
    """One population at one churn step, as page files under root/name/."""

    def __init__(self, root, name):
        self.name, self.dir = name, os.path.join(root, name)
        self.files, self.records = [], 0


NEXT_RE = re.compile(rb'"nextCursor":(null|"[^"]*"),"previousCursor":(null|"[^"]*")\}\}\s*$')


def save_pages(sim_url, api_key, pageset):
    """Fetches every page of both lists from the simulator (one kept-alive
    connection) and saves them with nextCursor naming the next file. A page
    is written once the next one is known, so that at most two are held."""
    u = urllib.parse.urlsplit(sim_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def write(name, i, body, last):
        nxt = b"null" if last else b'"p%06d"' % (i + 1)
        body, n = NEXT_RE.subn(b'"nextCursor":' + nxt + b',"previousCursor":null}}', body)
        if n != 1:
            raise RuntimeError("simulator page without the expected pagination tail")
        path = os.path.join(pageset.dir, name, "p%06d.json" % i)
        with open(path, "wb") as f:
            f.write(body)
        pageset.files.append(path)

    for name in ("in-progress", "completed"):
        os.makedirs(os.path.join(pageset.dir, name))
        cursor, i, prev = None, 0, None
        while True:
            q = {"limit": PAGE_LIMIT}
            if cursor:
                q["cursor"] = cursor
            conn.request("GET", f"/api/v1/smart-ia/sessions/{name}?{urllib.parse.urlencode(q)}",
                         headers={"x-api-key": api_key})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"simulator: {r.status} {body[:200]!r}")
            doc = json.loads(body)
            pageset.records += len(doc["data"])
            if prev is not None:
                write(name, i - 1, prev, last=False)
            prev, i = body, i + 1
            cursor = doc["pagination"]["nextCursor"]
            if not cursor:
                break
        write(name, i - 1, prev, last=True)
    conn.close()


def generate(s, root, tag, sessions, churn):
    """(step 0, step 1) page sets of a population of sessions."""
    active = int(sessions * 0.9)
    s.start_sim(active=active, completed=sessions - active, seed=42)
    step0, step1 = PageSet(root, f"{tag}_0"), PageSet(root, f"{tag}_1")
    save_pages(s.sim_url, s.api_key, step0)
    per_tick = max(3, int(sessions * churn))
    s.tick(started=per_tick // 3, completed=per_tick // 3,
           vanished=per_tick - 2 * (per_tick // 3))
    save_pages(s.sim_url, s.api_key, step1)
    p = s.procs.pop("sim")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    return step0, step1


NGINX_CONF = """\
# The static Century upstream of bench_side_by_side.py: one process, no
# master, in the foreground, everything under the run's temp dir.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    default_type application/json;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    # One connection serves a whole poll (up to 10,000+ pages).
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    # No cursor: the first page; a cursor is the next file's name; anything
    # else is no file of ours.
    map $arg_cursor $page {{
        "" p000000;
        "~^p[0-9]{{6}}$" $arg_cursor;
        default invalid;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {pages};
        location ~ ^/(?<set>[a-z0-9_]+)/api/v1/smart-ia/sessions/(?<list>in-progress|completed)$ {{
            if ($http_x_api_key != "{key}") {{ return 401; }}
            try_files /$set/$list/$page.json =404;
        }}
        location / {{ return 404; }}
    }}
}}
"""


def start_nginx(s, pages_root):
    port = st.free_port()
    os.makedirs(os.path.join(s.dir, "nginx-tmp"), exist_ok=True)
    conf = os.path.join(s.dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=s.dir, port=port, pages=pages_root, key=s.api_key))
    s._spawn("nginx", ["/usr/sbin/nginx", "-p", s.dir, "-c", conf,
                       "-e", os.path.join(s.dir, "nginx-error.log")])
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            status = c.getresponse().status
            c.close()
            return status == 404
        except OSError:
            return False
    st.wait_for(up, what="nginx")
    return url


# ---- Redis and the broker ----

def fresh_kafka(s):
    """A new broker (the mock keeps every message in memory)."""
    p = s.procs.pop("kafka", None)
    if p is not None:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    s.start_kafka()


def snapshot_keys(r):
    return [k for k in r.scan_iter(f"{PREFIX}:*", count=1000)
            if k.startswith((f"{PREFIX}:snap:".encode(), f"{PREFIX}:meta:".encode(),
                             f"{PREFIX}:rec:".encode()))]


def save_state(r):
    return [(k, r.dump(k)) for k in snapshot_keys(r)]


def restore_state(r, state):
    r.flushdb()
    for k, v in state:
        r.restore(k, 0, v)


def snapshot(r):
    """What equivalence compares: the snapshot hash, and the meta hash
    without committed_at (a clock reading)."""
    snap = r.hgetall(f"{PREFIX}:snap:{SOURCE}")
    meta = r.hgetall(f"{PREFIX}:meta:{SOURCE}")
    meta.pop(b"committed_at", None)
    return snap, meta


# ---- runs ----

class Run:
    def __init__(self, wall, cpu, rss_kib, rc, log):
        self.wall, self.cpu, self.rss_kib, self.rc, self.log = wall, cpu, rss_kib, rc, log


# The Kafka sink's properties, for the bridge, the reference and the bare
# producer alike. murmur2_random: the placement CONTRACT §6 names.
SINK_PROPERTIES = {"message.timeout.ms": "30000", "partitioner": "murmur2_random"}
# diff.h's DIFF_DEFAULT_MAX_SESSIONS.
DEFAULT_MAX_SESSIONS = 100000
LAUNCHER = None  # rusage_run, built by main()


def measure(argv, env, log_path):
    """Runs argv to completion under rusage_run, which accounts for it as
    /usr/bin/time -v would: wall, user + sys CPU, peak RSS (KiB)."""
    figures = log_path + ".rusage"
    with open(log_path, "wb") as log:
        rc = subprocess.run([LAUNCHER, figures, *argv], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=env).returncode
    with open(log_path, "rb") as f:
        text = f.read().decode(errors="replace")
    try:
        with open(figures) as f:
            wall, user, sys_s, rss, _ = f.read().split()
    except FileNotFoundError:  # the launcher itself failed
        return Run(0, 0, 0, rc, text)
    return Run(float(wall), float(user) + float(sys_s), int(rss), rc, text)


def config_sinks(s):
    """The Kafka sink of every timed run."""
    return [{"name": "bus", "type": "kafka", "brokers": s.bootstrap, "topics": st.TOPICS,
             "properties": SINK_PROPERTIES}]


def config(s, base, pageset, initial, kafka=True, extra=()):
    """A config of the one source: the Kafka sink (kafka) and extra sinks."""
    sinks = (config_sinks(s) if kafka else []) + list(extra)
    # max_sessions: the bridge's per-poll bound (100,000 by default) must
    # admit the population measured; the reference ignores the key.
    return s.config(SOURCE, base_url=f"{base}/{pageset.name}/api/v1", page_size=PAGE_LIMIT,
                    vanish_grace=1, initial_snapshot=initial, sinks=sinks,
                    max_sessions=max(DEFAULT_MAX_SESSIONS, pageset.records))


def argv_of(impl, conf, fingerprint="fast"):
    if impl == "bridge":
        return [st.BRIDGE, "once", "-c", conf]
    return [DEBIAN_PY, REFERENCE, "-c", conf, "--fingerprint", fingerprint]


def run_cycle(s, base, impl, pageset, initial, state, r, fingerprint="fast", name=None,
              kafka=True, extra=()):
    """One measured cycle of impl over pageset from Redis state (None: empty)."""
    if state is None:
        r.flushdb()
    else:
        restore_state(r, state)
    fresh_kafka(s)
    conf = config(s, base, pageset, initial, kafka, extra)
    log = os.path.join(s.dir, f"{name or impl}-{pageset.name}-{os.urandom(2).hex()}.log")
    run = measure(argv_of(impl, conf, fingerprint), s.env(SB_LOG_LEVEL="info"), log)
    if run.rc != 0:
        raise RuntimeError(f"{impl} exited {run.rc} over {pageset.name}:\n{run.log[-3000:]}")
    st.check_sanitizers(run.log, impl)
    return run


def committed(run):
    """The cycle line's figures (both programs log one as JSON)."""
    for line in run.log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") in ("cycle committed", "baseline recorded"):
            return rec
    return {}


# ---- the bare producer ----

BARE = os.path.join(st.BUILD, "tests", "bench", "bare_producer")
# Partitions of each topic on the broker (stack.py's start_kafka default).
PARTITIONS = 3
# What the Kafka sink writes around each event (sinks/kafka.c, CONTRACT §6).
CE_SOURCE_PREFIX = "session-bridge/"
CONTENT_TYPE = "application/cloudevents+json"
# The envelope's first members, in the order bridge/event.c writes them.
ENVELOPE_RE = re.compile(rb'\{"specversion":"1\.0","id":"([0-9a-f]{32})","source":"([^"\\]*)",'
                         rb'"type":"session\.([a-z]+)","subject":"([^"\\]*)"')


def murmur2(data):
    """Kafka's murmur2 (Java's Utils.murmur2, librdkafka's rd_murmur2)."""
    m, length = 0x5bd1e995, len(data)
    h = (0x9747b28c ^ length) & 0xffffffff
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> 24
        k = (k * m) & 0xffffffff
        h = ((h * m) & 0xffffffff) ^ k
    rest = length % 4
    if rest:
        tail = data[length - rest:]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h ^= tail[0]
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h


def kafka_message(line):
    """The Kafka message the sink makes of one event line of the file sink:
    (topic, partition murmur2 places it in, key, headers, value)."""
    m = ENVELOPE_RE.match(line)
    if not m:  # escapes in a name or an id: not in the benchmark's pages
        raise RuntimeError(f"unexpected event envelope {line[:200]!r}")
    ev_id, ce_source, kind, subject = (x.decode() for x in m.groups())
    source = ce_source[len(CE_SOURCE_PREFIX):]
    key = f"{source}/{subject}".encode()
    headers = (("ce_id", ev_id), ("ce_type", f"session.{kind}"), ("ce_source", ce_source),
               ("content-type", CONTENT_TYPE))
    return (st.TOPICS[kind], (murmur2(key) & 0x7fffffff) % PARTITIONS, key, headers, line)


def file_sink(path):
    return {"name": "dump", "type": "file", "path": path, "fsync": "never",
            "rotate_bytes": 1 << 40}


def dump_messages(s, base, r, pageset, out_path):
    """Writes bare_producer's input: the messages of the bridge's first cycle
    over pageset, in the bridge's order. They come from an untimed bridge run
    with a file sink instead of Kafka (the mock broker keeps only the last
    ~5 MB of each partition, so it cannot give 100,000 events back): each
    line is the event the Kafka sink would have sent as the value, and its
    topic, key, headers and partition follow from it as sinks/kafka.c makes
    them (verify() checks that they equal what the bridge put on Kafka).
    Returns the number of messages."""
    events = out_path + ".jsonl"
    run_cycle(s, base, "bridge", pageset, "emit", None, r, name="dump", kafka=False,
              extra=[file_sink(events)])
    n = 0
    with open(events, "rb") as f, open(out_path, "wb") as out:
        for line in f:
            topic, part, key, headers, value = kafka_message(line.rstrip(b"\n"))
            out.write(f"{topic} {part} {len(headers)} {len(key)} {len(value)}\n".encode())
            for name, v in headers:
                out.write(f"{len(name)} {len(v)}\n{name}{v}".encode())
            out.write(key + value)
            n += 1
    os.unlink(events)
    return n


def bare_argv(s, messages):
    argv = [BARE, "-b", s.bootstrap]
    for k, v in SINK_PROPERTIES.items():
        argv += ["-X", f"{k}={v}"]
    return argv + [messages]


def run_bare(s, messages, count):
    """One bare producer run over messages on a fresh broker."""
    fresh_kafka(s)
    log = os.path.join(s.dir, f"bare-{os.urandom(2).hex()}.log")
    run = measure(bare_argv(s, messages), None, log)
    if run.rc != 0 or f"messages {count} delivered {count} failed 0 misplaced 0" not in run.log:
        raise RuntimeError(f"bare producer exited {run.rc}:\n{run.log[-3000:]}")
    return run


def cycle_split(run):
    """Where the bridge's cycle went, from its cycle line: the delivery phase
    is what compares with the bare producer."""
    c = committed(run)
    return " ".join(f"{k} {c[k]:.1f}" for k in ("poll_ms", "deliver_ms", "commit_ms") if k in c)


# ---- equivalence ----

def kafka_events(s):
    """{event id: (topic, partition, key, headers, event without time)}."""
    out = {}
    for topic in st.TOPICS.values():
        for m in s.consume(topic):
            ev = dict(m["event"])
            ev.pop("time")
            if ev["id"] in out:
                raise AssertionError(f"event {ev['id']} twice on Kafka")
            out[ev["id"]] = (topic, m["partition"], m["key"], m["headers"], ev)
    return out


def compare(what, got_b, got_p):
    (ev_b, snap_b), (ev_p, snap_p) = got_b, got_p
    problems = []
    if set(ev_b) != set(ev_p):
        problems.append(f"event ids: {len(set(ev_b) - set(ev_p))} only from the bridge, "
                        f"{len(set(ev_p) - set(ev_b))} only from the reference")
    differ = [i for i in set(ev_b) & set(ev_p) if ev_b[i] != ev_p[i]]
    if differ:
        parts = ("topic", "partition", "key", "headers", "event")
        b, p = ev_b[differ[0]], ev_p[differ[0]]
        which = [f"{n}: {str(x)[:300]} / {str(y)[:300]}"
                 for n, x, y in zip(parts, b, p) if x != y]
        problems.append(f"{len(differ)} events differ; event {differ[0]}, bridge / reference:"
                        + "".join("\n  " + w for w in which))
    if snap_b[1] != snap_p[1]:
        problems.append(f"meta: bridge {snap_b[1]}, reference {snap_p[1]}")
    fields = set(snap_b[0]) | set(snap_p[0])
    bad = [f for f in fields if snap_b[0].get(f) != snap_p[0].get(f)]
    if bad:
        problems.append(f"{len(bad)} of {len(fields)} snapshot fields differ, e.g. {bad[0]!r}: "
                        f"{snap_b[0].get(bad[0])!r} / {snap_p[0].get(bad[0])!r}")
    if problems:
        raise AssertionError(f"{what}: not equivalent:\n" + "\n".join(problems))
    print(f"verified {what}: {len(ev_b)} events, {len(snap_b[0])} snapshot fields, "
          f"meta {dict((k.decode(), v.decode()) for k, v in snap_b[1].items())}: identical")


def verify_dump(s, events):
    """The bare producer's messages (kafka_message() of the file sink's
    lines) equal what the bridge put on Kafka in the same run, value, key,
    headers and partition."""
    with open(events, "rb") as f:
        made = sorted(kafka_message(line.rstrip(b"\n")) for line in f)
    got = sorted((topic, m["partition"], m["key"].encode(), tuple(m["headers"].items()),
                  m["payload"].encode())
                 for topic in st.TOPICS.values() for m in s.consume(topic))
    if made != got:
        bad = next((a, b) for a, b in zip(made + [None] * len(got), got + [None] * len(made))
                   if a != b)
        raise AssertionError(f"the bare producer's messages: {len(made)} made from the file "
                             f"sink, {len(got)} on Kafka; first difference:\n  {bad[0]!r:.400}"
                             f"\n  {bad[1]!r:.400}")
    print(f"verified the bare producer's messages: {len(made)}, identical to the bridge's")


def verify(s, base, r, step0, step1):
    """Bridge and reference (bridge fingerprint) from the same states."""
    def one(impl, pageset, state, extra=()):
        run_cycle(s, base, impl, pageset, "emit", state, r, fingerprint="bridge", extra=extra)
        return kafka_events(s), snapshot(r)

    # The bridge's first cycle also writes its events to a file sink, the
    # source of the bare producer's messages: they must be Kafka's.
    events = os.path.join(s.dir, "verify-events.jsonl")
    b = one("bridge", step0, None, [file_sink(events)])
    verify_dump(s, events)
    after_first = save_state(r)
    p = one("python", step0, None)
    compare(f"first cycle (emit, {step0.records} sessions)", b, p)
    compare(f"churn cycle ({step1.records} sessions)", one("bridge", step1, after_first),
            one("python", step1, after_first))


# ---- figures ----

med = statistics.median


def per_session_us(runs, sessions):
    return med(x.cpu for x in runs) / sessions * 1e6


def rate(runs, sessions):
    return med(sessions / x.wall for x in runs)


def ratio(bridge, python):
    """Per pair (run i of each, taken one after the other): bridge's
    sessions/s over the reference's, i.e. the reference's wall over the
    bridge's; the median of the pairs."""
    return med(p.wall / b.wall for b, p in zip(bridge, python))


def mib(kib):
    return kib / 1024


def profile(s, base, r, pageset, state, args):
    """perf record -g of one bridge cycle over pageset from Redis state
    (None: empty, i.e. a first cycle with initial_snapshot emit); the top
    of perf report, self time."""
    if state is None:
        r.flushdb()
    else:
        restore_state(r, state)
    fresh_kafka(s)
    data = os.path.join(s.dir, f"perf-{pageset.name}.data")
    conf = config(s, base, pageset, "emit")
    subprocess.run(["perf", "record", "-q", "-g", "-o", data, "--", *argv_of("bridge", conf)],
                   env=s.env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                          "--percent-limit", "1", "-g", "none"], capture_output=True, text=True)
    return [line for line in rep.stdout.splitlines() if line.strip() and
            not line.startswith("#")][:args.perf_lines]


def bench_size(s, base, r, root, sessions, args, floors):
    step0, step1 = generate(s, root, f"s{sessions}", sessions, args.churn)
    print(f"\n{sessions} sessions: step 0 {step0.records} records in {len(step0.files)} pages, "
          f"step 1 {step1.records} in {len(step1.files)}", flush=True)
    res = {"sessions": sessions, "first_n": step0.records, "churn_n": step1.records}

    # Each implementation's own starting snapshot for churn: a baseline cycle.
    start = {}
    for impl in ("bridge", "python"):
        run_cycle(s, base, impl, step0, "baseline", None, r)
        start[impl] = save_state(r)

    messages = os.path.join(s.dir, f"{step0.name}.messages")
    for phase, pageset, initial in (("first", step0, "emit"), ("churn", step1, "emit")):
        # The first cycle's third program: the bare producer of the messages
        # the bridge's first run put on the broker.
        impls = ("bridge", "python", "bare") if phase == "first" else ("bridge", "python")
        runs = {impl: [] for impl in impls}
        events = {}
        for i in range(args.reps):
            for impl in impls:
                if impl == "bare":
                    run = run_bare(s, messages, events["bare"])
                else:
                    state = None if phase == "first" else start[impl]
                    run = run_cycle(s, base, impl, pageset, initial, state, r)
                    events.setdefault(impl, committed(run).get("events"))
                if impl == "bridge" and phase == "first" and i == 0:
                    events["bare"] = dump_messages(s, base, r, pageset, messages)
                    if events["bare"] != events["bridge"]:
                        raise RuntimeError(f"{events['bare']} messages for the bare producer, "
                                           f"the bridge logged {events['bridge']} events")
                runs[impl].append(run)
                print(f"  {phase:<5} {impl:<6} #{i + 1}: wall {run.wall:6.3f} s  "
                      f"cpu {run.cpu:6.3f} s  rss {mib(run.rss_kib):7.1f} MiB"
                      + (f"  ({run.log.strip()})" if impl == "bare" else "")
                      + (f"  ({cycle_split(run)})" if impl == "bridge" else ""), flush=True)
        if events.get("bridge") != events.get("python"):
            print(f"  warning: {phase}: the bridge logged {events.get('bridge')} events, "
                  f"the reference {events.get('python')}")
        res[phase] = runs
        res[phase + "_events"] = events.get("bridge")
        if phase == "first":
            os.unlink(messages)
        lst = os.path.join(s.dir, f"{pageset.name}.list")
        with open(lst, "w") as f:
            f.write("\n".join(pageset.files) + "\n")
        res[phase + "_floor"] = {}
        for name, exe in floors.items():
            fr = [measure([exe, lst], None, os.path.join(s.dir, f"floor-{name}.log"))
                  for _ in range(args.reps)]
            if fr[0].rc != 0 or f"records {pageset.records}" not in fr[0].log:
                raise RuntimeError(f"floor {name}: {fr[0].log}")
            res[phase + "_floor"][name] = fr

    if args.perf:
        res["perf"] = {"churn": profile(s, base, r, step1, start["bridge"], args),
                       "first": profile(s, base, r, step0, None, args)}
    return res


def print_table(results, floors):
    print("\nmedians; ratio = bridge sessions/s / reference sessions/s, per pair; "
          "bare = the bare producer of the first cycle's messages (the broker's own limit), "
          "vs bare = bridge sessions/s / bare sessions/s, per pair; "
          "CPU = user + sys of the whole process")
    head = (f"{'sessions':>9} {'cycle':<6}{'bridge/s':>10}{'python/s':>10}{'ratio':>7}"
            f"{'bare/s':>10}{'vs bare':>8}{'bridge µs':>11}{'python µs':>11}{'bare µs':>9}")
    for name in floors:
        head += f"{name + ' µs':>13}"
    head += f"{'bridge MiB':>12}{'python MiB':>12}{'events':>9}"
    print(head)
    for res in results:
        for phase in ("churn", "first"):
            n = res[phase + "_n"]
            b, p = res[phase]["bridge"], res[phase]["python"]
            bare = res[phase].get("bare")
            line = (f"{res['sessions']:>9} {phase:<6}{rate(b, n):>10.0f}{rate(p, n):>10.0f}"
                    f"{ratio(b, p):>6.1f}x")
            line += (f"{rate(bare, n):>10.0f}{ratio(b, bare):>7.2f}x" if bare
                     else f"{'-':>10}{'-':>8}")
            line += f"{per_session_us(b, n):>11.2f}{per_session_us(p, n):>11.2f}"
            line += f"{per_session_us(bare, n):>9.2f}" if bare else f"{'-':>9}"
            for name in floors:
                line += f"{per_session_us(res[phase + '_floor'][name], n):>13.2f}"
            line += (f"{mib(med(x.rss_kib for x in b)):>12.1f}"
                     f"{mib(med(x.rss_kib for x in p)):>12.1f}{res[phase + '_events'] or 0:>9}")
            print(line)
    for res in results:
        for phase, what in (("churn", "churn cycle"), ("first", "first cycle, emit")):
            if res.get("perf"):
                print(f"\nperf, bridge {what}, {res['sessions']} sessions "
                      f"(perf report --stdio --no-children):")
                print("\n".join(res["perf"][phase]))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="10000",
                    help="population sizes, comma-separated (default 10000)")
    ap.add_argument("--churn", type=float, default=0.01, help="share changed by the tick")
    ap.add_argument("--reps", type=int, default=3, help="runs of each program per phase")
    ap.add_argument("--verify-sessions", type=int, default=2000,
                    help="population of the equivalence check (0: skip it)")
    ap.add_argument("--perf", action="store_true",
                    help="profile one bridge churn cycle and one first cycle")
    ap.add_argument("--perf-lines", type=int, default=25)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sessions.split(",") if x]

    ensure_packages(args.perf)
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PY):
        # redis-py is Debian's: run the harness itself where it is installed.
        os.execv(DEBIAN_PY, [DEBIAN_PY, os.path.abspath(__file__), *sys.argv[1:]])
    import redis  # installed by ensure_packages() when missing

    for exe in (st.BRIDGE, st.KAFKA_MOCK, st.SIM, BARE):
        if not os.path.exists(exe):
            sys.exit(f"{exe} is missing: build first (cmake --build build)")
    s = st.Stack("side")
    try:
        global LAUNCHER
        LAUNCHER, floors = build_tools(s.dir)
        pages_root = os.path.join(s.dir, "pages")
        os.makedirs(pages_root)
        s.start_redis()
        s.start_kafka()
        base = start_nginx(s, pages_root)
        r = redis.Redis(host="127.0.0.1", port=s.redis_port)
        if args.verify_sessions:
            v0, v1 = generate(s, pages_root, "verify", args.verify_sessions, args.churn)
            verify(s, base, r, v0, v1)
        results = [bench_size(s, base, r, pages_root, n, args, floors) for n in sizes]
        print(f"\nsession-bridge side by side, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
              f", {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
              f"churn {args.churn:.1%}, {args.reps} runs of each")
        print_table(results, floors)
    finally:
        s.close()


if __name__ == "__main__":
    main()
