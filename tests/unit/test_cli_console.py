"""The console's help, version, completion and the name it tells users to type: findings
5, 6 and 8 of issue 19 (fields of a command type, `cqrsctl` not on PATH, `<bool>` flags,
`$CQRS_STATE_DIR`, `--version`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cqrsctl.command_help import example_record, field_rows
from cqrsctl.console import EXIT_CODES_HELP, PIPE_WIDTH, cli_name, out_console
from cqrsctl.main import app
from processors.registry import default_registry
from schemas.codec import default_codec

runner = CliRunner()
CQRSCTL = str(Path(sys.executable).with_name("cqrsctl"))


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cqrsctl {version('kafka-cqrs')}"


def test_top_level_help_documents_the_exit_codes() -> None:
    text = " ".join(_help().split())
    assert "Exit codes: 0 ok; 1 rejected" in text
    for code in ("2 usage", "3 timeout", "4 unavailable"):
        assert code in text
    assert "Exit codes" in EXIT_CODES_HELP


@pytest.mark.parametrize("command", [["send"], ["up"], ["status"], ["run", "sink"], ["demo"]])
def test_on_off_flags_show_as_flags_not_as_bool_values(command: list[str]) -> None:
    text = _help(*command)
    assert "<bool>" not in text
    assert "--help" in text


def test_state_dir_help_names_the_environment_variable() -> None:
    for command in ("up", "down", "status"):
        assert "CQRS_STATE_DIR" in _help(command), command


def test_send_help_of_a_type_shows_its_fields_nested_ones_and_an_example() -> None:
    text = _help("send", "bank.Deposit")
    assert "amount.currency" in text and "amount.amount" in text
    assert "bank.Money" in text
    example = re.search(r"send bank\.Deposit --json '(\{.*\})' --wait", text)
    assert example, text
    body = json.loads(example.group(1))
    default_codec().catalog.validate("bank.Deposit", body)  # a body that would be accepted
    assert body["amount"]["currency"] == "EUR"


def test_send_help_without_a_type_lists_the_command_types() -> None:
    text = _help("send")
    for command_type in default_registry().command_types():
        assert command_type in text


@pytest.mark.parametrize("command_type", default_registry().command_types())
def test_every_command_types_example_validates_against_its_schema(command_type: str) -> None:
    entry = default_codec().catalog.latest(command_type)
    default_codec().catalog.validate(command_type, example_record(entry.schema))
    names = [name for name, _, _ in field_rows(entry.schema)]
    assert names and len(names) == len(set(names))


def _complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_CQRSCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    done = subprocess.run([CQRSCTL], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_of_command_types_and_projection_names() -> None:
    assert _complete("cqrsctl send bank.W") == ["bank.Withdraw"]
    # Every installed context's read models: bank's and shop's.
    assert _complete("cqrsctl query ") == [
        "accounts", "daily_totals", "event_log", "orders", "stock"
    ]  # fmt: skip
    assert _complete("cqrsctl query d") == ["daily_totals"]


def test_cli_name_is_the_script_path_when_cqrsctl_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(Path(CQRSCTL).parents[2])  # the folder holding .venv
    name = cli_name()
    assert name == os.path.relpath(CQRSCTL)
    assert Path(name).exists() and os.access(name, os.X_OK)

    monkeypatch.chdir(tmp_path)  # elsewhere: the absolute path, not ../../..
    assert cli_name() == CQRSCTL

    monkeypatch.setenv("PATH", f"{Path(CQRSCTL).parent}:/usr/bin:/bin")
    assert cli_name() == "cqrsctl"


def test_output_is_not_wrapped_when_stdout_is_not_a_terminal() -> None:
    console = out_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal
    assert console.width == PIPE_WIDTH
