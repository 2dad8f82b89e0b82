"""What `cqrsctl demo` prints when the read model caught up: the run's figures (commands,
outcomes, wall time first send -> all in Postgres, send -> result latency percentiles),
whether the outcomes and this run's account balances in Postgres equal the workload's
reference model, a few rows of the read model, and commands to look further. The figures are
returned too, for `--report-json`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from cqrsctl.console import cli_name


def print_report(
    console: Console,
    drive: Any,
    visible: float,
    model: Any,
    dsn: str,
    schema: str,
    tag: str,
) -> dict[str, Any]:
    """Print the report; returns its figures."""
    import psycopg
    from psycopg import sql

    from cqrsctl.driver import ACCEPTED, percentiles
    from cqrsctl.stack_cmd import mask_dsn

    wall = visible - drive.first_sent
    total = drive.total
    summary = Table(title="demo", show_header=False)
    summary.add_column(no_wrap=True)
    summary.add_column(justify="right", no_wrap=True)
    summary.add_row("commands sent", f"{total:,}")
    summary.add_row("accepted", f"{drive.accepted:,}")
    for reason, count in sorted(drive.rejections.items()):
        summary.add_row(f"rejected: {reason}", f"{count:,}")
    summary.add_row("events", f"{drive.events:,}")
    summary.add_row("wall time, first send -> all in Postgres", f"{wall:,.2f} s")
    summary.add_row("end to end", f"{total / wall:,.0f} commands/s")
    latency = percentiles(drive.result_latencies())
    summary.add_row(
        "send -> result p50 / p95 / p99",
        " / ".join(f"{latency[p] * 1000:,.0f} ms" for p in ("p50", "p95", "p99")),
    )
    accepted = [o == ACCEPTED for o in drive.outcome]
    same = accepted == model.accepted and dict(drive.rejections) == dict(model.rejections)
    summary.add_row("outcomes match the reference model", "yes" if same else "[red]NO[/red]")
    console.print(summary)

    ident = sql.Identifier(schema)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT account_id, owner, balance, status, version FROM {}.accounts"
                " WHERE account_id LIKE %s ORDER BY balance DESC, account_id LIMIT 5"
            ).format(ident),
            (f"{tag}-%",),
        ).fetchall()
        balances = dict(
            conn.execute(
                sql.SQL(
                    "SELECT account_id, balance FROM {}.accounts WHERE account_id LIKE %s"
                ).format(ident),
                (f"{tag}-%",),
            ).fetchall()
        )
        totals = conn.execute(
            sql.SQL(
                "SELECT currency, day, deposits, withdrawals, count FROM {}.daily_totals"
                " ORDER BY day DESC, currency LIMIT 5"
            ).format(ident)
        ).fetchall()
    expected = {f"{tag}-{k}": v for k, v in model.balances.items()}
    console.print(
        f"accounts in Postgres: {len(balances):,} of this run's, balances "
        + ("equal the reference model's" if balances == expected else "[red]DIFFER[/red]")
    )
    table = Table("account_id", "owner", "balance", "status", "version", title="accounts (top 5)")
    for account_id, owner, balance, status, version in rows:
        table.add_row(account_id, owner, f"{balance:,}", status, str(version))
    console.print(table)
    daily = Table(
        "currency", "day", "deposits", "withdrawals", "count", title="daily_totals (all runs)"
    )
    for currency, day, deposits, withdrawals, count in totals:
        daily.add_row(currency, str(day), f"{deposits:,}", f"{withdrawals:,}", f"{count:,}")
    console.print(daily)
    some = rows[0][0] if rows else f"{tag}-acc-000000"
    cli = cli_name()
    console.print("where to look next:")
    console.print(f"  {cli} query accounts {some}", highlight=False, soft_wrap=True)
    console.print(f"  {cli} history {some}", highlight=False, soft_wrap=True)
    console.print(f"  {cli} query daily_totals EUR", highlight=False, soft_wrap=True)
    console.print(f"  psql '{mask_dsn(dsn)}'  (schema {schema})", highlight=False, soft_wrap=True)
    return {
        "sent": total,
        "accepted": drive.accepted,
        "rejected": drive.rejected,
        "rejections": dict(drive.rejections),
        "events": drive.events,
        "wall_s": wall,
        "e2e_cmds_per_s": total / wall,
        "result_latency_ms": {k: v * 1000 for k, v in latency.items()},
        "matches_model": same,
        "balances_match_model": balances == expected,
    }
