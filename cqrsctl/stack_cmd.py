"""`cqrsctl up|down|status|smoke`: the local Kafka broker and Postgres cluster."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

STATE_DIR_OPTION = typer.Option(
    None,
    "--state-dir",
    help="Folder of the stack's state, data and logs [default: $CQRS_STATE_DIR or "
    "/var/tmp/kafka-cqrs].",
)


# libpq key=value: whitespace may surround "=", and a value is either single-quoted (with
# backslash escapes) or a run of non-blanks. sslpassword is a secret too.
_KV_SECRET = re.compile(r"(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)")
# URL query parameters (postgresql://h/db?password=...).
_QUERY_SECRET = re.compile(r"(?i)([?&]\w*password=)[^&#]*")


def mask_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ***, in URL or key=value form."""
    if "://" not in dsn:
        return _KV_SECRET.sub(r"\1***", dsn)
    scheme, _, rest = dsn.partition("://")
    # The authority ends at the first / ? or #; its user info at the LAST @ (a multi-host
    # authority, h1:5432,h2:5433, is no problem here, unlike for urlsplit).
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = _QUERY_SECRET.sub(r"\1***", tail)
    return f"{scheme}://{authority}{tail}"


def _fail_cleanly(func: F) -> F:
    """Turn expected failures into one `error:` message and exit code 1, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg
        from confluent_kafka import KafkaException

        from deploy.local.errors import StackError
        from deploy.settings import SettingsError

        try:
            return func(*args, **kwargs)
        except (
            StackError,
            SettingsError,
            KafkaException,
            psycopg.Error,
            OSError,
            ValueError,
        ) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@_fail_cleanly
def up(state_dir: str | None = STATE_DIR_OPTION) -> None:
    """Start the local Kafka broker and Postgres (reuses them when already running)."""
    from deploy.local import stack

    started = time.monotonic()
    state = stack.up(state_dir)
    typer.echo(f"kafka:    {state.bootstrap_servers} (pid {state.kafka_pid})")
    typer.echo(f"postgres: {mask_dsn(state.postgres_dsn)} (pid {state.postgres_pid})")
    typer.echo(f"state:    {state.state_dir} (ready in {time.monotonic() - started:.1f} s)")


@_fail_cleanly
def down(
    state_dir: str | None = STATE_DIR_OPTION,
    keep_data: bool = typer.Option(
        False, "--keep-data", help="Keep topics and tables for the next `up`."
    ),
) -> None:
    """Stop the local stack that `up` started and delete its data (unless --keep-data)."""
    from deploy.local import stack
    from deploy.local.state import state_dir as resolve

    if stack.down(state_dir, keep_data=keep_data):
        kept = " (data kept)" if keep_data else " and deleted its data"
        typer.echo(f"stopped the local stack in {resolve(state_dir)}{kept}")
    else:
        typer.echo(f"no local stack recorded in {resolve(state_dir)}; nothing to stop")


@_fail_cleanly
def status(state_dir: str | None = STATE_DIR_OPTION) -> None:
    """Show where the broker and the database listen and whether they are healthy."""
    from deploy.local import stack
    from deploy.local.state import state_dir as resolve

    report = stack.status(state_dir)
    if report is None:
        typer.echo(f"no local stack recorded in {resolve(state_dir)} (run `cqrsctl up`)", err=True)
        raise typer.Exit(1)
    console = Console()
    console.print(f"local stack in {resolve(state_dir)}", soft_wrap=True)
    for part in report:
        if part.healthy:
            health = "[green]healthy[/]  "
        elif part.running:
            health = "[red]unhealthy[/]"
        else:
            health = "[red]unhealthy[/] (not running)"
        # The address goes last and is never wrapped: people copy it from here.
        console.print(
            f"  {part.name:<12} {health}  pid {part.pid or '-':<8} {mask_dsn(part.address)}",
            soft_wrap=True,
            highlight=False,
        )
    if not all(part.healthy for part in report):
        raise typer.Exit(1)


@_fail_cleanly
def smoke() -> None:
    """Check the stack end to end: a Kafka transaction read back read_committed, a Postgres row."""
    from deploy.local import smoke as smoke_check
    from deploy.settings import load_settings

    settings = load_settings()
    typer.echo(
        f"kafka {settings.kafka.bootstrap_servers}, postgres {mask_dsn(settings.postgres_dsn)}"
    )
    smoke_check.run(
        settings.kafka.client_config(), settings.postgres_dsn, lambda line: typer.echo(f"  {line}")
    )
    typer.echo("smoke: OK")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("smoke")(smoke)
