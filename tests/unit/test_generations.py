"""Names of a projection's generations, and repointing a view's definition (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bank.projections import PROJECTIONS
from cqrsctl.generation_kafka import GenerationKafka
from cqrsctl.main import app
from processors.generations import GenerationNames, at_generation, projections_to_run
from processors.projector.app import ProjectorConfig, projector_app_id
from processors.settings import KafkaSettings
from processors.topics import ContextTopics
from sinks.config import SinkConfig
from sinks.generations import GenerationError, repointed, sql_identifier

BY_NAME = {p.name: p for p in PROJECTIONS}


def test_generation_one_keeps_todays_names_but_its_table() -> None:
    names = GenerationNames.of("bank", BY_NAME["accounts"], 1)
    assert projector_app_id("bank") == "bank.projector"
    assert names.topic == "bank.projection.accounts"
    assert names.checkpoint_key == "accounts"
    assert names.relation == "accounts_g1"


def test_a_later_generation_has_its_own_everything() -> None:
    names = GenerationNames.of("bank", BY_NAME["daily_totals"], 3)
    assert projector_app_id("bank", "daily_totals", 3) == "bank.projector.daily_totals_g3"
    assert names.topic == "bank.projection.daily_totals_g3"
    assert names.checkpoint_key == "daily_totals_g3"
    assert names.relation == "daily_totals_by_partition_g3"


@pytest.mark.parametrize("name", ["accounts", "daily_totals", "event_log"])
def test_the_renamed_projection_yields_the_generations_names(name: str) -> None:
    projection = BY_NAME[name]
    (renamed,) = projections_to_run(PROJECTIONS, name, 2)
    names = GenerationNames.of("bank", projection, 2)
    topics = ContextTopics("bank")
    assert topics.projection(renamed.name) == names.topic
    assert renamed.table_name == names.relation
    assert renamed.name == names.checkpoint_key
    assert (renamed.key_fields, renamed.guard, renamed.apply) == (
        projection.key_fields,
        projection.guard,
        projection.apply,
    )
    with pytest.raises(ValueError, match="numbered from 2"):
        at_generation(projection, 1)
    with pytest.raises(ValueError, match="no projection 'nope'"):
        projections_to_run(PROJECTIONS, "nope", 2)
    assert projections_to_run(PROJECTIONS, None, 2) == tuple(PROJECTIONS)
    with pytest.raises(ValueError, match="generation must be >= 1"):
        GenerationNames.of("bank", BY_NAME["accounts"], 0)


def test_what_a_generation_leaves_in_kafka_is_what_its_workers_name() -> None:
    kafka = KafkaSettings("localhost:9092")
    found = GenerationKafka.of("bank", "accounts", 2)
    assert found is not None
    projector = ProjectorConfig(
        context="bank", kafka=kafka, data_dir=Path("/x"), projection="accounts", generation=2
    )
    sink = SinkConfig(
        context="bank", kafka=kafka, dsn="", schema="s", projection="accounts", generation=2
    )
    assert found.groups == (projector.app_id, sink.group_id)
    assert found.topic == GenerationNames.of("bank", BY_NAME["accounts"], 2).topic
    existing = [
        "bank.projection.accounts",  # generation 1's, shared
        "bank.projection.accounts_g2",
        "bank.projection.accounts_g20",  # another generation
        "bank.projector-accounts-changelog",  # the shared projector's
        "bank.projector.accounts_g2-accounts_g2-changelog",
        "bank.projector.accounts_g2-__assignor-__leader",
        "bank.projector.accounts_g20-accounts_g20-changelog",
    ]
    assert found.topics_in(existing) == [
        "bank.projection.accounts_g2",
        "bank.projector.accounts_g2-__assignor-__leader",
        "bank.projector.accounts_g2-accounts_g2-changelog",
    ]
    assert GenerationKafka.of("bank", "accounts", 1) is None  # the shared workers'


def test_a_view_definition_is_repointed_to_the_new_table_only() -> None:
    definition = (
        " SELECT t_g1.currency, sum(t_g1.amount) AS amount\n   FROM t_g1\n"
        "  WHERE t_g1.currency <> 'x_t_g1' GROUP BY t_g1.currency;"
    )
    assert repointed(definition, "t_g1", "t_g2") == (
        " SELECT t_g2.currency, sum(t_g2.amount) AS amount\n   FROM t_g2\n"
        "  WHERE t_g2.currency <> 'x_t_g1' GROUP BY t_g2.currency"
    )
    assert repointed('SELECT * FROM "t_g1"', "t_g1", "T2") == 'SELECT * FROM "T2"'
    assert repointed("SELECT * FROM other.t_g1 JOIN t_g10 ON true", "t_g10", "n") == (
        "SELECT * FROM other.t_g1 JOIN n ON true"
    )
    with pytest.raises(GenerationError, match="does not read t_g1"):
        repointed("SELECT * FROM t_g10", "t_g1", "t_g2")


def test_identifiers_are_quoted_only_when_needed() -> None:
    assert sql_identifier("accounts_g2") == "accounts_g2"
    assert sql_identifier('Odd"name') == '"Odd""name"'


# -- usage errors of the lifecycle commands, before any connection --------------------------

runner = CliRunner()
TOGETHER = "error: --projection and --generation (2 or more) go together"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["projections", "rebuild", "nope"],
            "error: bank has no projection 'nope' (known: accounts, daily_totals, event_log)",
        ),
        (
            ["projections", "drop", "nope", "1"],
            "error: bank has no projection 'nope' (known: accounts, daily_totals, event_log)",
        ),
        (
            ["projections", "gc", "--context", "nope"],
            "error: no bounded context 'nope' (known: bank, shop)",
        ),
        (["run", "projector", "--projection", "accounts"], TOGETHER),
        (["run", "sink", "--generation", "2"], TOGETHER),
    ],
)
def test_lifecycle_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == message
