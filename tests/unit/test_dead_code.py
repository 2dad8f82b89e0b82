"""vulture finds no unused code in the runtime or the CLI ([tool.vulture] in pyproject.toml
says what is scanned, and which names a library uses for us)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("processors/", "producers/", "sinks/", "schemas/", "cqrsctl/")


def vulture(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "vulture", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 3), done.stderr  # 3: it found something
    return done.stdout.splitlines()


def test_nothing_in_the_runtime_or_the_cli_is_unused() -> None:
    found = [line for line in vulture() if line.startswith(CHECKED)]
    assert found == []


def test_vulture_reports_unused_code(tmp_path: Path) -> None:
    (tmp_path / "dead.py").write_text("def never_called() -> None:\n    pass\n")
    assert any("never_called" in line for line in vulture(str(tmp_path)))
