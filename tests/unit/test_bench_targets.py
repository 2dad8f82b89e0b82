"""The benchmark's verdicts on issue 15's targets and its durability line: pure functions of
the figures a run produced."""

from __future__ import annotations

from typing import Any

from bench.durability import describe, durable, kafka_settings
from bench.targets import verdicts


def _ours(**cpu: float) -> dict[str, Any]:
    return {
        "full": {"cost": {"cpu_us": cpu}},
        "write_cmds_per_s": 26_000.0,
        "e2e_cmds_per_s": 6_400.0,
        "paced": {"visible_latency_ms": {"p99": 260.0}},
    }


def test_each_target_is_met_or_not_by_its_own_figure() -> None:
    ours = _ours(client=30.0, processor=41.0, broker=80.0, postgres=12.0)
    found = {v.figure: (v.value, v.met) for v in verdicts(ours, {"e2e_cmds_per_s": 800.0})}
    assert found == {
        "client <= 30 CPU µs/command at full load": ("30 µs", True),
        "processor <= 40 CPU µs/command at full load": ("41 µs", False),
        "broker <= 80 CPU µs/command at full load": ("80 µs", True),
        "postgres <= 40 CPU µs/command at full load": ("12 µs", True),
        "processor draining >= 25,000 commands/s": ("26,000/s", True),
        "end to end >= 6,000 commands/s": ("6,400/s", True),
        "end to end >= 8x the peer": ("8.0x", True),
        "p99 send -> visible <= 250 ms paced at half rate": ("260 ms", False),
    }


def test_a_figure_the_run_did_not_measure_is_neither_met_nor_missed() -> None:
    found = verdicts({"write_cmds_per_s": 1_000.0}, None)
    unmeasured = [v.figure for v in found if v.met is None]
    assert [v.figure for v in found if v.met is not None] == [
        "processor draining >= 25,000 commands/s"
    ]
    assert len(unmeasured) == 7
    assert all(v.value == "-" for v in found if v.met is None)


def test_the_code_produces_with_durable_kafka_settings() -> None:
    settings = kafka_settings()
    assert settings["client"]["acks"] == "all"
    assert settings["client"]["enable.idempotence"] is True
    assert settings["processor"]["transactions"] is True
    postgres = {"fsync": "on", "synchronous_commit": "on"}
    assert durable({**settings, "postgres": postgres})


def test_any_relaxed_setting_makes_the_run_not_durable() -> None:
    settings = {**kafka_settings(), "postgres": {"fsync": "on", "synchronous_commit": "off"}}
    assert not durable(settings)
    relaxed_client = {**settings["client"], "acks": "1"}
    assert not durable({**settings, "client": relaxed_client, "postgres": {"fsync": "on"}})


def test_the_settings_line_names_every_side() -> None:
    line = describe(
        {"client": {"acks": "all", "enable.idempotence": True}, "postgres": {"fsync": "on"}}
    )
    assert line == "client: acks=all enable.idempotence=true; postgres: fsync=on"
