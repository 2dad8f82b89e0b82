"""Fault injection: the whole pipeline under a steady load while its parts are killed and
restarted; afterwards nothing acknowledged is lost or duplicated and Postgres equals the fold
of the events.

The run is tests/support/faults/run.py (size from CQRS_FAULT_* env, see there), its report
tests/support/faults/report.py; this module holds the check. Run alone:
`.venv/bin/pytest -m faults -s` (-s shows the tables).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from deploy.local.state import StackState
from tests.support.faults.report import print_report
from tests.support.faults.run import FaultPlan, run_faults


@pytest.mark.faults
@pytest.mark.timeout(900)  # 2-4 min on a 2-core machine; more when it is shared
def test_acknowledged_writes_survive_kills_restarts_and_a_zombie(
    fault_stack: StackState, tmp_path: Path
) -> None:
    plan = FaultPlan.from_env()
    run = run_faults(fault_stack, tmp_path, plan)
    print_report(Console(width=140), run)

    inv = run.invariants
    assert inv.max_events_per_command == 1  # the duplicate count relies on it
    assert inv.duplicates == 0
    assert inv.version_gaps == 0
    assert inv.acked_but_missing == 0
    assert inv.rejected_with_events == 0
    assert inv.pg_rows_differing == 0
    assert inv.event_log_differing == 0
    assert inv.daily_totals_differing == 0
    assert not run.only_librdkafka and not run.only_aiokafka, "aiokafka and librdkafka differ"
    assert inv.acknowledged == inv.sent, "every command sent during the run got its result"
    assert len(run.kills) == plan.kills  # 20 by default; CQRS_FAULT_KILLS may change it
    assert {"processor", "projector", "sink"} <= set(run.kills)
    assert run.count("broker") == 1 and run.count("postgres") == 1
    assert inv.accepted > 0 and inv.rejected > 0
