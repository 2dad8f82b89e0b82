from processors.partitioning import murmur2, partition_for


def test_murmur2_matches_kafkas_java_test_vectors():
    # From Kafka's clients UtilsTest.testMurmur2 (org.apache.kafka.common.utils).
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for data, expected in cases.items():
        assert murmur2(data) == expected, data


def test_partition_is_positive_modulo():
    assert all(0 <= partition_for(f"acct-{i}", 6) < 6 for i in range(1000))
    assert len({partition_for(f"acct-{i}", 6) for i in range(1000)}) == 6
