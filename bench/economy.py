"""What each command costs every process of the stack: CPU microseconds per command for the
client, each worker, the broker and Postgres, their total, the rate the machine's cores
could sustain at that total, and the broker's records and requests per command.

    meter = StackMeter.for_target(bootstrap_servers)   # None off the local stack
    before = meter.reading()
    ...                                                # the measured phase
    figures = meter.usage(before, meter.reading(), prefix, commands)

The broker's CPU is its JVM's (all threads) from /proc/<pid>/stat; Postgres' is the
postmaster's tree (bench/process_cpu.py: every backend, the exited ones included); the
broker's counters come from its JMX (bench/broker_metrics.py). The local stack's state file
(deploy/local/state.py) names the PIDs and the JMX port.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.broker_metrics import (
    BrokerCounters,
    BrokerMetricsError,
    broker_per_command,
    read_counters,
)
from bench.process_cpu import (
    ProcError,
    bound_cmds_per_s,
    cpu_seconds,
    per_command_us,
    total_us,
    tree_cpu_seconds,
)
from deploy.local.state import read_state

OTHER_SHOWN = 4  # other request types shown in the table, the most frequent first
PROCESSES = ("client", "processor", "projector", "sink", "broker", "postgres")


@dataclass(frozen=True)
class Reading:
    broker_cpu_s: float | None
    postgres_cpu_s: float | None
    counters: BrokerCounters | None
    error: str | None = None


@dataclass(frozen=True)
class StackMeter:
    """Reads the broker's and Postgres' CPU and the broker's counters of one local stack."""

    kafka_pid: int
    postgres_pid: int
    jmx_url: str | None

    @classmethod
    def for_target(cls, bootstrap_servers: str) -> StackMeter | None:
        """The meter of the local stack serving `bootstrap_servers`, or None when the target
        is not a local stack of this machine (its processes cannot be read)."""
        try:
            state = read_state()
        except ValueError:
            return None
        if state is None or state.bootstrap_servers != bootstrap_servers:
            return None
        if not state.kafka_pid or not state.postgres_pid:
            return None
        return cls(state.kafka_pid, state.postgres_pid, state.kafka_jmx_url)

    def reading(self, counters: bool = True) -> Reading:
        """CPU now (instant), and the broker's counters when `counters` (a JmxTool run:
        seconds)."""
        errors: list[str] = []
        broker = _or_note(lambda: cpu_seconds(self.kafka_pid), "broker", errors)
        postgres = _or_note(lambda: tree_cpu_seconds(self.postgres_pid), "postgres", errors)
        read = None
        if not counters:
            pass
        elif self.jmx_url is None:
            errors.append("the broker serves no JMX (a stack started before JMX was added)")
        else:
            try:
                read = read_counters(self.jmx_url)
            except BrokerMetricsError as failed:
                errors.append(str(failed))
        return Reading(broker, postgres, read, "; ".join(errors) or None)

    def usage(self, before: Reading, after: Reading, prefix: str, commands: int) -> dict[str, Any]:
        """The stack's share of a phase: CPU seconds of the broker and Postgres, and the
        broker's records and requests per command."""
        out: dict[str, Any] = {
            "cpu_s": {
                "broker": _diff(before.broker_cpu_s, after.broker_cpu_s),
                "postgres": _diff(before.postgres_cpu_s, after.postgres_cpu_s),
            }
        }
        if before.counters is not None and after.counters is not None and commands > 0:
            out["broker"] = broker_per_command(before.counters, after.counters, prefix, commands)
        errors = [e for e in (before.error, after.error) if e]
        if errors:
            out["unmeasured"] = "; ".join(dict.fromkeys(errors))
        return out


def postgres_pid_for(dsn: str) -> int | None:
    """The postmaster's PID when `dsn` is the local stack's Postgres, else None."""
    try:
        state = read_state()
    except ValueError:
        return None
    if state is None or state.postgres_dsn != dsn:
        return None
    return state.postgres_pid


