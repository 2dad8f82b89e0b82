"""vulture finds no unused code in the runtime, the CLI or the deployment code at its default
60% confidence, and nothing anywhere (contexts, tests and benchmarks included) at 80%
([tool.vulture] in pyproject.toml says what is scanned, and which names a library uses for
us, each with its reason)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("processors/", "producers/", "sinks/", "schemas/", "cqrsctl/", "deploy/")


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


def test_nothing_anywhere_is_unused_at_80_percent_confidence() -> None:
    assert vulture("--min-confidence", "80") == []


def test_vulture_reports_unused_code(tmp_path: Path) -> None:
    (tmp_path / "dead.py").write_text("def never_called() -> None:\n    pass\n")
    assert any("never_called" in line for line in vulture(str(tmp_path)))
