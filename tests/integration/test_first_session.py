"""A new user's first session, exactly as the README's "The local stack" section prints it:
every `.venv/bin/cqrsctl` line of its first shell block is run, in order, on a stack of its
own (a private state folder, none of the session's connection variables), so the README and
this test cannot drift apart. Findings 3, 6 and 7 of issue 19 (no README path from `up` to a
working pipeline, `cqrsctl` not on PATH, output cut at 80 columns when piped).

The session reaches every subcommand the block names. A `cqrsctl tail` line added to the
README block (between `history` and `status`) is run like the others: it must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import background
from deploy.local import stack as local_stack
from deploy.local.processes import cmdline

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SCRIPT = ".venv/bin/cqrsctl"


def readme_session() -> list[list[str]]:
    """The cqrsctl command lines of the first ```sh block under "## The local stack"."""
    text = README.read_text()
    section = text[text.index("## The local stack") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block in the README's local stack section"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == SCRIPT:
            commands.append(words)
    return commands


@pytest.fixture
def private_state() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700 and, as root, the `postgres` user must get in.
    folder = Path(tempfile.mkdtemp(prefix="cqrs-first-session-"))
    yield folder
    background.stop(folder)
    local_stack.down(folder)
    shutil.rmtree(folder, ignore_errors=True)


def user_env(state: Path) -> dict[str, str]:
    """A user's shell: no connection variables (they come from the state file), `cqrsctl`
    not on PATH, output to a pipe with the usual 80 columns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQRS_")}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.pop("VIRTUAL_ENV", None)
    env["CQRS_STATE_DIR"] = str(state)
    env["COLUMNS"] = "80"
    return env


def run(words: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_first_session_runs_as_printed(private_state: Path) -> None:
    commands = readme_session()
    subcommands = [words[1] for words in commands]
    assert subcommands[0] == "up" and "--pipeline" in commands[0]
    assert subcommands[-1] == "down"
    assert {"send", "query", "history", "status"} <= set(subcommands)
    assert (ROOT / SCRIPT).exists()
    env = user_env(private_state)
    workers: list[background.RecordedWorker] = []

    for words in commands:
        if words[1] == "down":
            workers = background.recorded(private_state)
            assert {w.role for w in workers} == {"processor", "projector", "sink"}
            check_machine_output(env)
            check_status_sees_a_dead_worker(env, workers)
        done = run(words, env)
        shown = f"{shlex.join(words)}\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, shown
        check_step(words, done.stdout, env)

    for worker in workers:
        assert cmdline(worker.pid) is None, f"down left the {worker.role} running"
    assert local_stack.status(private_state) is None


def check_step(words: list[str], out: str, env: dict[str, str]) -> None:
    step = words[1]
    if step == "up":
        # What `up` tells the user to type next works from here, without cqrsctl on PATH.
        nexts = [
            line.split()[0]
            for line in out.splitlines()
            if line.startswith("  ") and not line.strip().startswith("export ")
        ]
        assert nexts, out
        for program in nexts:
            assert shutil.which(program, path=env["PATH"]) or (ROOT / program).exists(), out
    elif (step == "send" and "--wait" in words) or "--wait-for" in words:
        assert json.loads(out)["status"] == "ACCEPTED", out
    elif step == "query":
        row = next(line for line in out.splitlines() if " acc-1 " in line)
        assert " 1050 " in row, out
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row), out  # whole time
    elif step == "history":
        assert "bank.AccountOpened" in out and "bank.Deposited" in out, out
        # The event's data stays on one line when piped, whatever COLUMNS says.
        assert '{"account_id": "acc-1", "amount": {"amount": 1050, "currency": "EUR"}' in out
    elif step == "tail":
        # Both events of acc-1, decoded through the catalog, with their CloudEvents headers.
        lines = [line for line in out.splitlines() if " acc-1 " in line]
        assert any("bank.AccountOpened" in line for line in lines), out
        assert any("bank.Deposited" in line and "ce_subject=acc-1" in line for line in lines), out
    elif step == "status":
        for role in ("processor", "projector", "sink"):
            line = next(line for line in out.splitlines() if line.strip().startswith(role))
            assert "healthy" in line and "unhealthy" not in line, out


def check_status_sees_a_dead_worker(
    env: dict[str, str], workers: list[background.RecordedWorker]
) -> None:
    """`status` tells the truth about the workers: a killed sink makes it exit 1."""
    sink = next(w for w in workers if w.role == "sink")
    os.kill(sink.pid, signal.SIGKILL)  # the sink this test's `up --pipeline` started
    deadline = time.monotonic() + 10
    while cmdline(sink.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    done = run([str(ROOT / SCRIPT), "status"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("sink"))
    assert "not running" in line, done.stdout


def check_machine_output(env: dict[str, str]) -> None:
    """--output json of the read commands, on the session's data."""
    cli = str(ROOT / SCRIPT)
    rows = json.loads(run([cli, "query", "accounts", "acc-1", "-o", "json"], env).stdout)
    assert [(r["account_id"], r["balance"], r["version"]) for r in rows] == [("acc-1", 1050, 2)]
    history = json.loads(run([cli, "history", "acc-1", "--output", "json"], env).stdout)
    assert history["version"] == 2 and history["state"]["balance"] == 1050
    assert [e["type"] for e in history["events"]] == ["bank.AccountOpened", "bank.Deposited"]
    status = json.loads(run([cli, "status", "-o", "json"], env).stdout)
    assert status["healthy"] is True
    assert {w["role"]: w["health"] for w in status["workers"]} == dict.fromkeys(
        ("processor", "projector", "sink"), "healthy"
    )
    assert all(isinstance(w["lag"], int) for w in status["workers"])
    missing = run([cli, "query", "accounts", "nobody"], env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: no accounts row")
