"""Issue 15's targets, and whether a run of the benchmark meets each one.

    for t in verdicts(ours, peer):      # ours / peer: the figures `python -m bench` prints
        print(t.figure, t.value, t.met) # t.met is None when the run did not measure it

CPU µs per command are read at full load (the `full` run's `cost`), the processor's rate
from the `drain` run, the p99 send -> visible from the `paced` run (paced at half of the
full run's rate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# CPU µs per command at full load, per process (the read side's issue budgets the projector
# and the sink).
CPU_BUDGET_US: dict[str, float] = {"client": 30, "processor": 40, "broker": 80, "postgres": 40}
TARGET_WRITE = 25_000.0  # processor draining alone, commands/s
TARGET_E2E = 6_000.0  # end to end, commands/s
TARGET_PEER_RATIO = 8.0  # end to end, ours / the peer's, in the same run
TARGET_P99_VISIBLE_MS = 250.0  # send -> visible, paced at half the full run's rate


@dataclass(frozen=True)
class Verdict:
    figure: str  # the target, e.g. "processor <= 40 CPU µs/command at full load"
    value: str  # what the run measured, "-" when it did not
    met: bool | None  # None: not measured in this run


def verdicts(ours: Mapping[str, Any], peer: Mapping[str, Any] | None) -> list[Verdict]:
    """One verdict per target, in the issue's order."""
    found: list[Verdict] = []
    cpu = ((ours.get("full") or {}).get("cost") or {}).get("cpu_us") or {}
    for process, budget in CPU_BUDGET_US.items():
        used = cpu.get(process)
        found.append(
            _verdict(
                f"{process} <= {budget:.0f} CPU µs/command at full load",
                used,
                f"{used:,.0f} µs" if used is not None else "-",
                lambda v, b=budget: v <= b,
            )
        )
    write = ours.get("write_cmds_per_s")
    found.append(
        _verdict(
            f"processor draining >= {TARGET_WRITE:,.0f} commands/s",
            write,
            f"{write:,.0f}/s" if write is not None else "-",
            lambda v: v >= TARGET_WRITE,
        )
    )
    e2e = ours.get("e2e_cmds_per_s")
    found.append(
        _verdict(
            f"end to end >= {TARGET_E2E:,.0f} commands/s",
            e2e,
            f"{e2e:,.0f}/s" if e2e is not None else "-",
            lambda v: v >= TARGET_E2E,
        )
    )
    theirs = (peer or {}).get("e2e_cmds_per_s")
    ratio = e2e / theirs if e2e and theirs else None
    found.append(
        _verdict(
            f"end to end >= {TARGET_PEER_RATIO:.0f}x the peer",
            ratio,
            f"{ratio:.1f}x" if ratio is not None else "-",
            lambda v: v >= TARGET_PEER_RATIO,
        )
    )
    p99 = ((ours.get("paced") or {}).get("visible_latency_ms") or {}).get("p99")
    found.append(
        _verdict(
            f"p99 send -> visible <= {TARGET_P99_VISIBLE_MS:.0f} ms paced at half rate",
            p99,
            f"{p99:,.0f} ms" if p99 is not None else "-",
            lambda v: v <= TARGET_P99_VISIBLE_MS,
        )
    )
    return found


def _verdict(
    figure: str, value: float | None, shown: str, meets: Callable[[float], bool]
) -> Verdict:
    return Verdict(figure, shown, None if value is None else bool(meets(value)))
