"""The benchmark's per-process economy, its pure parts: /proc stat lines, process trees
(exited children included), JmxTool's report, and the per-command arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.bench_pipeline import _add_costs, economy_rows
from bench.broker_metrics import (
    BrokerCounters,
    BrokerMetricsError,
    broker_per_command,
    counters_from,
    parse_jmxtool_csv,
)
from bench.economy import PROCESSES, StackMeter, cost_per_command, economy_table
from bench.process_cpu import (
    ProcError,
    ProcStat,
    bound_cmds_per_s,
    parse_stat,
    total_us,
    tree_cpu_seconds,
    tree_ticks,
)
from deploy.local.state import StackState, write_state

# A real line's shape; the name holds a space and a parenthesis, as process names may.
STAT = (
    "4242 (java (main) x) S 4200 4242 4242 0 -1 4194560 9000 0 12 0 "
    "1500 250 30 7 20 0 57 0 123456 5000000000 90000 18446744073709551615"
)


def test_parse_stat_counts_fields_after_the_last_parenthesis():
    stat = parse_stat(STAT)
    assert stat == ProcStat(pid=4242, ppid=4200, utime=1500, stime=250, cutime=30, cstime=7)
    assert stat.own_ticks == 1750
    assert stat.reaped_children_ticks == 37


@pytest.mark.parametrize("line", ["", "4242 java S 1 2 3", "4242 (java) S 1 2"])
def test_parse_stat_rejects_what_is_not_a_stat_line(line: str):
    with pytest.raises(ValueError):
        parse_stat(line)


def test_parse_stat_reads_this_process():
    stat = parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()


def _stat(pid: int, ppid: int, own: int, reaped: int = 0) -> ProcStat:
    return ProcStat(pid, ppid, utime=own, stime=0, cutime=reaped, cstime=0)


def test_tree_ticks_sums_root_descendants_and_their_reaped_children_only():
    stats = [
        _stat(1, 0, 1000),  # init: not in the tree
        _stat(10, 1, 5, reaped=40),  # the root: 40 ticks of backends that exited
        _stat(11, 10, 7),
        _stat(12, 10, 3, reaped=2),
        _stat(13, 12, 1),  # a grandchild
        _stat(20, 1, 500),  # a sibling of the root
    ]
    assert tree_ticks(stats, 10) == 5 + 40 + 7 + 3 + 2 + 1
    with pytest.raises(ProcError):
        tree_ticks(stats, 99)


def test_tree_cpu_counts_a_child_that_exited_between_two_readings(tmp_path: Path):
    """A real process tree: a child that burns CPU and exits before the second reading is
    still counted (its time moves into the parent's reaped time)."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent_code = (
        "import subprocess, sys, time\n"
        "sys.stdin.readline()\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)
        before = tree_cpu_seconds(parent.pid)
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "done"
        after = tree_cpu_seconds(parent.pid)
        assert after - before >= 0.25
    finally:
        parent.kill()
        parent.wait()


def test_tree_cpu_of_a_process_that_is_gone_is_an_error():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(ProcError):
        tree_cpu_seconds(gone.pid)


JMXTOOL_OUTPUT = """\
Trying to connect to JMX url: service:jmx:rmi:///jndi/rmi://127.0.0.1:50759/jmxrmi
time,"1796410920732"
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count,"120"
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=12:Count,"30"
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=17:Count,"400"
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=EndTxn,version=5:Count,"9"
kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=b1.commands:Count,"1000"
kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=b1.events:Count,"800"
kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=other.events:Count,"50"
kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec:Count,"1850"
kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec:MeanRate,"not a number"
"""


def test_jmxtool_report_parses_names_with_commas_and_skips_chatter():
    values = parse_jmxtool_csv(JMXTOOL_OUTPUT)
    key = "kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count"
    assert values[key] == 120.0
    assert "time" not in values
    assert len(values) == 8


def test_jmxtool_report_missing_is_an_error():
    with pytest.raises(BrokerMetricsError):
        parse_jmxtool_csv("Exception in thread main: connection refused\n")


def test_counters_sum_request_versions_and_split_topics():
    counters = counters_from(parse_jmxtool_csv(JMXTOOL_OUTPUT))
    assert counters.requests == {"Produce": 150.0, "Fetch": 400.0, "EndTxn": 9.0}
    assert counters.records_in == {"b1.commands": 1000.0, "b1.events": 800.0, "other.events": 50.0}
    assert counters.records_in_total == 1850.0


def test_broker_per_command_is_the_difference_divided_by_commands_for_the_run_topics():
    before = BrokerCounters(
        requests={"Produce": 100.0, "Fetch": 50.0, "EndTxn": 2.0, "Metadata": 7.0},
        records_in={"b1.commands": 0.0, "other.events": 10.0},
        records_in_total=10.0,
    )
    after = BrokerCounters(
        requests={"Produce": 300.0, "Fetch": 450.0, "EndTxn": 12.0, "Metadata": 7.0},
        records_in={
            "b1.commands": 1000.0,
            "b1.events": 800.0,
            "__consumer_offsets": 20.0,
            "other.events": 60.0,
        },
        records_in_total=1890.0,
    )
    per = broker_per_command(before, after, "b1", 1000)
    assert per["requests"] == {"Produce": 0.2, "Fetch": 0.4, "EndTxn": 0.01}  # Metadata: still
    assert per["records_in"] == {"commands": 1.0, "events": 0.8, "__consumer_offsets": 0.02}
    assert per["records_in_total"] == pytest.approx(1.88)
    assert (per["produce_requests"], per["fetch_requests"], per["transactions"]) == (
        0.2,
        0.4,
        0.01,
    )
    with pytest.raises(ValueError):
        broker_per_command(before, after, "b1", 0)


def test_cost_per_command_totals_every_process_and_bounds_the_rate_by_the_cores():
    cpu_s = {
        "client": 0.09,
        "processor": 0.08,
        "projector": 0.25,
        "sink": 0.07,
        "broker": 0.5,
        "postgres": 0.01,
    }
    cost = cost_per_command(cpu_s, 1000, measured_cmds_per_s=1500.0, cores=2)
    assert cost["cpu_us"]["broker"] == pytest.approx(500.0)
    assert cost["total_cpu_us"] == pytest.approx(1000.0)
    assert cost["bound_cmds_per_s"] == pytest.approx(2000.0)  # 2 cores / 1 ms per command
    assert cost["measured_cmds_per_s"] == 1500.0


def test_a_process_left_unmeasured_leaves_the_total_and_the_bound_unknown():
    cost = cost_per_command({"processor": 0.1, "broker": None}, 100, ("processor", "broker"))
    assert cost["cpu_us"] == {"processor": pytest.approx(1000.0), "broker": None}
    assert cost["total_cpu_us"] is None
    assert cost["bound_cmds_per_s"] is None
    assert total_us({}) is None
    assert bound_cmds_per_s(0.0, 2) is None


def test_economy_table_has_a_row_per_phase_and_the_total_column():
    cost = cost_per_command({"processor": 0.1, "broker": 0.2, "postgres": 0.0}, 1000, None)
    full = cost_per_command({name: 0.1 for name in PROCESSES}, 1000)
    table = economy_table([("drain: processor alone", cost), ("full load", full)])
    headers = [column.header for column in table.columns]
    assert headers == ["run", *PROCESSES, "total", "cores / total, cmd/s", "measured, cmd/s"]
    assert table.row_count == 2
    peer = cost_per_command({"projector": 0.1, "writer": 0.2}, 1000, ("projector", "writer"))
    headers = [column.header for column in economy_table([("peer", peer)]).columns]
    assert headers[1:3] == ["writer", "projector"]  # others' first, then ours in their order


def _state(tmp_path: Path, jmx_port: int | None) -> StackState:
    return StackState(
        state_dir=str(tmp_path),
        started_by="test",
        kafka_version="4.1.1",
        kafka_port=1234,
        kafka_controller_port=1235,
        kafka_cluster_id="x",
        kafka_dir=str(tmp_path / "kafka"),
        kafka_log="",
        postgres_port=1236,
        postgres_dir="",
        postgres_data_dir="",
        postgres_socket_dir="",
        postgres_log="",
        kafka_pid=11,
        postgres_pid=12,
        kafka_jmx_port=jmx_port,
    )


def test_the_meter_is_the_local_stack_s_only_when_it_serves_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CQRS_STATE_DIR", str(tmp_path))
    assert StackMeter.for_target("127.0.0.1:1234") is None  # no stack recorded
    write_state(_state(tmp_path, 1237))
    meter = StackMeter.for_target("127.0.0.1:1234")
    assert meter == StackMeter(11, 12, "service:jmx:rmi:///jndi/rmi://127.0.0.1:1237/jmxrmi")
    assert StackMeter.for_target("127.0.0.1:9999") is None  # another broker: not readable
    write_state(_state(tmp_path, None))
    meter = StackMeter.for_target("127.0.0.1:1234")
    assert meter is not None and meter.jmx_url is None
    assert "no JMX" in (meter.reading().error or "")


def test_costs_per_phase_sum_the_processes_that_ran_in_it():
    out: dict = {
        "drain": {
            "write_cmds_per_s": 1000.0,
            "read_cmds_per_s": 500.0,
            "cpu_s": {"client": 0.5, "processor": 0.1, "projector": 0.2, "sink": 0.1},
            "phases": {
                "write": {"cpu_s": {"broker": 0.3, "postgres": 0.0}},
                "read": {"cpu_s": {"broker": 0.2, "postgres": 0.1}},
            },
        },
        "full": {
            "e2e_cmds_per_s": 400.0,
            "cpu_s": dict.fromkeys(PROCESSES, 0.1),
        },
    }
    _add_costs(out, 1000)
    write = out["drain"]["phases"]["write"]["cost"]
    assert set(write["cpu_us"]) == {"processor", "broker", "postgres"}  # the preload's client not
    assert write["total_cpu_us"] == pytest.approx(400.0)
    read = out["drain"]["phases"]["read"]["cost"]
    assert read["total_cpu_us"] == pytest.approx(600.0)
    assert read["measured_cmds_per_s"] == 500.0
    assert out["full"]["cost"]["total_cpu_us"] == pytest.approx(600.0)
    costs, brokers = economy_rows(out)
    assert [label for label, _ in costs] == [
        "drain: processor alone",
        "drain: projector + sink",
        "full load: end to end",
    ]
    assert brokers == []


def test_split_costs_each_read_worker_alone_with_the_stack_of_its_own_phase():
    out: dict = {
        "split": {
            "write_cmds_per_s": 1000.0,
            "projector_cmds_per_s": 250.0,
            "sink_cmds_per_s": 800.0,
            "cpu_s": {"client": 0.5, "processor": 0.1, "projector": 0.3, "sink": 0.05},
            "phases": {
                "write": {"cpu_s": {"broker": 0.3, "postgres": 0.0}},
                "projector": {"cpu_s": {"broker": 0.2, "postgres": 0.0}},
                "sink": {"cpu_s": {"broker": 0.01, "postgres": 0.04}},
            },
        },
    }
    _add_costs(out, 1000)
    phases = out["split"]["phases"]
    projector = phases["projector"]["cost"]
    assert set(projector["cpu_us"]) == {"projector", "broker", "postgres"}  # not the sink's
    assert projector["cpu_us"]["projector"] == pytest.approx(300.0)
    assert projector["total_cpu_us"] == pytest.approx(500.0)
    assert projector["measured_cmds_per_s"] == 250.0
    sink = phases["sink"]["cost"]
    assert set(sink["cpu_us"]) == {"sink", "broker", "postgres"}
    assert sink["total_cpu_us"] == pytest.approx(100.0)
    assert sink["measured_cmds_per_s"] == 800.0
    costs, _ = economy_rows(out)
    assert [label for label, _ in costs] == [
        "split: processor alone",
        "split: projector alone",
        "split: sink alone",
    ]
