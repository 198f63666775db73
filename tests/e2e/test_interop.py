"""Events that other tools accept as they are (issue 13): Kafka keys placed
where a Java producer places them, so that Kafka Streams and Java consumers
co-partition with us."""

import collections
import os
import sys
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
