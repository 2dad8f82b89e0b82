"""The fault run counts the events the projector read again from its warnings."""

from __future__ import annotations

from pathlib import Path

from processors.fetch_ledger import runs_text
from tests.support.faults.run import reread_by_projector, reread_count


def test_a_warning_names_every_offset_of_its_runs_on_every_partition():
    where = f"bank.events[0] offsets {runs_text([3, 4, 5, 9])}; bank.events[2] offsets 7"
    assert reread_count(where) == 5


def test_the_logs_of_every_projector_start_are_summed(tmp_path: Path):
    line = "WARNING Faust dropped records before the agent saw them; reading again: "
    (tmp_path / "projector-1.log").write_text(f"{line}e[1] offsets 10-19\nother line\n")
    (tmp_path / "projector-2.log").write_text(f"{line}e[0] offsets 1; e[3] offsets 4-5\n")
    (tmp_path / "sink-1.log").write_text(f"{line}e[0] offsets 1-100\n")  # not the projector
    assert reread_by_projector(tmp_path) == (13, 2)
