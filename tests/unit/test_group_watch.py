"""GroupWatch reads librdkafka's statistics (the `cgrp` object) to notice a consumer that is
no longer a steady group member (processors/group_watch.py)."""

from __future__ import annotations

import json
import time

from processors.group_watch import GroupWatch


def stats(state: str, join_state: str) -> str:
    # The shape librdkafka's stats_cb delivers, reduced to what GroupWatch reads.
    return json.dumps(
        {"name": "rdkafka#consumer-1", "cgrp": {"state": state, "join_state": join_state}}
    )


def test_a_consumer_that_never_gets_back_to_steady_is_stuck_after_the_limit():
    watch = GroupWatch(limit_s=0.2)
    watch.on_stats(stats("up", "steady"))
    assert not watch.stuck()
    time.sleep(0.1)
    watch.on_stats(stats("up", "wait-join"))  # a broker restart: rejoining
    assert not watch.stuck()
    time.sleep(0.15)
    watch.on_stats(stats("wait-coord", "init"))
    assert watch.stuck()
    assert "wait-coord/init" in watch.why()


def test_steady_statistics_or_a_rebalance_callback_keep_it_alive():
    watch = GroupWatch(limit_s=0.2)
    for _ in range(3):
        time.sleep(0.1)
        watch.on_stats(stats("up", "steady"))  # e.g. an idle member without partitions
        assert not watch.stuck()
    time.sleep(0.15)
    watch.progressed()  # a long restore inside on_assign
    assert not watch.stuck()


def test_a_fresh_consumer_gets_the_limit_to_join_and_producer_stats_are_ignored():
    watch = GroupWatch(limit_s=0.1)
    watch.on_stats(json.dumps({"name": "rdkafka#producer-1"}))  # no cgrp
    assert not watch.stuck()
    time.sleep(0.15)
    assert watch.stuck()
