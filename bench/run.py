"""The benchmark: our pipeline and the peer (`eventsourcing` on the same Postgres), the same
seeded workload, one after the other in one run, printed side by side with ratios.

    .venv/bin/python -m bench [--accounts 1000] [--commands 100000] [--runs 1] [--json FILE]
                              [--charts DIR]

`--charts DIR` writes PNG charts of throughput, latency and consumer lag over our full and
paced runs (full-*.png, paced-*.png; with --runs N, one folder run-<n> per run), drawn by
the demo's chart module (cqrsctl/run_charts.py; needs matplotlib, the `charts` extra).

Needs the local stack (`cqrsctl up`, or CQRS_KAFKA_BOOTSTRAP_SERVERS / CQRS_POSTGRES_DSN) and
the `bench` extra (`pip install -e '.[bench]'`) for the peer. Method and figures:
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console

from bench.bench_pipeline import BenchError, machine, print_ours, run_ours
from bench.durability import describe, durable, durable_settings
from bench.economy import economy_table
from bench.peer_eventsourcing import PeerError, default_dsn, run_peer
from bench.report import median_figures, print_comparison
from bench.targets import verdicts
from cqrsctl.workload import DEFAULT_ACCOUNTS, DEFAULT_COMMANDS, DEFAULT_SEED, WorkloadError
from deploy.local.pipeline import WorkerFailed
from processors.settings import SettingsError


def main(
    accounts: int = typer.Option(DEFAULT_ACCOUNTS, min=1, help="accounts opened first"),
    commands: int = typer.Option(DEFAULT_COMMANDS, min=0, help="deposits and withdrawals"),
    seed: int = typer.Option(DEFAULT_SEED, help="workload seed"),
    runs: int = typer.Option(1, min=1, help="repeat both sides; medians of each figure"),
    window: int = typer.Option(5000, min=1, help="our commands in flight at full load"),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="run the eventsourcing peer"),
    stages: str = typer.Option("drain,full,paced", help="our runs, comma-separated"),
    json_out: Path = typer.Option(None, "--json", help="also write every figure to this file"),
    charts: Path = typer.Option(
        None, "--charts", help="also write PNG charts of our full and paced runs here"
    ),
) -> None:
    """Run ours and the peer on the same workload and print them side by side."""
    if charts is not None:
        from cqrsctl.console import fail
        from cqrsctl.run_charts import ChartsUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except ChartsUnavailable as exc:
            fail(str(exc))
    console = Console()
    if not console.is_terminal:
        console.width = 150  # the tables are wide; a log file has room
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    ours_runs: list[dict[str, Any]] = []
    peer_runs: list[dict[str, Any]] = []
    try:
        dsn = default_dsn()
        for run in range(runs):
            console.log(f"run {run + 1}/{runs}: ours, A={accounts:,} C={commands:,}")
            ours_runs.append(
                run_ours(
                    accounts,
                    commands,
                    seed=seed,
                    window=window,
                    stages=chosen,
                    say=console.log,
                    charts=_charts_folder(charts, run, runs),
                )
            )
            if peer:
                console.log(f"run {run + 1}/{runs}: the peer (eventsourcing), same workload")
                peer_runs.append(run_peer(accounts, commands, dsn, seed=seed))
    except (BenchError, PeerError, WorkerFailed, WorkloadError, SettingsError) as failed:
        typer.echo(f"benchmark failed: {failed}", err=True)
        if isinstance(failed, WorkerFailed):
            typer.echo(failed.log_tail, err=True)
        raise typer.Exit(1) from None
    except psycopg.Error as failed:
        typer.echo(f"benchmark failed: postgres: {failed}", err=True)
        raise typer.Exit(1) from None
    ours = median_figures(ours_runs) if runs > 1 else ours_runs[0]
    theirs = (median_figures(peer_runs) if runs > 1 else peer_runs[0]) if peer_runs else None
    try:
        ours["settings"] = durable_settings(dsn)
    except psycopg.Error as failed:
        typer.echo(f"benchmark failed: postgres: {failed}", err=True)
        raise typer.Exit(1) from None
    kind = "durable settings" if durable(ours["settings"]) else "NOT durable settings"
    title = f"A={accounts:,} C={commands:,}, median of {runs} run(s), {kind}"
    print_comparison(ours, theirs, title=title, console=console)
    print_ours(ours, console)
    if theirs is not None and "cost" in theirs:
        peer_rows = [("end to end", theirs["cost"])]
        console.print(economy_table(peer_rows, f"{theirs['system']}: CPU µs per command"))
    console.print(f"settings ({kind}): {describe(ours['settings'])}", soft_wrap=True)
    for target in verdicts(ours, theirs):
        verdict = _VERDICT[target.met]
        console.print(f"target {target.figure}: {target.value} {verdict}")
    load = ours["loadavg_before"]
    info = machine()
    console.print(
        f"machine: {info['nproc']} CPUs, {info['mem_gb']} GB; load average (1/5/15 min) "
        f"before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for side in (ours, theirs):
        for problem in (side or {}).get("problems", []):
            console.print(f"[red]incorrect ({side['system']}):[/red] {problem}")
    if json_out is not None:
        json_out.write_text(json.dumps({"ours": ours, "peer": theirs}, indent=2, default=str))
        console.print(f"figures written to {json_out}")
    for run in ours_runs:
        for stage in ("full", "paced"):
            for path in (run.get(stage) or {}).get("charts", []):
                console.print(f"chart: {path}", soft_wrap=True)


_VERDICT = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "(not measured)"}


def _charts_folder(charts: Path | None, run: int, runs: int) -> Path | None:
    """Where run `run` (0-based) of `runs` writes its charts: `charts` itself for one run."""
    if charts is None or runs == 1:
        return charts
    return charts / f"run-{run + 1}"


def cli() -> None:
    typer.run(main)


if __name__ == "__main__":
    cli()
