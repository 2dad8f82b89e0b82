"""Compatibility by Avro's resolution rules, cross-checked against fastavro's actual reads,
the pairs each level requires (transitive or not), and `cqrsctl schemas check` against
schema trees with a broken new version."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cqrsctl.main import app
from schemas.catalog import Catalog
from schemas.compatibility import (
    DEFAULT_LEVEL,
    Level,
    check_catalog,
    check_compatibility,
    required_pairs,
    resolution_problems,
)
from schemas.strategies import records
from tests.support.schema_tree import copy_schemas


def rec(fields: list[dict[str, Any]], name: str = "t.R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": fields, **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


COLOR = {"type": "enum", "name": "t.Color", "symbols": ["RED", "GREEN"]}
COLOR_PLUS = {"type": "enum", "name": "t.Color", "symbols": ["RED", "GREEN", "BLUE"]}
COLOR_PLUS_DEFAULT = {**COLOR_PLUS, "default": "RED"}
MONEY = rec([f("amount", "long"), f("currency", "string")], name="t.Money")
MONEY_INT = rec([f("amount", "int"), f("currency", "string")], name="t.Money")

# (case, old, new, expected (direction, path) problems)
CASES: list[tuple[str, Any, Any, set[tuple[str, str]]]] = [
    ("same", rec([f("a", "long")]), rec([f("a", "long")]), set()),
    (
        "added field with a default",
        rec([f("a", "long")]),
        rec([f("a", "long"), f("b", "string", default="")]),
        set(),
    ),
    (
        "added field without a default",
        rec([f("a", "long")]),
        rec([f("a", "long"), f("b", "string")]),
        {("backward", "b")},
    ),
    (
        "removed field that had no default",
        rec([f("a", "long"), f("b", "string")]),
        rec([f("a", "long")]),
        {("forward", "b")},
    ),
    (
        "removed field that had a default",
        rec([f("a", "long"), f("b", "string", default="x")]),
        rec([f("a", "long")]),
        set(),
    ),
    ("widened int to long", rec([f("a", "int")]), rec([f("a", "long")]), {("forward", "a")}),
    ("narrowed long to int", rec([f("a", "long")]), rec([f("a", "int")]), {("backward", "a")}),
    ("int to double", rec([f("a", "int")]), rec([f("a", "double")]), {("forward", "a")}),
    ("float to double", rec([f("a", "float")]), rec([f("a", "double")]), {("forward", "a")}),
    ("string to bytes", rec([f("a", "string")]), rec([f("a", "bytes")]), set()),
    (
        "string to long",
        rec([f("a", "string")]),
        rec([f("a", "long")]),
        {("backward", "a"), ("forward", "a")},
    ),
    ("enum symbol added", rec([f("c", COLOR)]), rec([f("c", COLOR_PLUS)]), {("forward", "c")}),
    (
        "enum symbol added, old reader has a default",
        rec([f("c", {**COLOR, "default": "RED"})]),
        rec([f("c", COLOR_PLUS_DEFAULT)]),
        set(),
    ),
    ("enum symbol removed", rec([f("c", COLOR_PLUS)]), rec([f("c", COLOR)]), {("backward", "c")}),
    (
        "optional became required",
        rec([f("a", ["null", "string"], default=None)]),
        rec([f("a", "string")]),
        {("backward", "a")},
    ),
    (
        "union branch added",
        rec([f("a", ["null", "string"])]),
        rec([f("a", ["null", "string", "long"])]),
        {("forward", "a")},
    ),
    (
        "value became a union",
        rec([f("a", "string")]),
        rec([f("a", ["null", "string"])]),
        {("forward", "a")},
    ),
    (
        "nested record narrowed",
        rec([f("m", MONEY)]),
        rec([f("m", MONEY_INT)]),
        {("backward", "m.amount")},
    ),
    (
        "array items narrowed",
        rec([f("xs", {"type": "array", "items": "long"})]),
        rec([f("xs", {"type": "array", "items": "int"})]),
        {("backward", "xs[]")},
    ),
    (
        "map values narrowed",
        rec([f("m", {"type": "map", "values": "long"})]),
        rec([f("m", {"type": "map", "values": "int"})]),
        {("backward", "m{}")},
    ),
    (
        "fixed size changed",
        rec([f("h", {"type": "fixed", "name": "t.H", "size": 16})]),
        rec([f("h", {"type": "fixed", "name": "t.H", "size": 32})]),
        {("backward", "h"), ("forward", "h")},
    ),
    (
        "field renamed with an alias",
        rec([f("a", "long")]),
        rec([f("b", "long", aliases=["a"])]),
        {("forward", "a")},
    ),
    (
        "record renamed with an alias",
        rec([f("a", "long")], name="t.R"),
        rec([f("a", "long")], name="t.S", aliases=["t.R"]),
        {("forward", "")},
    ),
    (
        "recursive type unchanged",
        rec([f("next", ["null", "t.R"])]),
        rec([f("next", ["null", "t.R"])]),
        set(),
    ),
]


@pytest.mark.parametrize(("case", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_resolution_rules(case: str, old: Any, new: Any, expected: set[tuple[str, str]]) -> None:
    problems = check_compatibility(old, new, Level.FULL)
    assert {(p.direction, p.path) for p in problems} == expected
    backward_only = check_compatibility(old, new, Level.BACKWARD)
    assert {p.direction for p in backward_only} <= {"backward"}


def _can_read(reader: Any, writer: Any, record: Any) -> None:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer, named_schemas={}), record)
    body.seek(0)
    fastavro.schemaless_reader(
        body,
        fastavro.parse_schema(writer, named_schemas={}),
        fastavro.parse_schema(reader, named_schemas={}),
    )


@pytest.mark.parametrize(("case", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_what_the_checker_calls_compatible_fastavro_can_read(
    case: str, old: Any, new: Any, expected: set[tuple[str, str]], data: st.DataObject
) -> None:
    directions = {direction for direction, _ in expected}
    if "backward" not in directions:
        _can_read(reader=new, writer=old, record=data.draw(records(old)))
    if "forward" not in directions:
        record = data.draw(records(new))
        if case == "string to bytes":
            # The spec allows bytes -> string; a read fails only for bytes that are not UTF-8.
            assume(_is_utf8(record["a"]))
        _can_read(reader=old, writer=new, record=record)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_problems_name_the_field_and_the_reason() -> None:
    problems = resolution_problems(reader=rec([f("m", MONEY_INT)]), writer=rec([f("m", MONEY)]))
    assert problems == [("m.amount", "writer type long cannot be read as int")]
    (added,) = resolution_problems(reader=rec([f("b", "string")]), writer=rec([]))
    assert added == ("b", "the reader's field has no default and the writer does not have it")
    (enum,) = resolution_problems(reader=rec([f("c", COLOR)]), writer=rec([f("c", COLOR_PLUS)]))
    assert "lacks writer symbols ['BLUE'] and has no default" in enum[1]


def test_the_shipped_catalog_is_compatible_at_its_configured_levels() -> None:
    reports = check_catalog(Catalog.load())
    assert DEFAULT_LEVEL is Level.FULL_TRANSITIVE
    steps = {(r.old.label, r.new.label): r for r in reports}
    assert ("bank.Deposited v1", "bank.Deposited v2") in steps
    assert all(report.ok for report in reports), [str(r) for r in reports if not r.ok]


# -- the CLI ---------------------------------------------------------------------------------

runner = CliRunner()


def tree_with_deposited_v3(tmp_path: Path, change: Any) -> Path:
    root = copy_schemas(tmp_path / "schemas")
    schema = json.loads((root / "bank/events/Deposited.v2.avsc").read_text())
    change(schema)
    (root / "bank/events/Deposited.v3.avsc").write_text(json.dumps(schema))
    return root


def add_channel_without_default(schema: dict[str, Any]) -> None:
    schema["fields"].append({"name": "channel", "type": "string", "doc": "where"})


def narrow_balance(schema: dict[str, Any]) -> None:
    next(f for f in schema["fields"] if f["name"] == "balance")["type"] = "int"


def test_check_passes_on_the_shipped_schemas() -> None:
    result = runner.invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ")
    assert len(result.output.strip().splitlines()) == 1


def test_check_names_a_new_field_without_default(tmp_path: Path) -> None:
    root = tree_with_deposited_v3(tmp_path, add_channel_without_default)
    result = runner.invoke(app, ["schemas", "check", "--dir", str(root)])
    assert result.exit_code == 1
    assert (
        "bank.Deposited v2 -> v3 breaks FULL_TRANSITIVE: backward: field 'channel': the "
        "reader's field has no default and the writer does not have it"
    ) in result.output
    # Forward alone is fine: old readers skip the new field.
    forward = runner.invoke(app, ["schemas", "check", "--dir", str(root), "--level", "forward"])
    assert forward.exit_code == 0, forward.output


def test_check_names_a_narrowed_type(tmp_path: Path) -> None:
    root = tree_with_deposited_v3(tmp_path, narrow_balance)
    result = runner.invoke(app, ["schemas", "check", "--dir", str(root), "--level", "backward"])
    assert result.exit_code == 1
    assert "breaks BACKWARD: backward: field 'balance': writer type long cannot be read as int" in (
        result.output
    )


def test_a_per_schema_level_is_honoured_and_the_flag_overrides_it(tmp_path: Path) -> None:
    def forward_only(schema: dict[str, Any]) -> None:
        add_channel_without_default(schema)
        schema["compatibility"] = "FORWARD"

    root = tree_with_deposited_v3(tmp_path, forward_only)
    assert runner.invoke(app, ["schemas", "check", "--dir", str(root)]).exit_code == 0
    full = runner.invoke(app, ["schemas", "check", "--dir", str(root), "--level", "full"])
    assert full.exit_code == 1
    assert "field 'channel'" in full.output


def test_a_broken_tree_is_one_clear_line(tmp_path: Path) -> None:
    root = tree_with_deposited_v3(tmp_path, lambda schema: None)
    (root / "bank/events/Deposited.v3.avsc").write_text("{oops")
    result = runner.invoke(app, ["schemas", "check", "--dir", str(root)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: bank/events/Deposited.v3.avsc: not valid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"
    )


def test_list_shows_every_schema_with_its_fingerprint_and_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "list"])
    assert result.exit_code == 0, result.output
    catalog = Catalog.load()
    for entry in catalog:
        line = next(
            line
            for line in result.output.splitlines()
            if f" {entry.name} " in line and f" v{entry.version} " in line
        )
        assert entry.fingerprint_hex in line
        assert entry.relative in line


def test_show_prints_the_self_contained_schema() -> None:
    result = runner.invoke(app, ["schemas", "show", "bank.Deposit"])
    assert result.exit_code == 0, result.output
    entry = Catalog.load().get("bank.Deposit")
    assert f"# canonical form: {entry.canonical_form}" in result.output
    assert entry.fingerprint_hex in result.output
    body = result.output[result.output.index("{\n") :]
    assert json.loads(body) == entry.schema


# -- transitive levels ----------------------------------------------------------------------


def _versions(tmp_path: Path, *levels: str | None) -> tuple[Any, ...]:
    """A one-schema tree `t.R` v1..vN; `levels[i]` is the declared level of v(i+1)."""
    folder = tmp_path / "t"
    folder.mkdir()
    for number, level in enumerate(levels, start=1):
        extra = {"compatibility": level} if level else {}
        schema = rec([f(f"f{number}", "long", default=0)], **extra)
        (folder / f"R.v{number}.avsc").write_text(json.dumps(schema))
    return Catalog.load(tmp_path).versions("t.R")


def _pair_labels(pairs: list[tuple[Any, Any, Level]]) -> list[tuple[int, int, str]]:
    return [(old.version, new.version, str(level)) for old, new, level in pairs]


def test_a_transitive_level_pairs_each_version_with_every_earlier_one(tmp_path: Path) -> None:
    versions = _versions(tmp_path, None, None, None)
    assert _pair_labels(required_pairs(versions)) == [
        (1, 2, "FULL_TRANSITIVE"),
        (1, 3, "FULL_TRANSITIVE"),
        (2, 3, "FULL_TRANSITIVE"),
    ]
    assert _pair_labels(required_pairs(versions, Level.BACKWARD)) == [
        (1, 2, "BACKWARD"),
        (2, 3, "BACKWARD"),
    ]


def test_a_none_version_is_where_transitive_checks_stop(tmp_path: Path) -> None:
    versions = _versions(tmp_path, None, None, "NONE", "FORWARD", "BACKWARD_TRANSITIVE")
    assert _pair_labels(required_pairs(versions)) == [
        (1, 2, "FULL_TRANSITIVE"),
        (2, 3, "NONE"),
        (3, 4, "FORWARD"),
        (3, 5, "BACKWARD_TRANSITIVE"),
        (4, 5, "BACKWARD_TRANSITIVE"),
    ]


@pytest.mark.parametrize(
    ("level", "backward", "forward", "transitive"),
    [
        (Level.BACKWARD, True, False, False),
        (Level.BACKWARD_TRANSITIVE, True, False, True),
        (Level.FORWARD, False, True, False),
        (Level.FORWARD_TRANSITIVE, False, True, True),
        (Level.FULL, True, True, False),
        (Level.FULL_TRANSITIVE, True, True, True),
        (Level.NONE, False, False, False),
    ],
)
def test_each_level_says_what_it_requires(
    level: Level, backward: bool, forward: bool, transitive: bool
) -> None:
    assert (level.backward, level.forward, level.transitive) == (backward, forward, transitive)


def tree_breaking_v2_at_v4(tmp_path: Path) -> Path:
    """Deposited v3 drops `memo` (it had a default), v4 brings it back as a long: each step
    is FULL compatible, but v2 and v4 disagree on the type of `memo`."""
    root = copy_schemas(tmp_path / "schemas")
    v2 = json.loads((root / "bank/events/Deposited.v2.avsc").read_text())
    v3 = {**v2, "fields": [field for field in v2["fields"] if field["name"] != "memo"]}
    memo = {"name": "memo", "type": "long", "default": 0}
    v4 = {**v2, "fields": [*v3["fields"], memo]}
    (root / "bank/events/Deposited.v3.avsc").write_text(json.dumps(v3))
    (root / "bank/events/Deposited.v4.avsc").write_text(json.dumps(v4))
    return root


def test_check_refuses_a_change_that_breaks_a_non_adjacent_version(tmp_path: Path) -> None:
    root = tree_breaking_v2_at_v4(tmp_path)
    steps_only = runner.invoke(app, ["schemas", "check", "--dir", str(root), "--level", "full"])
    assert steps_only.exit_code == 0, steps_only.output
    result = runner.invoke(app, ["schemas", "check", "--dir", str(root)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines, result.output
    head = "bank.Deposited v2 -> v4 breaks FULL_TRANSITIVE: "
    assert all(line.startswith(head) for line in lines), lines
    assert any(
        line.endswith("backward: field 'memo': writer union branch string cannot be read as long")
        for line in lines
    ), lines
    assert any("forward: field 'memo'" in line for line in lines), lines


def test_check_accepts_the_transitive_level_flag(tmp_path: Path) -> None:
    root = tree_breaking_v2_at_v4(tmp_path)
    for level in ("backward_transitive", "forward_transitive"):
        result = runner.invoke(app, ["schemas", "check", "--dir", str(root), "--level", level])
        assert result.exit_code == 1, (level, result.output)
        assert f"v2 -> v4 breaks {level.upper()}: " in result.output


# -- every stored version decodes into every version the check pairs it with ----------------


def _allowed_pairs() -> list[tuple[str, Any, Any]]:
    """(direction, writer, reader) for every pair the shipped catalog's check accepts."""
    pairs = []
    for report in check_catalog(Catalog.load()):
        assert report.ok, str(report)
        if report.level.backward:
            pairs.append(("backward", report.old, report.new))
        if report.level.forward:
            pairs.append(("forward", report.new, report.old))
    return pairs


ALLOWED = _allowed_pairs()


def test_every_old_version_of_every_event_is_paired_with_the_newest() -> None:
    catalog = Catalog.load()
    labels = {(writer.label, reader.label) for _, writer, reader in ALLOWED}
    events = [entry for entry in catalog if entry.kind == "events"]
    assert any(entry.version > 1 for entry in events)  # bank.Deposited v2
    for entry in events:
        newest = catalog.latest(entry.name)
        if entry is not newest:
            assert (entry.label, newest.label) in labels


@pytest.mark.parametrize(
    ("direction", "writer", "reader"),
    ALLOWED,
    ids=[f"{w.label}->v{r.version}" for _, w, r in ALLOWED],
)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_an_old_event_decodes_into_the_schema_the_check_pairs_it_with(
    direction: str, writer: Any, reader: Any, data: st.DataObject
) -> None:
    record = data.draw(records(writer))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer.parsed, record)
    body.seek(0)
    decoded = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
    reader.validate(decoded)
    written = {field["name"]: field["type"] for field in writer.schema["fields"]}
    same = [f["name"] for f in reader.schema["fields"] if written.get(f["name"]) == f["type"]]
    assert {name: decoded[name] for name in same} == {name: record[name] for name in same}
