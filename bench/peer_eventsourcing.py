"""The peer's half of the benchmark: the bank workload through the Python `eventsourcing`
library on the same Postgres, with its own Postgres read model.

    .venv/bin/python -m bench.peer_eventsourcing --accounts 1000 --commands 100000 [--dsn ...]

Two processes, as the library intends a projection to run beside the application:

- the writer: one `BankAccounts` application driven by a single-threaded caller, one command
  at a time. The library's command methods are synchronous and it documents no concurrent
  driver; its Postgres recorder keeps the application sequence gap-free by serialising
  inserts (a table lock, or one writer when the insert function is used), so threads would
  only queue;
- the projector: a `ProjectionRunner` that subscribes to the application (LISTEN/NOTIFY)
  and applies each event to the `accounts` table with its tracking record in one
  transaction.

Everything lives in its own schema (`peer_eventsourcing` by default), dropped and created
afresh at the start of each run. Postgres keeps its default durability (fsync and
synchronous_commit on). Library settings follow its documentation: the aggregate cache with
fast-forwarding off (documented for a single application instance) and the Postgres insert
function (used by the library's own speed-run example); `--no-db-functions` turns that off.

Figures (see bench/report.py): commands/s through the application and end to end (first call
until the read model holds the last event), latency from call to return and from call to
visible in the read model (the projector notes when each notification's transaction
committed, on the machine-wide monotonic clock), and each process's peak RSS. The result is
checked against cqrsctl.workload's reference model: per-command acceptance, rejection reasons,
and every balance in the read model.
"""

from __future__ import annotations

import json
import os
import traceback
from array import array
from collections import Counter
from collections.abc import Mapping
from importlib.metadata import version
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from time import monotonic, process_time, sleep
from typing import Any

import psycopg
import typer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console

from bench.economy import cost_per_command, economy_table, postgres_pid_for
from bench.process_cpu import ProcError, tree_cpu_seconds
from bench.report import median_figures, print_comparison
from cqrsctl.driver import percentiles
from cqrsctl.workload import (
    DEFAULT_ACCOUNTS,
    DEFAULT_COMMANDS,
    DEFAULT_SEED,
    DEPOSIT,
    OPEN_ACCOUNT,
    WITHDRAW,
    WorkloadError,
    WorkloadSpec,
    expected_outcome,
    iter_commands,
)
from processors.settings import ENV_PG_DSN, SettingsError, load_settings

SCHEMA = "peer_eventsourcing"
CATCH_UP_TIMEOUT_S = 900.0
START_TIMEOUT_S = 120.0


class PeerError(RuntimeError):
    """The peer run could not complete; the message says which part failed and why."""


def library_env(
    dsn: str, *, schema: str = SCHEMA, accounts: int = DEFAULT_ACCOUNTS, db_functions: bool = True
) -> dict[str, str]:
    """The library's configuration, by its documented environment variables."""
    params = conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port") or 5432),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y" if db_functions else "n",
        # Every account fits; one writer owns the aggregates, so no fast-forward query.
        "AGGREGATE_CACHE_MAXSIZE": str(accounts),
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }


def reset_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE SCHEMA {0}").format(sql.Identifier(schema)))


def read_balances(dsn: str, schema: str) -> dict[str, int]:
    from bench.peer.projection import ACCOUNTS_TABLE

    query = sql.SQL("SELECT account_id, balance FROM {0}.{1}").format(
        sql.Identifier(schema), sql.Identifier(ACCOUNTS_TABLE)
    )
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query).fetchall()
    return {account: balance for account, balance in rows}


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent at fork, so a small child would report its parent's peak."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise PeerError("no VmHWM in /proc/self/status; peak RSS is measured on Linux only")


