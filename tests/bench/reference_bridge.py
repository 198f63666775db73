#!/usr/bin/python3
"""A reference implementation of one session-bridge cycle, in idiomatic Python.

This is the program a team would write with the libraries it would pick
(requests, redis-py, confluent-kafka) to do what `session-bridge once` does
for one Century Smart IA source: it is the yardstick of
tests/bench/bench_side_by_side.py, not part of the product.

One run is one cycle, as a whole process:

1. load the source's snapshot (HGETALL P:snap:S; P:meta:S tells whether one
   exists), as the bridge does before its poll;
2. fetch every page of the in-progress and then the completed list
   (CONTRACT §4: x-api-key, limit 100, cursor from pagination.nextCursor until
   null) with one requests.Session, so that the connection is kept alive,
   and diff the records as they arrive with the rules of diff/diff.c
   (CONTRACT §5: forward-only states, synthesized started, duplicates keep the
   most advanced observation, vanish_grace, initial_snapshot); nothing is
   produced before the poll is complete;
3. produce the CloudEvents of CONTRACT §6 with confluent-kafka (acks=all,
   enable.idempotence=true, partitioner murmur2_random, key
   `<source>/<session_id>`, headers ce_id, ce_type, ce_source, content-type),
   and flush: every delivery report must be a success, or nothing is committed
   and the exit code is 1;
4. commit the delta (changed and removed sessions, then the meta hash) in one
   MULTI/EXEC, in chunks of 1,000 fields per command, as bridge/store/snapshot.c does.

It reads the same configuration file as the bridge (redis, sources[0],
sinks[0], with ${VAR} expanded from the environment), so that both are
pointed at the same upstream, Redis and broker by one file.

The snapshot hash holds the bridge's own encoding (diff_record_encode():
"<state digit>:<misses>:<16 hex fingerprint>:<raw status>"), so both leave
the same Redis end state. The fingerprint is each implementation's own
choice of hash over a record:
  --fingerprint bridge   diff_fingerprint(): XXH3-64 of the record's compact
                         text, through ctypes and Debian's libxxhash0; the
                         benchmark verifies equivalence with it: same hash
                         contents, byte for byte.
  --fingerprint fast     (default) BLAKE2b-64 of the record re-serialised
                         compactly in document order: what a Python program
                         would use to notice a changed record. Same job, same
                         layout, different 16 hex digits.

What it skips, on purpose (none of it changes the work of one cycle):
leases and the fenced commit (one process, one source), the durable outbox
and dead letters (Kafka only), retries and Retry-After, the page, body and
string bounds, metrics, logging beyond one summary line on stderr, and
config validation. Like the bridge, it keeps the last record of every
pending or active session in Redis (P:rec:S, written with the delta) and a
vanished session's event carries it; the record is stored re-serialised
compactly (json.dumps), not as the bytes received: the events are still
equal as JSON.
"""

import argparse
import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import sys
import time

import redis
import requests
from confluent_kafka import Producer

PROVIDER = "century_smart_ia"
LISTS = ("in-progress", "completed")
PAGE_LIMIT = 100  # the API's maximum (seed 000)
MAX_PAGES = 20000  # a provider that pages forever must not keep us here forever
COMPLETED_LOOKBACK_S = 7 * 24 * 3600  # the bridge's default completed_lookback_s
STORE_BATCH = 1000  # fields per HSET/HDEL, as bridge/store.h STORE_BATCH
TIMEOUT_S = 10

# diff_state_t digits as stored; names as events show them.
NONE, PENDING, ACTIVE, COMPLETED, CANCELLED = range(5)
STATE_NAMES = {PENDING: "pending", ACTIVE: "active", COMPLETED: "completed",
               CANCELLED: "cancelled"}
STATUS_MAP = {"IN_PROGRESS": ACTIVE, "COMPLETED": COMPLETED}  # CONTRACT §5, century
UNKNOWN = None  # observation of an unmapped raw status
EV_STARTED, EV_COMPLETED, EV_CANCELLED = "session.started", "session.completed", "session.cancelled"
TOPIC_KEY = {EV_STARTED: "started", EV_COMPLETED: "completed", EV_CANCELLED: "cancelled"}


