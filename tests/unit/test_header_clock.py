import time

from schemas.wire import headers as ce


def test_time_header_is_rfc3339_utc_and_current():
    value = ce.time_header_value().decode()
    parsed = ce.parse_time(value)
    assert value.endswith("Z")
    assert abs(parsed.timestamp() - time.time()) < 2


def test_id_sequence_ids_are_unique_within_and_across_sequences():
    a, b = ce.IdSequence(), ce.IdSequence()
    ids = [a() for _ in range(1000)] + [b() for _ in range(1000)]
    assert len(set(ids)) == 2000