def _writer_main(
    env: dict[str, str], spec: WorkloadSpec, rate: float | None, conn: Connection
) -> None:
    """Child process: construct the application (creating its tables), then on "go" run
    every command and send back the timings. With a rate, command i is not called before
    i / rate seconds after the first (it never waits when behind)."""
    try:
        from bench.peer.application import BankAccounts
        from bench.peer.domain import AccountRuleError

        app = BankAccounts(env=env)
        conn.send(("ready", None))
        conn.recv()
        cpu_before = process_time()
        handlers = {
            OPEN_ACCOUNT: lambda d: app.open_account(d["account_id"], d["owner"], d["currency"]),
            DEPOSIT: lambda d: app.deposit(
                d["account_id"], d["amount"]["amount"], d["amount"]["currency"]
            ),
            WITHDRAW: lambda d: app.withdraw(
                d["account_id"], d["amount"]["amount"], d["amount"]["currency"]
            ),
        }
        started = array("d", bytes(8 * spec.total))
        returned = array("d", bytes(8 * spec.total))
        notification_ids = array("q", bytes(8 * spec.total))  # 0: rejected, nothing recorded
        rejections: Counter[str] = Counter()
        first_due = monotonic()
        for index, (kind, data) in enumerate(iter_commands(spec)):
            handler = handlers[kind]
            if rate is not None:
                ahead = first_due + index / rate - monotonic()
                if ahead > 0:
                    sleep(ahead)
            begin = monotonic()
            try:
                notification_ids[index] = handler(data)
            except AccountRuleError as rejected:
                rejections[rejected.reason] += 1
            returned[index] = monotonic()
            started[index] = begin
        app.close()
        conn.send(
            (
                "done",
                {
                    "started": started,
                    "returned": returned,
                    "notification_ids": notification_ids,
                    "rejections": dict(rejections),
                    "peak_rss_mb": _peak_rss_mb(),
                    "cpu_s": process_time() - cpu_before,
                },
            )
        )
    except BaseException:
        conn.send(("error", f"writer failed:\n{traceback.format_exc()}"))
        raise


def _projector_main(env: dict[str, str], conn: Connection) -> None:
    """Child process: run the projection until it has processed the notification ID the
    parent sends, then send back when each notification became visible."""
    try:
        from eventsourcing.projection import ProjectionRunner

        from bench.peer.application import BankAccounts
        from bench.peer.projection import AccountsProjection, PostgresAccountsView

        with ProjectionRunner(
            application_class=BankAccounts,
            projection_class=AccountsProjection,
            view_class=PostgresAccountsView,
            env=env,
        ) as runner:
            cpu_before = process_time()
            conn.send(("ready", None))
            while not conn.poll(0.2):
                if runner.is_interrupted.is_set():
                    runner.run_forever(timeout=0)  # re-raises the projection's error
                    raise PeerError("projection runner stopped before the run ended")
            last_notification_id = conn.recv()
            deadline = monotonic() + CATCH_UP_TIMEOUT_S
            while True:
                try:
                    runner.wait(last_notification_id, timeout=1.0)
                    break
                except TimeoutError:
                    if monotonic() > deadline:
                        raise PeerError(
                            f"read model did not reach notification {last_notification_id} "
                            f"within {CATCH_UP_TIMEOUT_S:.0f} s"
                        ) from None
            visible_at = runner.projection.visible_at
        cpu_s = process_time() - cpu_before
        conn.send(
            ("done", {"visible_at": visible_at, "peak_rss_mb": _peak_rss_mb(), "cpu_s": cpu_s})
        )
    except BaseException:
        conn.send(("error", f"projector failed:\n{traceback.format_exc()}"))
        raise


def _expect(conn: Connection, process: SpawnProcess, what: str, timeout: float) -> Any:
    deadline = monotonic() + timeout
    while not conn.poll(0.2):
        if not process.is_alive():
            raise PeerError(f"{process.name} exited (code {process.exitcode}) before {what}")
        if monotonic() > deadline:
            raise PeerError(f"{process.name} gave no {what} within {timeout:.0f} s")
    tag, payload = conn.recv()
    if tag == "error":
        raise PeerError(payload)
    return payload


def _ms(seconds: list[float]) -> dict[str, float]:
    return {key: value * 1000 for key, value in percentiles(seconds).items()}


