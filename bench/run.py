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
from bench.economy import economy_table
from bench.peer_eventsourcing import PeerError, default_dsn, run_peer
from bench.report import median_figures, print_comparison
from cqrsctl.workload import DEFAULT_ACCOUNTS, DEFAULT_COMMANDS, DEFAULT_SEED, WorkloadError
from deploy.local.pipeline import WorkerFailed
from processors.settings import SettingsError

# The targets, for the verdict lines under the tables.
TARGET_E2E = 20_000.0
TARGET_WRITE = 40_000.0
TARGET_P99_VISIBLE_MS = 250.0
TARGET_PEER_RATIO = 6.0


def targets(ours: dict[str, Any], peer: dict[str, Any] | None) -> list[tuple[str, str, bool]]:
    """(figure, value, met) for each target the issue sets."""
    found = []
    e2e, write = ours.get("e2e_cmds_per_s"), ours.get("write_cmds_per_s")
    if e2e is not None:
        found.append((f"end to end >= {TARGET_E2E:,.0f}/s", f"{e2e:,.0f}/s", e2e >= TARGET_E2E))
    if write is not None:
        met = write >= TARGET_WRITE
        found.append((f"processor >= {TARGET_WRITE:,.0f}/s", f"{write:,.0f}/s", met))
    paced = (ours.get("paced") or {}).get("visible_latency_ms") or {}
    if "p99" in paced:
        p99 = paced["p99"]
        found.append(
            (
                f"p99 send -> visible < {TARGET_P99_VISIBLE_MS:.0f} ms at half rate",
                f"{p99:,.0f} ms",
                p99 < TARGET_P99_VISIBLE_MS,
            )
        )
    if peer and e2e and peer.get("e2e_cmds_per_s"):
        ratio = e2e / peer["e2e_cmds_per_s"]
        found.append(
            (f">= {TARGET_PEER_RATIO:.0f}x the peer end to end", f"{ratio:.1f}x", ratio >= 6)
        )
    return found


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
    title = f"A={accounts:,} C={commands:,}, median of {runs} run(s), durable settings"
    print_comparison(ours, theirs, title=title, console=console)
    print_ours(ours, console)
    if theirs is not None and "cost" in theirs:
        peer_rows = [("end to end", theirs["cost"])]
        console.print(economy_table(peer_rows, f"{theirs['system']}: CPU µs per command"))
    for figure, value, met in targets(ours, theirs):
        verdict = "[green]met[/green]" if met else "[red]not met[/red]"
        console.print(f"target {figure}: {value} {verdict}")
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


def _charts_folder(charts: Path | None, run: int, runs: int) -> Path | None:
    """Where run `run` (0-based) of `runs` writes its charts: `charts` itself for one run."""
    if charts is None or runs == 1:
        return charts
    return charts / f"run-{run + 1}"


def cli() -> None:
    typer.run(main)


if __name__ == "__main__":
    cli()
