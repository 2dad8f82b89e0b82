"""The peer benchmark's pure parts: its library settings, its figures and its checks.
(The run itself needs Postgres and the `bench` extra; it is a benchmark, not a test.)"""

from __future__ import annotations

from array import array

import pytest

from bench.peer_eventsourcing import check_correctness, library_env, summarise
from cqrsctl.workload import WorkloadSpec, expected_outcome, generate


def test_library_env_takes_the_connection_from_the_dsn_and_keeps_its_own_schema():
    env = library_env("postgresql://alice:secret@10.0.0.5:6543/shop", schema="peer_x", accounts=42)
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("10.0.0.5", "6543")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("alice", "secret")
    assert env["POSTGRES_DBNAME"] == "shop"
    assert env["POSTGRES_SCHEMA"] == "peer_x"
    assert env["AGGREGATE_CACHE_MAXSIZE"] == "42"
    assert env["AGGREGATE_CACHE_FASTFORWARD"] == "n"
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "y"
    assert (
        library_env("postgresql://u@h/d", db_functions=False)["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    )


def written_like_the_model(spec: WorkloadSpec, step: float = 0.002) -> dict:
    """Writer timings for a run that got every command right: command i is called at i*step
    and returns 1 ms later; accepted commands get consecutive notification IDs."""
    outcome = expected_outcome(generate(spec))
    ids, next_id = [], 1
    for accepted in outcome.accepted:
        ids.append(next_id if accepted else 0)
        next_id += accepted
    return {
        "started": array("d", (i * step for i in range(spec.total))),
        "returned": array("d", (i * step + 0.001 for i in range(spec.total))),
        "notification_ids": array("q", ids),
        "rejections": dict(outcome.rejections),
    }


def test_summarise_measures_rates_and_latencies_from_the_timings():
    spec = WorkloadSpec(accounts=10, commands=490)
    written = written_like_the_model(spec)
    # Each event becomes visible 50 ms after its command was called.
    visible_at = {
        nid: begin + 0.05
        for begin, nid in zip(written["started"], written["notification_ids"], strict=True)
        if nid
    }
    figures = summarise(spec, written, {"visible_at": visible_at})
    last_call = (spec.total - 1) * 0.002
    assert figures["write_cmds_per_s"] == pytest.approx(spec.total / (last_call + 0.001))
    assert figures["e2e_cmds_per_s"] == pytest.approx(spec.total / (last_call + 0.05))
    assert figures["write_latency_ms"]["p99"] == pytest.approx(1.0)
    assert figures["visible_latency_ms"]["p50"] == pytest.approx(50.0)
    assert figures["accepted"] + figures["rejected"] == spec.total
    assert figures["events"] == figures["accepted"]


def test_check_correctness_passes_a_right_run_and_names_each_kind_of_wrong():
    spec = WorkloadSpec(accounts=10, commands=490)
    model = expected_outcome(generate(spec))
    written = written_like_the_model(spec)
    assert check_correctness(spec, written, model.events, model.balances) == []

    wrong_balance = {**model.balances, "acc-000003": model.balances["acc-000003"] + 1}
    assert any(
        "balances differ" in p
        for p in check_correctness(spec, written, model.events, wrong_balance)
    )
    assert any(
        "applied" in p for p in check_correctness(spec, written, model.events - 1, model.balances)
    )
    flipped = model.accepted.index(False)
    written["notification_ids"][flipped] = 999_999
    problems = check_correctness(spec, written, model.events, model.balances)
    assert any(f"command {flipped} accepted=True" in p for p in problems)