def summarise(
    spec: WorkloadSpec, written: Mapping[str, Any], projected: Mapping[str, Any]
) -> dict[str, Any]:
    """Rates and latency percentiles from the writer's and projector's raw timings."""
    started, returned = written["started"], written["returned"]
    notification_ids, visible_at = written["notification_ids"], projected["visible_at"]
    first_call, last_return = started[0], returned[-1]
    last_visible = max(visible_at.values())
    visible_latency = [
        visible_at[nid] - begin for begin, nid in zip(started, notification_ids, strict=True) if nid
    ]
    return {
        "commands": spec.total,
        "accepted": sum(1 for nid in notification_ids if nid),
        "rejected": sum(1 for nid in notification_ids if not nid),
        "events": len(visible_at),
        "rejections": written["rejections"],
        "write_cmds_per_s": spec.total / (last_return - first_call),
        "e2e_cmds_per_s": spec.total / (last_visible - first_call),
        "wall_s": {"write": last_return - first_call, "e2e": last_visible - first_call},
        "write_latency_ms": _ms(
            [end - begin for begin, end in zip(started, returned, strict=True)]
        ),
        "visible_latency_ms": _ms(visible_latency),
    }


def check_correctness(
    spec: WorkloadSpec, written: Mapping[str, Any], events: int, balances: Mapping[str, int]
) -> list[str]:
    """Differences from the reference model; empty when the peer got everything right.
    `events` is how many events the projection applied, `balances` the read model's."""
    model = expected_outcome(iter_commands(spec))
    problems = []
    if events != model.events:
        problems.append(f"the projection applied {events} events, the model expects {model.events}")
    accepted = [bool(nid) for nid in written["notification_ids"]]
    if accepted != model.accepted:
        first = next(
            i for i, (a, b) in enumerate(zip(accepted, model.accepted, strict=True)) if a != b
        )
        problems.append(
            f"command {first} accepted={accepted[first]}, model says {model.accepted[first]}"
        )
    if dict(written["rejections"]) != dict(model.rejections):
        problems.append(f"rejections {written['rejections']} != model {dict(model.rejections)}")
    if dict(balances) != model.balances:
        wrong = sorted(
            k
            for k in model.balances.keys() | balances.keys()
            if balances.get(k) != model.balances.get(k)
        )
        problems.append(f"{len(wrong)} read-model balances differ from the model, e.g. {wrong[:3]}")
    return problems


