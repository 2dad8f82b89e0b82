"""The tutorial in docs/write-side.md works as written: every file it shows is written out
exactly, the package is pip-installed into this venv (and uninstalled after), the runtime
loads it (its schemas agree with its code), and its given/when/then test passes.

The registry and the catalog of this process are already loaded, so the checks that must
see the new context run in subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "write-side.md"
# A file of the tutorial: its path in bold code, a blank line, then one fenced block.
FILE_BLOCK = re.compile(r"^\*\*`(?P<path>[^`]+)`\*\*\n\n```\w*\n(?P<body>.*?)^```$", re.M | re.S)


def tutorial_files() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("## Tutorial: a context from nothing") :]
    section = section[: section.index("\n## ", 1)]
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(section)}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_tutorial_shows_every_file_of_its_context():
    files = tutorial_files()
    assert "library/pyproject.toml" in files and "library/tests/test_book.py" in files
    assert len([p for p in files if p.endswith(".avsc")]) == 8
    assert all(p.startswith("library/") for p in files)


@pytest.fixture
def installed_tutorial(tmp_path: Path):
    for path, body in tutorial_files().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    pip = [sys.executable, "-m", "pip", "--quiet"]
    installed = run(*pip, "install", "--no-deps", "-e", str(tmp_path / "library"))
    assert installed.returncode == 0, installed.stderr
    try:
        yield tmp_path / "library"
    finally:
        run(*pip, "uninstall", "-y", "kafka-cqrs-library")


def test_the_tutorial_context_loads_and_its_test_passes(installed_tutorial: Path):
    load = (
        "from processors.registry import default_registry; "
        "ctx = default_registry().context('library'); "
        "print(sorted(ctx.aggregates[0].command_types), ctx.migrations.name)"
    )
    loaded = run(sys.executable, "-c", load)
    assert loaded.returncode == 0, loaded.stderr
    assert "['library.AddBook', 'library.LendBook', 'library.ReturnBook'] migrations" in (
        loaded.stdout
    )
    tested = run(
        sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
        cwd=installed_tutorial,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout
    assert "2 passed" in tested.stdout
