"""The fault suite's OWN local stack: restarting the broker or Postgres of the session
stack would disturb every other test of the run, so this one is private to the module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from deploy.local import stack as local_stack
from deploy.local.state import StackState


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[StackState]:
    state_dir = tempfile.mkdtemp(prefix="cqrs-faults-")
    try:
        yield local_stack.up(state_dir, started_by="pytest faults")
    finally:
        try:
            local_stack.down(state_dir, timeout=20.0)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