# ---- configuration ----

def expand(value):
    """${VAR} and ${VAR:-default} in every string, as CONTRACT §3 says."""
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, str):
        def one(m):
            name, default = m.group(1), m.group(3)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                sys.exit(f"config: ${{{name}}} is not set")
            return default
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", one, value)
    return value


# ---- fingerprints ----

def _xxh3_64():
    """XXH3_64bits() of Debian's libxxhash0 (the bridge's own hash), through
    ctypes: the standard library has no XXH3."""
    lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
    fn = lib.XXH3_64bits
    fn.restype = ctypes.c_uint64
    fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
    return fn


_XXH3 = None


def fingerprint_bridge(record):
    """diff_fingerprint() of diff/record.c: XXH3-64 of the record's bytes. The
    bridge hashes the record as received; the simulator's pages are compact
    JSON, whose records re-serialise compactly to the same bytes."""
    global _XXH3
    if _XXH3 is None:
        _XXH3 = _xxh3_64()
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return _XXH3(text, len(text))


def fingerprint_fast(record):
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


# ---- the poll ----

def poll(http, base_url, api_key, now_s):
    """Every record of both lists, in order: in-progress first, as the bridge
    reads them (a session completing meanwhile is seen twice, never missed)."""
    for name in LISTS:
        url = f"{base_url}/smart-ia/sessions/{name}"
        params = {"limit": PAGE_LIMIT}
        if name == "completed":
            params["startDate[gt]"] = str(now_s - COMPLETED_LOOKBACK_S)
        for _ in range(MAX_PAGES):
            r = http.get(url, params=params, headers={"x-api-key": api_key}, timeout=TIMEOUT_S)
            r.raise_for_status()
            body = r.json()
            yield from body["data"]
            cursor = body["pagination"].get("nextCursor")
            if not cursor:
                break
            params = {"limit": PAGE_LIMIT, "cursor": cursor}
            if name == "completed":
                params["startDate[gt]"] = str(now_s - COMPLETED_LOOKBACK_S)
        else:
            raise RuntimeError(f"{name}: more than {MAX_PAGES} pages")


# ---- the diff (rules of diff/diff.c) ----

def decode(value):
    """diff_record_decode(): (state, misses, fingerprint, raw status)."""
    state, misses, fp, status = value.split(":", 3)
    return int(state), int(misses), int(fp, 16), status


def encode(state, misses, fp, status):
    return f"{state}:{misses}:{fp:016x}:{status}"


def rank(obs):
    """How advanced an observation is, for duplicates: terminal states tie."""
    return {PENDING: 1, ACTIVE: 2, COMPLETED: 3, CANCELLED: 3}.get(obs, 0)


def plan(stored, obs, status, fp, baseline):
    """(record to store, [(type, state, previous_state, synthesized)]) for one
    observation against what is stored (None: absent)."""
    cur = stored[0] if stored else NONE
    if obs is UNKNOWN:
        # A sighting only: a session known in no state keeps its latest raw
        # status; a known one keeps the status its state came from.
        if cur == NONE:
            return (cur, 0, fp, status), []
        return (cur, 0, stored[2], stored[3]), []
    if cur in (COMPLETED, CANCELLED) or obs <= cur:
        return (cur, 0, fp, status), []
    rec = (obs, 0, fp, status)
    if baseline:
        return rec, []
    if obs == ACTIVE:
        return rec, [(EV_STARTED, ACTIVE, cur, False)]
    if obs == COMPLETED:
        if cur < ACTIVE:
            return rec, [(EV_STARTED, ACTIVE, cur, True),
                         (EV_COMPLETED, COMPLETED, ACTIVE, False)]
        return rec, [(EV_COMPLETED, COMPLETED, cur, False)]
    if obs == CANCELLED:
        return rec, [(EV_CANCELLED, CANCELLED, cur, False)]
    return rec, []


def vanishable(state):
    return state in (PENDING, ACTIVE)


def sets_last(stored, new):
    """Whether the stored last record is replaced: a session that can vanish
    whose record is new to the store."""
    return vanishable(new[0]) and (stored is None or not vanishable(stored[0])
                                   or stored[2] != new[2])