def run_peer(
    accounts: int = DEFAULT_ACCOUNTS,
    commands: int = DEFAULT_COMMANDS,
    dsn: str | None = None,
    *,
    seed: int = DEFAULT_SEED,
    schema: str = SCHEMA,
    db_functions: bool = True,
    rate: float | None = None,
) -> dict[str, Any]:
    """One peer run over a fresh schema; returns the figures (bench/report.py's shape).
    `rate` paces the writer to that many commands/s; None sends as fast as it can.

    The writer and projector are spawned processes, so a script calling this needs the
    usual `if __name__ == "__main__":` guard."""
    import multiprocessing

    if rate is not None and rate <= 0:
        raise PeerError(f"rate must be positive commands/s, got {rate}")
    spec = WorkloadSpec(accounts=accounts, commands=commands, seed=seed)
    dsn = dsn or default_dsn()
    env = library_env(dsn, schema=schema, accounts=accounts, db_functions=db_functions)
    reset_schema(dsn, schema)
    load_before = os.getloadavg()
    postmaster = postgres_pid_for(dsn)

    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads/pools
    writer_conn, writer_end = ctx.Pipe()
    projector_conn, projector_end = ctx.Pipe()
    writer = ctx.Process(
        target=_writer_main, args=(env, spec, rate, writer_end), name="peer writer"
    )
    projector = ctx.Process(
        target=_projector_main, args=(env, projector_end), name="peer projector"
    )
    try:
        writer.start()  # creates the application's tables before the projector reads them
        _expect(writer_conn, writer, "ready", START_TIMEOUT_S)
        projector.start()
        _expect(projector_conn, projector, "ready", START_TIMEOUT_S)
        postgres_before = _postgres_cpu(postmaster)
        writer_conn.send("go")
        written = _expect(writer_conn, writer, "timings", CATCH_UP_TIMEOUT_S * 4)
        projector_conn.send(max(written["notification_ids"]))
        projected = _expect(projector_conn, projector, "visibility times", CATCH_UP_TIMEOUT_S + 60)
        postgres_after = _postgres_cpu(postmaster)
        for process in (writer, projector):
            process.join(timeout=30)
    finally:
        for process in (writer, projector):
            if process.is_alive():
                process.terminate()
            if process.pid is not None:
                process.join()

    figures = summarise(spec, written, projected)
    problems = check_correctness(
        spec, written, len(projected["visible_at"]), read_balances(dsn, schema)
    )
    cpu_s = {
        "writer": written.get("cpu_s"),
        "projector": projected.get("cpu_s"),
        "postgres": None
        if postgres_before is None or postgres_after is None
        else postgres_after - postgres_before,
    }
    return {
        "system": f"eventsourcing {version('eventsourcing')}",
        "cpu_s": cpu_s,
        "cost": cost_per_command(
            cpu_s, spec.total, ("writer", "projector", "postgres"), figures["e2e_cmds_per_s"]
        ),
        "accounts": accounts,
        "seed": seed,
        **figures,
        "peak_rss_mb": {"writer": written["peak_rss_mb"], "projector": projected["peak_rss_mb"]},
        "offered_rate": rate,
        "correct": not problems,
        "problems": problems,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "settings": {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"},
    }


def _postgres_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the postmaster and all its backends so far (None off the local
    stack)."""
    if postmaster is None:
        return None
    try:
        return tree_cpu_seconds(postmaster)
    except ProcError:
        return None


def default_dsn() -> str:
    return os.environ.get(ENV_PG_DSN) or load_settings().postgres_dsn


def main(
    accounts: int = typer.Option(DEFAULT_ACCOUNTS, min=1, help="accounts opened first"),
    commands: int = typer.Option(DEFAULT_COMMANDS, min=0, help="deposits and withdrawals"),
    dsn: str | None = typer.Option(
        None, help="Postgres DSN (default: CQRS_POSTGRES_DSN or the local stack)"
    ),
    seed: int = typer.Option(DEFAULT_SEED, help="workload seed"),
    runs: int = typer.Option(1, min=1, help="repeat and report the median of each figure"),
    schema: str = typer.Option(SCHEMA, help="schema the peer owns (dropped and recreated)"),
    db_functions: bool = typer.Option(
        True, "--db-functions/--no-db-functions", help="the library's Postgres insert function"
    ),
    rate: float | None = typer.Option(
        None, min=1, help="pace the writer to this many commands/s (default: flat out)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Run the workload through the `eventsourcing` library and print its figures."""
    try:
        results = [
            run_peer(
                accounts,
                commands,
                dsn,
                seed=seed,
                schema=schema,
                db_functions=db_functions,
                rate=rate,
            )
            for _ in range(runs)
        ]
    except (PeerError, WorkloadError, SettingsError, psycopg.Error) as failed:
        typer.echo(f"peer benchmark failed: {failed}", err=True)
        raise typer.Exit(1) from None
    figures = median_figures(results) if runs > 1 else results[0]
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    console = Console()
    paced = f", paced at {rate:,.0f} commands/s" if rate else ""
    title = f"peer: A={accounts:,} C={commands:,}{paced}, median of {runs} run(s)"
    print_comparison(None, figures, title=title, console=console)
    if "cost" in figures:
        console.print(economy_table([("end to end", figures["cost"])], "CPU µs per command"))
    console.print(f"settings: {figures['settings']}")
    console.print(
        "load average (1/5/15 min) before the first run: "
        + " ".join(f"{x:.2f}" for x in results[0]["loadavg_before"])
    )
    for problem in figures["problems"]:
        console.print(f"[red]incorrect:[/red] {problem}")


if __name__ == "__main__":
    typer.run(main)
