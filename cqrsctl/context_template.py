"""The files of a new bounded context, as `cqrsctl new context <name>` writes them.

One aggregate (a counter: `Increment` decided into `Incremented`), one projection (a row per
counter), one Avro schema per record, one migration, and a given/when/then test. `${ctx}` is
the context's name: its distribution is `kafka-cqrs-${ctx}`, its import package `${ctx}`, the
Avro namespace `${ctx}`, and its read model `${ctx}_counters` (projection names are shared by
every context in one Postgres schema, so they carry the context's name).
"""

from __future__ import annotations

import json
from string import Template
from typing import Any

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "kafka-cqrs-${ctx}"
version = "0.1.0"
description = "The ${ctx} bounded context, run by kafka-cqrs."
requires-python = ">=3.11"
dependencies = ["kafka-cqrs"]

[project.entry-points."kafka_cqrs.contexts"]
${ctx} = "${ctx}:context"

[tool.setuptools.packages.find]
include = ["${ctx}*"]

[tool.setuptools.package-data]
${ctx} = ["schemas/**/*.avsc", "migrations/*.sql"]
"""

INIT = '''\
"""The ${ctx} bounded context."""

from processors.domain import BoundedContext
from ${ctx}.counter import COUNTER
from ${ctx}.projections import PROJECTIONS

context = BoundedContext(
    name="${ctx}",
    aggregates=(COUNTER,),
    partitions=3,
    projections=PROJECTIONS,
    package=__name__,
)
'''

COUNTER = '''\
"""A counter: increments by a positive amount."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from processors.domain import AggregateType, Decision, Event, Rejected


@dataclass(frozen=True, slots=True)
class Counter:  # the fields of ${ctx}.CounterState, less `version`
    counter_id: str = ""
    total: int = 0


COUNTER = AggregateType("${ctx}.Counter", id_field="counter_id", initial_state=Counter())


class Increment(TypedDict):
    counter_id: str
    by: int


class Incremented(TypedDict):
    counter_id: str
    by: int
    total: int


@COUNTER.decides("Increment")
def increment(data: Increment, state: Counter) -> Decision:
    if data["by"] <= 0:
        return Rejected("invalid_amount", f"by must be positive, got {data['by']}")
    total = state.total + data["by"]
    return [Event("${ctx}.Incremented", {**data, "total": total})]


@COUNTER.evolves("Incremented")
def incremented(state: Counter, data: Incremented) -> Counter:
    return Counter(data["counter_id"], data["total"])
'''

PROJECTIONS = '''\
"""The read model: one row per counter."""

from __future__ import annotations

from processors.domain import Event, Record
from processors.projections import EventMeta, Guard, Projection
from ${ctx}.counter import COUNTER


def _apply(row: Record | None, event: Event, meta: EventMeta) -> Record:
    data = event.data
    return {"counter_id": data["counter_id"], "total": data["total"], "updated_at": meta.time}


COUNTERS = Projection(
    name="${ctx}_counters",
    row_schema="${ctx}.CounterRow",
    event_types=COUNTER.event_types,
    key=lambda event, meta: meta.aggregate_id,
    apply=_apply,
    key_fields=("counter_id",),
    guard=Guard.VERSION,
    description="one row per counter: its total",
)

PROJECTIONS = (COUNTERS,)
'''

MIGRATION = """\
-- The ${ctx} read models; columns are named like the fields of the row schemas.
CREATE TABLE ${ctx}_counters (
    counter_id text        PRIMARY KEY,
    total      bigint      NOT NULL,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
"""

TEST = '''\
"""The counter's decider, with given/when/then."""

from ${ctx}.counter import COUNTER
from processors.domain import Event
from processors.testing import given
from schemas.catalog import default_catalog


def incremented(by: int, total: int) -> Event:
    return Event("${ctx}.Incremented", {"counter_id": "c1", "by": by, "total": total})


def test_an_increment_adds_to_the_total():
    counter = given(COUNTER, incremented(2, 2), catalog=default_catalog())
    after = counter.when("Increment", {"counter_id": "c1", "by": 3}).then(incremented(3, 5))
    assert after.total == 5


def test_an_increment_must_be_positive():
    given(COUNTER).when("Increment", {"counter_id": "c1", "by": 0}).then_rejected(
        "invalid_amount"
    )
'''

_ID = {"name": "counter_id", "type": "string", "doc": "Aggregate id; also the Kafka key."}
_BY = {"name": "by", "type": "long", "doc": "How much to add; positive."}
_TOTAL = {"name": "total", "type": "long", "doc": "The counter's total after it."}
_VERSION = {"name": "version", "type": "long", "doc": "Aggregate version."}
_UPDATED = {
    "name": "updated_at",
    "type": {"type": "long", "logicalType": "timestamp-millis"},
    "doc": "Time (UTC) of the last event applied.",
}

SCHEMAS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "commands/Increment": ("Add to a counter.", [_ID, _BY]),
    "events/Incremented": ("A counter was added to.", [_ID, _BY, _TOTAL]),
    "state/CounterState": ("Snapshot of one counter.", [_ID, _TOTAL, _VERSION]),
    "projections/CounterRow": (
        "One row of the counters read model.",
        [_ID, _TOTAL, _VERSION, _UPDATED],
    ),
}


def _schema(ctx: str, path: str, doc: str, fields: list[dict[str, Any]]) -> str:
    name = path.rpartition("/")[2]
    record = {"type": "record", "name": name, "namespace": ctx, "doc": doc, "fields": fields}
    return json.dumps(record, indent=2) + "\n"


def files(ctx: str) -> dict[str, str]:
    """Relative path -> text of every file of a new context named `ctx`."""
    texts = {
        "pyproject.toml": PYPROJECT,
        f"{ctx}/__init__.py": INIT,
        f"{ctx}/counter.py": COUNTER,
        f"{ctx}/projections.py": PROJECTIONS,
        f"{ctx}/migrations/0001_read_models.sql": MIGRATION,
        "tests/test_counter.py": TEST,
    }
    out = {path: Template(text).substitute(ctx=ctx) for path, text in texts.items()}
    for path, (doc, fields) in SCHEMAS.items():
        out[f"{ctx}/schemas/{path}.v1.avsc"] = _schema(ctx, path, doc, fields)
    return out