def event_id(source, session_id, type_name):
    return hashlib.sha256(f"{source}\n{session_id}\n{type_name}".encode()).hexdigest()[:32]


def rfc3339_ms(unix_ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix_ms // 1000)) + \
        f".{unix_ms % 1000:03d}Z"


def make_event(source, sid, ev, reason, status, prev_status, record, when):
    type_name, state, prev_state, synthesized = ev
    return {
        "specversion": "1.0",
        "id": event_id(source, sid, type_name),
        "source": f"session-bridge/{source}",
        "type": type_name,
        "subject": sid,
        "time": when,
        "datacontenttype": "application/json",
        "data": {"source": source, "provider": PROVIDER, "session_id": sid,
                 "state": STATE_NAMES[state], "previous_state": STATE_NAMES.get(prev_state),
                 "status": status, "previous_status": prev_status, "reason": reason,
                 "synthesized": synthesized, "session": record},
    }


def diff(records, stored, source, grace, baseline, fingerprint, when):
    """(observed, events, upserts {id: encoded}, removals [id], last records
    to set {id: record}, last records to drop [id], vanished events) of one
    complete poll. records is consumed as it comes: a record is kept only
    when an event will carry it or it replaces the stored last record, as
    diff.c does, so a churn cycle holds one small tuple per session, not
    every parsed record."""
    seen = {}  # id -> (obs, status, fp, record or None): first sighting's order
    observed = 0
    for rec in records:
        observed += 1
        sid, status = rec["sessionId"], rec["status"]
        if not isinstance(sid, str) or not sid or not isinstance(status, str) or not status:
            raise ValueError("a record without a session id or status")
        obs = STATUS_MAP.get(status, UNKNOWN)
        prev = seen.get(sid)
        if prev is not None and rank(obs) <= rank(prev[0]):
            continue  # duplicates keep the most advanced observation; ties the first
        fp = fingerprint(rec)
        new, evs = plan(stored.get(sid), obs, status, fp, baseline)
        keep = evs or sets_last(stored.get(sid), new)
        seen[sid] = (obs, status, fp, rec if keep else None)
    events, upserts, removals, last_set, last_drop, vanished = [], {}, [], {}, [], []
    for sid, (obs, status, fp, rec) in seen.items():
        old = stored.get(sid)
        new, evs = plan(old, obs, status, fp, baseline)
        if old is None or new != old:
            upserts[sid] = encode(*new)
        if sets_last(old, new):
            last_set[sid] = rec
        elif old is not None and vanishable(old[0]) and not vanishable(new[0]):
            last_drop.append(sid)
        reason = "first_seen" if (old is None or old[0] == NONE) else "status_change"
        prev_status = old[3] if old and old[3] else None
        for ev in evs:
            events.append(make_event(source, sid, ev, reason, status, prev_status, rec, when))
    for sid, old in stored.items():
        if sid in seen:
            continue
        state, misses, fp, status = old
        if misses + 1 < grace:
            upserts[sid] = encode(state, misses + 1, fp, status)
            continue
        removals.append(sid)
        # terminal and never-known sessions are forgotten silently
        if not baseline and state in (PENDING, ACTIVE):
            events.append(make_event(source, sid, (EV_CANCELLED, CANCELLED, state, False),
                                     "vanished", None, status or None, None, when))
            vanished.append(events[-1])
    return observed, events, upserts, removals, last_set, last_drop, vanished


# ---- delivery ----

def producer_of(sink):
    conf = {"bootstrap.servers": sink["brokers"], "acks": "all",
            "enable.idempotence": True, "partitioner": "murmur2_random"}
    conf.update(sink.get("properties", {}))
    producer = Producer(conf)
    # Topic metadata now: librdkafka would otherwise learn of a topic first
    # produced to only at its next 1 s metadata timer (measured: every
    # delivery waited ~1 s against a fresh broker).
    producer.list_topics(timeout=TIMEOUT_S)
    return producer


def deliver(producer, sink, events, source):
    """Produces every event and flushes; raises unless every one was acked."""
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    ce_source = f"session-bridge/{source}"
    for ev in events:
        topic = sink["topics"][TOPIC_KEY[ev["type"]]].replace("{source}", source)
        value = json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode()
        headers = [("ce_id", ev["id"]), ("ce_type", ev["type"]), ("ce_source", ce_source),
                   ("content-type", "application/cloudevents+json")]
        while True:
            try:
                producer.produce(topic, value=value, key=f"{source}/{ev['subject']}",
                                 headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: serve delivery reports
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise RuntimeError(f"{left} events undelivered, {len(failures)} failed "
                           f"({failures[0] if failures else ''})")


# ---- one cycle ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", required=True, help="the bridge's configuration file")
    ap.add_argument("--fingerprint", choices=("fast", "bridge"), default="fast")
    args = ap.parse_args()
    with open(args.config) as f:
        conf = expand(json.load(f))
    src, sink = conf["sources"][0], conf["sinks"][0]
    source, prefix = src["name"], conf["redis"].get("prefix", "sb")
    grace = src.get("vanish_grace", 2)
    fingerprint = fingerprint_bridge if args.fingerprint == "bridge" else fingerprint_fast
    snap_key, meta_key = f"{prefix}:snap:{source}", f"{prefix}:meta:{source}"
    rec_key = f"{prefix}:rec:{source}"

    # Every client is set up first, as a program would at its start (the
    # producer then fetches metadata and its idempotent producer id while
    # the poll runs, as the bridge's does).
    producer = producer_of(sink)
    r = redis.Redis.from_url(conf["redis"]["url"], decode_responses=True)
    observed_ms = int(time.time() * 1000)
    meta = r.hgetall(meta_key)
    stored = {k: decode(v) for k, v in r.hgetall(snap_key).items()}
    baseline = not meta and src.get("initial_snapshot", "baseline") == "baseline"
    with requests.Session() as http:
        records = poll(http, src["base_url"].rstrip("/"), src["auth"]["api_key"],
                       observed_ms // 1000)
        observed, events, upserts, removals, last_set, last_drop, vanished = diff(
            records, stored, source, grace, baseline, fingerprint, rfc3339_ms(observed_ms))
    for i in range(0, len(vanished), STORE_BATCH):
        window = vanished[i:i + STORE_BATCH]
        for ev, text in zip(window, r.hmget(rec_key, [ev["subject"] for ev in window])):
            ev["data"]["session"] = json.loads(text) if text else None
    if events:
        deliver(producer, sink, events, source)

    # The delta, then the meta hash, in one transaction (MULTI/EXEC).
    pipe = r.pipeline(transaction=True)
    items = list(upserts.items())
    for i in range(0, len(items), STORE_BATCH):
        pipe.hset(snap_key, mapping=dict(items[i:i + STORE_BATCH]))
    for i in range(0, len(removals), STORE_BATCH):
        pipe.hdel(snap_key, *removals[i:i + STORE_BATCH])
    items = [(k, json.dumps(v, separators=(",", ":"), ensure_ascii=False))
             for k, v in last_set.items()]
    for i in range(0, len(items), STORE_BATCH):
        pipe.hset(rec_key, mapping=dict(items[i:i + STORE_BATCH]))
    drops = last_drop + removals
    for i in range(0, len(drops), STORE_BATCH):
        pipe.hdel(rec_key, *drops[i:i + STORE_BATCH])
    sessions = len(stored) + sum(1 for k in upserts if k not in stored) - len(removals)
    pipe.hset(meta_key, mapping={"cycle": int(meta.get("cycle", 0)) + 1,
                                 "committed_at": int(time.time() * 1000), "sessions": sessions})
    pipe.execute()
    print(json.dumps({"msg": "cycle committed", "source": source, "observed": observed,
                      "events": len(events), "changes": len(upserts) + len(removals),
                      "sessions": sessions}), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (requests.RequestException, redis.RedisError, RuntimeError, ValueError,
            KeyError) as e:
        print(json.dumps({"msg": "cycle failed", "error": str(e)}), file=sys.stderr)
        sys.exit(1)
