"""`cqrsctl new context`: what it writes, and one clear line with exit 2 for a bad name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cqrsctl.context_template import files
from cqrsctl.main import app

runner = CliRunner()


def test_it_writes_a_package_with_one_schema_per_record_and_a_migration(tmp_path: Path):
    result = runner.invoke(app, ["new", "context", "orders2", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(tmp_path / "orders2")) for p in tmp_path.rglob("*.*"))
    assert written == sorted(files("orders2"))
    assert sorted(p.name for p in tmp_path.rglob("*.avsc")) == [
        "CounterRow.v1.avsc", "CounterState.v1.avsc", "Increment.v1.avsc", "Incremented.v1.avsc"
    ]  # fmt: skip
    pyproject = (tmp_path / "orders2" / "pyproject.toml").read_text()
    assert 'orders2 = "orders2:context"' in pyproject
    assert (
        "CREATE TABLE orders2_counters"
        in (tmp_path / "orders2" / "orders2" / "migrations" / "0001_read_models.sql").read_text()
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Shop", "use lower-case letters"),
        ("9lives", "use lower-case letters"),
        ("class", "is reserved"),
        ("cqrs", "is reserved"),
        ("json", "already an importable package"),
        ("bank", "already an importable package"),
    ],
)
def test_a_bad_name_is_one_line_and_exit_2(tmp_path: Path, name: str, message: str):
    result = runner.invoke(app, ["new", "context", name, "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    result = runner.invoke(app, ["new", "context", "mine", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert not any((tmp_path / "mine").iterdir())
