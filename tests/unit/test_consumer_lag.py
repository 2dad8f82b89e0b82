"""Consumer lag in records and seconds, per owned partition: commit markers on
transactional topics are not counted, the age of the oldest waiting record comes from
samples of the end offset, and a partition no longer owned loses its series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from processors.consumer_lag import ConsumerLag, LagClock


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_the_oldest_waiting_record_dates_from_the_first_sample_that_showed_it() -> None:
    clock = LagClock()
    clock.observe(10.0, 5)  # offsets 0..4 present
    clock.observe(11.0, 5)  # no growth: no new sample
    clock.observe(12.0, 8)
    assert clock.samples == [(10.0, 5), (12.0, 8)]
    assert clock.waiting_since(0) == 10.0
    assert clock.waiting_since(5) == 12.0  # offset 5 appeared between 10.0 and 12.0
    assert clock.samples == [(12.0, 8)]  # what the position passed is dropped
    assert clock.waiting_since(8) is None
    assert clock.samples == []


def test_a_truncated_partition_starts_over_and_a_long_history_is_thinned() -> None:
    clock = LagClock(max_samples=4)
    for t in range(5):
        clock.observe(float(t), 10 * (t + 1))
    assert len(clock.samples) <= 4 and clock.samples[0] == (0.0, 10)
    clock.observe(9.0, 3)
    assert clock.samples == [(9.0, 3)]


def test_lag_in_records_and_seconds_per_partition() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(registry)
    lag.update({("t", 0): (10, 4), ("t", 1): (3, 3)}, now=100.0)
    lag.update({("t", 0): (12, 6), ("t", 1): (3, 3)}, now=107.5)
    assert _series(registry, "cqrs_consumer_lag_records") == {("t", "0"): 6, ("t", "1"): 0}
    # Offset 6 was below the end at the first sample, 7.5 s ago.
    assert _series(registry, "cqrs_consumer_lag_seconds") == {("t", "0"): 7.5, ("t", "1"): 0}


def test_the_commit_marker_of_a_transactional_topic_is_not_lag() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(registry)
    # Last record at 9, its commit marker at 10: the end is 11, the next offset 10.
    for now in (1.0, 60.0):
        lag.update({("events", 0): (11, 10), ("commands", 0): (11, 10)}, {"events"}, now)
    assert _series(registry, "cqrs_consumer_lag_records") == {
        ("events", "0"): 0,
        ("commands", "0"): 1,  # not transactional: a record may be waiting
    }
    assert _series(registry, "cqrs_consumer_lag_seconds") == {
        ("events", "0"): 0,
        ("commands", "0"): 59.0,
    }
    # Records behind the marker still count, the marker once at most.
    lag.update({("events", 0): (20, 10)}, {"events"}, 61.0)
    assert _series(registry, "cqrs_consumer_lag_records") == {("events", "0"): 9}


def test_a_partition_no_longer_owned_loses_its_series_so_sums_count_it_once() -> None:
    registry = CollectorRegistry()
    before, after = ConsumerLag(registry), ConsumerLag(CollectorRegistry())
    before.update({("t", 0): (50, 0), ("t", 1): (50, 0)}, now=1.0)
    # A rebalance: partition 1 moves to another worker.
    before.update({("t", 0): (50, 0)}, now=2.0)
    after.update({("t", 1): (50, 0)}, now=2.0)
    assert _series(registry, "cqrs_consumer_lag_records") == {("t", "0"): 50}
    assert set(_series(registry, "cqrs_consumer_lag_seconds")) == {("t", "0")}
    # forget (the revoke callback's path) removes it at once, twice is harmless.
    before.forget("t", 0)
    before.forget("t", 0)
    assert _series(registry, "cqrs_consumer_lag_records") == {}
    before.rebalances.inc()
    assert registry.get_sample_value("cqrs_consumer_rebalances_total") == 1
