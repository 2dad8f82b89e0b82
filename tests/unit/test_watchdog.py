"""The watchdog ends a process whose guarded call blocks past its deadline, and leaves one
whose calls return in time alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from processors.watchdog import EXIT_CODE

SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from processors.watchdog import Watchdog
    logging.basicConfig(level=logging.INFO)
    dog = Watchdog(check_every_s=0.05)
    with dog.bounded("quick call", 1.0):
        time.sleep(0.1)
    print("quick call returned", flush=True)
    with dog.bounded("stuck call", float(sys.argv[1])):
        time.sleep(30)
    print("not reached", flush=True)
    """
)


def test_a_call_blocked_past_its_deadline_ends_the_process():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "0.3"], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == EXIT_CODE
    assert "quick call returned" in done.stdout
    assert "not reached" not in done.stdout
    assert "stuck call is blocked past its deadline" in done.stderr