def _or_note(read: Callable[[], float], what: str, errors: list[str]) -> float | None:
    try:
        return read()
    except ProcError as gone:
        errors.append(f"{what}: {gone}")
        return None


def _diff(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def cost_per_command(
    cpu_s: Mapping[str, float | None],
    commands: int,
    processes: Sequence[str] | None = PROCESSES,
    measured_cmds_per_s: float | None = None,
    cores: int | None = None,
) -> dict[str, Any]:
    """CPU µs per command of each of `processes`, their total, and the best rate `cores`
    could reach at that total (cores / total CPU per command), beside the measured rate."""
    per = {name: per_command_us(cpu_s.get(name), commands) for name in processes or PROCESSES}
    total = total_us(per)
    cores = cores or os.cpu_count() or 1
    return {
        "cpu_us": per,
        "total_cpu_us": total,
        "cores": cores,
        "bound_cmds_per_s": bound_cmds_per_s(total, cores),
        "measured_cmds_per_s": measured_cmds_per_s,
    }


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def economy_table(
    rows: Sequence[tuple[str, Mapping[str, Any]]], title: str = "CPU µs per command, every process"
) -> Table:
    """One row per phase: CPU µs per command of every process, the total, cores / total and
    the measured rate."""
    seen = dict.fromkeys(name for _, cost in rows for name in cost.get("cpu_us", {}))
    names = [n for n in seen if n not in PROCESSES] + [n for n in PROCESSES if n in seen]
    table = Table(title=title)
    table.add_column("run")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    table.add_column("cores / total, cmd/s", justify="right")
    table.add_column("measured, cmd/s", justify="right")
    for label, cost in rows:
        per = cost.get("cpu_us", {})
        table.add_row(
            label,
            *(_us(per[name]) if name in per else "" for name in names),
            _us(cost.get("total_cpu_us")),
            _rate(cost.get("bound_cmds_per_s")),
            _rate(cost.get("measured_cmds_per_s")),
        )
    return table


def broker_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> Table:
    """One row per phase: the broker's records produced (per topic) and requests, per
    command."""
    table = Table(title="the broker, per command (its JMX counters)")
    table.add_column("run")
    table.add_column("records in (per topic)", justify="right")
    table.add_column("Produce", justify="right")
    table.add_column("Fetch", justify="right")
    table.add_column("transactions (EndTxn)", justify="right")
    table.add_column("other requests", justify="right")
    for label, figures in rows:
        requests: Mapping[str, float] = figures.get("requests", {})
        records: Mapping[str, float] = figures.get("records_in", {})
        # FetchConsumer is the consumers' share of Fetch, already counted there.
        shown = ("Produce", "Fetch", "FetchConsumer", "EndTxn")
        other = sorted(
            ((k, v) for k, v in requests.items() if k not in shown), key=lambda kv: -kv[1]
        )
        table.add_row(
            label,
            f"{figures.get('records_in_total', 0.0):.2f}: "
            + ", ".join(f"{t} {v:.2f}" for t, v in sorted(records.items())),
            f"{figures.get('produce_requests', 0.0):.3f}",
            f"{figures.get('fetch_requests', 0.0):.3f}",
            f"{figures.get('transactions', 0.0):.3f}",
            ", ".join(f"{k} {v:.3f}" for k, v in other[:OTHER_SHOWN])
            + (
                f" (+{len(other) - OTHER_SHOWN} more in --json)" if len(other) > OTHER_SHOWN else ""
            ),
        )
    return table


def print_economy(
    cost_rows: Sequence[tuple[str, Mapping[str, Any]]],
    broker_rows: Sequence[tuple[str, Mapping[str, Any]]],
    console: Console,
) -> None:
    if cost_rows:
        console.print(economy_table(cost_rows))
    if broker_rows:
        console.print(broker_table(broker_rows))
