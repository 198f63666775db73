"""Events that other tools accept as they are (issue 13): Kafka keys placed
where a Java producer places them, so that Kafka Streams and Java consumers
co-partition with us; the published event schema (conf/schema/
event.schema.json), which real validators hold every event to, and which
broken events fail; the AsyncAPI document of the topics and the webhook,
valid against AsyncAPI's own JSON Schema, and what the bridge sends held to
its messages."""

import base64
import collections
import copy
import json
import os
import subprocess
import sys
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

try:
    import yaml
except ImportError:  # python3-yaml, installed by deploy/deps.sh
    yaml = None

ASYNCAPI = os.path.join(st.ROOT, "conf", "schema", "asyncapi.yaml")
# AsyncAPI's own JSON Schema of 3.0.0 documents, from the npm package
# @asyncapi/specs (deploy/deps.sh installs it when npm is there); the
# "without-$id" variant resolves every $ref inside the file.
ASYNCAPI_META = os.path.join("@asyncapi", "specs", "schemas", "3.0.0-without-$id.json")

SOURCE = "century"
# Several partitions, and not a power of two, so that placements by
# different hashes rarely agree.
PARTITIONS = 7


def java_murmur2(data):
    """org.apache.kafka.common.utils.Utils.murmur2, as a signed 32-bit int."""
    m = 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4
    for i in range(whole):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[4 * whole:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key, partitions):
    """The Java producer's BuiltInPartitioner.partitionForKey:
    toPositive(murmur2(key)) % partitions, toPositive being & 0x7fffffff."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPlacement(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)
        self.s.start_redis()
        self.s.start_kafka(partitions=PARTITIONS)
        self.s.start_sim(active=30, completed=10, seed=5)

    def test_murmur2_is_javas(self):
        # Kafka's own vectors (clients' UtilsTest.testMurmur2): the hash
        # below is the Java client's, not merely a murmur2.
        for key, want in (("21", -973932308), ("foobar", -790332482),
                          ("a-little-bit-long-string", -985981536),
                          ("a-little-bit-longer-string", -1486304829),
                          ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
                          ("abc", 479470107)):
            self.assertEqual(java_murmur2(key.encode()), want, key)

    def placements(self, props):
        conf = self.s.config(SOURCE, initial_snapshot="emit", sinks=[
            {"name": "bus", "type": "kafka", "brokers": self.s.bootstrap, "topics": st.TOPICS,
             "properties": {"message.timeout.ms": "5000", **props}}])
        self.s.once(conf)
        got = collections.Counter()
        for kind, m in self.s.events():
            got[(st.TOPICS[kind], m["key"], m["partition"])] += 1
        self.assertGreaterEqual(len(got), 40, "expected an event per session at least")
        return got

    def test_keys_land_on_the_partition_a_java_producer_chooses(self):
        got = self.placements({})
        wrong = [(topic, key, p, java_partition(key.encode(), PARTITIONS))
                 for topic, key, p in got if p != java_partition(key.encode(), PARTITIONS)]
        self.assertEqual(wrong, [], "(topic, key, partition, Java's partition)")
        self.assertGreater(len({p for _, _, p in got}), PARTITIONS // 2,
                           "the keys should spread over the partitions")

    def test_properties_override_the_partitioner(self):
        # librdkafka's "consistent": CRC-32 of the key, the same as zlib's.
        got = self.placements({"partitioner": "consistent"})
        wrong = [(topic, key, p) for topic, key, p in got
                 if p != zlib.crc32(key.encode()) % PARTITIONS]
        self.assertEqual(wrong, [], "(topic, key, partition) not placed by CRC-32")
        # ... which is not where Java puts them: the default above is not a no-op.
        self.assertTrue(any(p != java_partition(key.encode(), PARTITIONS) for _, key, p in got))


def need_validator(test):
    if st.event_validator() is None:
        test.fail("python3-jsonschema is not installed (deploy/deps.sh installs it): "
                  "the events cannot be held to their schema")


class EventSchema(unittest.TestCase):
    """The schema itself: its examples pass, and each mutation of a valid
    event, one rule of CONTRACT §5-6 broken, fails."""

    def setUp(self):
        need_validator(self)
        with open(st.EVENT_SCHEMA) as f:
            self.examples = json.load(f)["examples"]

    def test_the_examples_are_valid(self):
        self.assertGreaterEqual(len(self.examples), 2)
        for ev in self.examples:
            self.assertEqual(st.schema_problems(ev), [], ev["type"])

    def test_broken_events_fail(self):
        completed, vanished = self.examples

        def drop(*path):
            def f(ev):
                node = ev
                for p in path[:-1]:
                    node = node[p]
                del node[path[-1]]
            return f

        def put(value, *path):
            def f(ev):
                node = ev
                for p in path[:-1]:
                    node = node[p]
                node[path[-1]] = value
            return f

        mutations = (  # (base event, what is broken, the change)
            (completed, "another specversion", put("0.3", "specversion")),
            (completed, "an id in capitals", put("3B2C4F7C0A9D4E1F8A6B5C4D3E2F1A0B", "id")),
            (completed, "an id of 31 digits", put("3b2c4f7c0a9d4e1f8a6b5c4d3e2f1a0", "id")),
            (completed, "a source of another producer", put("someone/century", "source")),
            (completed, "an unknown type", put("session.paused", "type")),
            (completed, "no subject", drop("subject")),
            (completed, "an empty subject", put("", "subject")),
            (completed, "a time that is not RFC 3339", put("yesterday", "time")),
            (completed, "a time not in UTC", put("2026-11-23T10:00:00+01:00", "time")),
            (completed, "month 13", put("2026-13-23T10:00:00.123Z", "time")),
            (completed, "another datacontenttype", put("text/plain", "datacontenttype")),
            (completed, "an attribute the contract does not have", put(1, "extra")),
            (completed, "no data", drop("data")),
            (completed, "no data.reason", drop("data", "reason")),
            (completed, "no data.session", drop("data", "session")),
            (completed, "a data member the contract does not have", put(1, "data", "extra")),
            (completed, "an unknown state", put("done", "data", "state")),
            (completed, "an unknown reason", put("timeout", "data", "reason")),
            (completed, "an unknown provider", put("moodle", "data", "provider")),
            (completed, "a source name in capitals", put("Century", "data", "source")),
            (completed, "synthesized as a string", put("false", "data", "synthesized")),
            (completed, "the session as a string", put("{}", "data", "session")),
            (completed, "the session as a list", put([], "data", "session")),
            (completed, "a null session that did not vanish", put(None, "data", "session")),
            (completed, "a null status that did not vanish", put(None, "data", "status")),
            (completed, "a status as a number", put(2, "data", "status")),
            (completed, "completed from pending", put("pending", "data", "previous_state")),
            (completed, "completed entering active", put("active", "data", "state")),
            (completed, "a terminal previous state", put("completed", "data", "previous_state")),
            (completed, "a synthesized completed", put(True, "data", "synthesized")),
            (completed, "vanished but completed", put("vanished", "data", "reason")),
            (vanished, "vanished with a status", put("in_progress", "data", "status")),
            (vanished, "vanished as a started", put("session.started", "type")),
            (vanished, "cancelled entering completed", put("completed", "data", "state")),
        )
        passed = []
        for base, what, change in mutations:
            ev = copy.deepcopy(base)
            change(ev)
            if not st.schema_problems(ev):
                passed.append(what)
        self.assertEqual(passed, [], "broken events the schema accepts")


def asyncapi_document(test):
    if yaml is None:
        test.skipTest("python3-yaml is not installed (deploy/deps.sh installs it)")
    with open(ASYNCAPI) as f:
        return yaml.safe_load(f)


def local(doc, node):
    """node with its local $ref followed (to the end of a chain)."""
    while isinstance(node, dict) and node.get("$ref", "").startswith("#/"):
        target = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def fragment_problems(doc, schema, instance):
    """What a schema of the AsyncAPI document finds wrong with instance:
    the event schema where it is referenced, allOf part by part, any other
    fragment (which holds no $ref) by a Draft 7 validator."""
    import jsonschema

    schema = local(doc, schema)
    if schema.get("$ref") == "./event.schema.json":
        return st.schema_problems(instance)
    if "allOf" in schema:
        return [p for part in schema["allOf"] for p in fragment_problems(doc, part, instance)]
    assert "$ref" not in json.dumps(schema), schema
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(instance)]


class AsyncApi(unittest.TestCase):
    def test_document_follows_asyncapi_3(self):
        doc = asyncapi_document(self)
        need_validator(self)
        import jsonschema

        meta = None
        try:
            root = subprocess.run(["npm", "root", "-g"], capture_output=True, timeout=60,
                                  check=True).stdout.decode().strip()
            meta = os.path.join(root, ASYNCAPI_META)
        except (OSError, subprocess.SubprocessError):
            pass
        if meta is None or not os.path.exists(meta):
            self.skipTest("npm package @asyncapi/specs is not installed (deploy/deps.sh "
                          "installs it where npm is): the document's structure is not checked")
        with open(meta) as f:
            schema = json.load(f)
        kw = {}
        try:
            import referencing  # noqa: F401  (jsonschema >= 4.18 resolves by it)
        except ImportError:
            # Debian 12's jsonschema 4.10 looks for $id in every subschema
            # first and trips over AsyncAPI's copy of the draft 7
            # meta-schema, whose properties include one named "$id"; this
            # file's $refs are all local, so that search is not needed.
            class LocalRefs(jsonschema.RefResolver):
                def _find_in_subschemas(self, url):
                    return None
            kw["resolver"] = LocalRefs.from_schema(schema)
        v = jsonschema.Draft7Validator(schema, **kw)
        self.assertEqual([f"{list(e.absolute_path)}: {e.message[:300]}"
                          for e in v.iter_errors(doc)], [])
        # ... and the validator does find a broken document.
        broken = dict(doc, channels={"started": {"address": 5}})
        self.assertNotEqual(list(v.iter_errors(broken)), [])

    def test_references_resolve(self):
        doc = asyncapi_document(self)
        refs = []

        def walk(node):
            if isinstance(node, dict):
                if "$ref" in node:
                    refs.append(node["$ref"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(doc)
        self.assertIn("./event.schema.json", refs)
        for ref in refs:
            if ref.startswith("#/"):
                self.assertIsInstance(local(doc, {"$ref": ref}), dict, ref)
            else:
                self.assertTrue(os.path.exists(os.path.join(os.path.dirname(ASYNCAPI), ref)), ref)
        # The channels are the kafka sink's default topics.
        self.assertEqual({doc["channels"][k]["address"] for k in st.TOPICS},
                         set(st.TOPICS.values()))

    def test_what_the_bridge_sends_follows_the_document(self):
        """Kafka messages (key, headers, value) and webhook requests
        (headers, body) of a real run, against the document's messages."""
        doc = asyncapi_document(self)
        need_validator(self)
        s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(s.close)
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=12, completed=4, seed=9)
        secrets = ["whsec_" + base64.b64encode(os.urandom(32)).decode() for _ in range(2)]
        receiver = Receiver(st.free_port(), secrets).start()
        self.addCleanup(receiver.stop)
        conf = s.config("century", initial_snapshot="emit", sinks=[
            {"name": "bus", "type": "kafka", "brokers": s.bootstrap, "topics": st.TOPICS,
             "properties": {"message.timeout.ms": "5000"}},
            {"name": "hook", "type": "webhook", "url": receiver.url, "secrets": secrets,
             "retry_schedule_s": [0, 0.5, 1], "timeout_s": 2}])
        s.once(conf)
        s.tick(started=3, completed=3, vanished=2)
        s.once(conf)

        by_topic = {}
        for name, ch in doc["channels"].items():
            if ch["address"] is not None:
                (msg,) = ch["messages"].values()
                by_topic[ch["address"]] = local(doc, msg)
        problems, kinds = [], collections.Counter()
        for kind, m in s.events():
            msg = by_topic[st.TOPICS[kind]]
            kinds[kind] += 1
            for what, schema, value in (
                    ("key", msg["bindings"]["kafka"]["key"], m["key"]),
                    ("headers", msg["headers"], m["headers"]),
                    ("value", msg["payload"], m["event"])):
                problems += [(kind, what, p) for p in fragment_problems(doc, schema, value)]
        self.assertEqual(set(kinds), set(st.TOPICS), "every topic should have been seen")

        hook = local(doc, doc["channels"]["webhook"]["messages"]["event"])
        deliveries = st.wait_for(lambda: len(receiver.unique()) == sum(kinds.values()) and
                                 receiver.received(), timeout=30, what="the webhook deliveries")
        for d in deliveries:
            for what, schema, value in (("headers", hook["headers"], d["headers"]),
                                        ("body", hook["payload"], d["event"])):
                problems += [("webhook", what, p) for p in fragment_problems(doc, schema, value)]
        self.assertEqual(problems, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
