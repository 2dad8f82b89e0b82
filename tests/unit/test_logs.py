"""The log formats of every worker: JSON lines with the worker's fields, and no secret in
either format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from processors.logs import (
    InvalidLogFormat,
    JsonFormatter,
    RedactSecrets,
    check_format,
    log_fields,
    make_handler,
    secrets_from_env,
)

SECRET = "s3cr3t-Pa55"


def _logger(handler: logging.Handler) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger(f"cqrs.test.{id(handler)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, stream


def test_a_json_line_has_time_level_logger_message_context_and_role() -> None:
    log, stream = _logger(make_handler("json", context="bank", role="processor"))
    log.info("assigned %s", [0, 1])
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == log.name
    assert entry["message"] == "assigned [0, 1]"
    assert entry["context"] == "bank" and entry["role"] == "processor"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert "partition" not in entry and "command_id" not in entry


def test_partition_command_and_trace_ids_come_from_extra_and_from_log_fields() -> None:
    log, stream = _logger(make_handler("json", context="bank", role="sink"))
    log.warning("rejected", extra={"partition": 3, "command_id": "c-1", "other": "x"})
    with log_fields(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", partition=5):
        log.error("aborted")
    log.info("after")
    first, second, third = (json.loads(x) for x in stream.getvalue().splitlines())
    assert first["partition"] == 3 and first["command_id"] == "c-1" and "other" not in first
    assert second["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert second["partition"] == 5 and second["level"] == "ERROR"
    assert "trace_id" not in third and "partition" not in third


def test_an_exception_is_one_line_of_json_with_its_traceback() -> None:
    log, stream = _logger(make_handler("json", context="bank", role="projector"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert "RuntimeError: boom" in entry["exc"] and entry["message"] == "failed"


def test_the_text_format_is_the_classic_line() -> None:
    log, stream = _logger(make_handler("text", context="bank", role="processor"))
    log.info("ready")
    line = stream.getvalue().strip()
    assert line.endswith(f"INFO {log.name} ready")
    with pytest.raises(ValueError):
        json.loads(line)


def test_an_unknown_format_is_refused_naming_the_accepted_ones() -> None:
    assert check_format("JSON") == "json"
    with pytest.raises(InvalidLogFormat, match="text, json"):
        check_format("yaml")


def test_secrets_of_the_environment_are_found_in_every_form() -> None:
    env = {
        "CQRS_KAFKA_SASL_PASSWORD": SECRET,
        "CQRS_POSTGRES_DSN": "postgresql://cqrs:pg-Pw-1@db:5432/cqrs",
        "OTHER_DSN": "host=h password='kv pass' user=u",
        "THIRD_DSN": "host=h password=plainpw user=u",
        "CQRS_GATEWAY_TOKEN": "tok-123456",
        "CQRS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    }
    found = secrets_from_env(env)
    assert set(found) == {SECRET, "pg-Pw-1", "kv pass", "plainpw", "tok-123456"}


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_a_line_in_either_format(fmt: str, monkeypatch) -> None:
    monkeypatch.setenv("CQRS_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("CQRS_POSTGRES_DSN", f"postgresql://cqrs:{SECRET}-pg@db:5432/cqrs")
    log, stream = _logger(make_handler(fmt, context="bank", role="sink"))
    log.info("connecting with %s", f"postgresql://cqrs:{SECRET}-pg@db:5432/cqrs")
    log.warning(f"sasl.password={SECRET}")
    try:
        raise ConnectionError(f"auth failed for password {SECRET}")
    except ConnectionError:
        log.exception("cannot connect")
    text = stream.getvalue()
    assert SECRET not in text
    assert "postgresql://cqrs:***" in text and "sasl.password=***" in text
    if fmt == "json":
        assert all(json.loads(line) for line in text.splitlines() if line.startswith("{"))


def test_the_formatter_and_filter_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pw %s", (SECRET,), None)
    assert RedactSecrets([SECRET]).filter(record)
    entry = json.loads(JsonFormatter({"role": "gateway"}).format(record))
    assert entry == {**entry, "message": "pw ***", "role": "gateway", "logger": "x"}


def test_a_worker_refuses_an_unknown_log_format_in_one_line_with_exit_2() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "run", "processor", "--log-format", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CQRS_STATE_DIR": "/nonexistent"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --log-format must be one of text, json, got 'yaml'"
    ]
