"""The broker's own counters, read over JMX with Kafka's `org.apache.kafka.tools.JmxTool`:
requests served per request type, and records appended per topic.

    before = read_counters(jmx_url)
    ...                                    # the measured phase
    per_command = broker_per_command(before, read_counters(jmx_url), prefix, commands)

Every figure is a cumulative `Count` attribute (Yammer meters: RequestsPerSec and
MessagesInPerSec count since the broker started), so the difference of two readings is
what the broker did in between, whoever asked. The local stack serves JMX on 127.0.0.1 only
(deploy/local/kafka.py); JmxTool runs from the tools' jars (deploy/local/kafka_jars.py).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deploy.local import binaries, kafka_jars

# Every request type and version the broker has served (one meter per type and version).
REQUESTS_BEANS = "kafka.network:type=RequestMetrics,name=RequestsPerSec,*"
MESSAGES_IN_BEAN = "kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=*"
MESSAGES_IN_ALL = "kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec"
JMXTOOL = "org.apache.kafka.tools.JmxTool"
TIMEOUT_S = 60.0

_REQUEST = re.compile(r"^kafka\.network:type=RequestMetrics,name=RequestsPerSec,request=(\w+)")
_TOPIC = re.compile(r"^kafka\.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=(.+)$")


class BrokerMetricsError(RuntimeError):
    """JmxTool failed or printed something that is not its report."""


@dataclass(frozen=True)
class BrokerCounters:
    """One reading: requests per request type, records appended per topic and in all."""

    requests: dict[str, float] = field(default_factory=dict)
    records_in: dict[str, float] = field(default_factory=dict)
    records_in_total: float = 0.0


def parse_jmxtool_csv(text: str) -> dict[str, float]:
    """JmxTool's `--report-format csv --one-time true` output: one `<name>,"<value>"` line
    per attribute (`<name>` is `<object name>:<attribute>` and holds commas itself), the
    first one `time,"<ms>"`. Returns the numeric values by name, the time left out. Lines
    that are not of that shape (JmxTool's own chatter) are skipped."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().rpartition(',"')
        if not sep or not value.endswith('"') or name == "time":
            continue
        try:
            found[name] = float(value[:-1])
        except ValueError:
            continue  # an attribute that is not a number
    if not found and 'time,"' not in text:
        raise BrokerMetricsError(f"no report in JmxTool's output: {text.strip()[:200]!r}")
    return found


def counters_from(values: Mapping[str, float]) -> BrokerCounters:
    """Sort a JmxTool reading into requests per type and records per topic."""
    requests: dict[str, float] = {}
    records: dict[str, float] = {}
    total = 0.0
    for key, value in values.items():
        bean, _, attribute = key.rpartition(":")
        if attribute != "Count":
            continue
        if match := _REQUEST.match(bean):  # summed over the request's versions
            requests[match.group(1)] = requests.get(match.group(1), 0.0) + value
        elif match := _TOPIC.match(bean):
            records[match.group(1)] = value
        elif bean == MESSAGES_IN_ALL:
            total = value
    return BrokerCounters(requests, records, total)


def jmxtool_command(jmx_url: str, object_names: Sequence[str]) -> list[str]:
    cmd = [
        str(binaries.java()),
        "-Xmx128m",
        "-XX:TieredStopAtLevel=1",  # a one-shot reader: start fast, no optimising compiler
        "-cp",
        f"{kafka_jars.tools_jars_dir()}/*",
        JMXTOOL,
        "--jmx-url",
        jmx_url,
        "--one-time",
        "true",
        "--report-format",
        "csv",
        "--attributes",
        "Count",
    ]
    for name in object_names:
        cmd += ["--object-name", name]
    return cmd


def read_counters(jmx_url: str, timeout: float = TIMEOUT_S) -> BrokerCounters:
    """One reading of every counter this module knows, in one JmxTool run."""
    names = [REQUESTS_BEANS, MESSAGES_IN_BEAN, MESSAGES_IN_ALL]
    try:
        done = subprocess.run(
            jmxtool_command(jmx_url, names),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BrokerMetricsError(f"JmxTool did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BrokerMetricsError(f"JmxTool failed (exit {done.returncode}): {last[0]}")
    return counters_from(parse_jmxtool_csv(done.stdout))


def broker_per_command(
    before: BrokerCounters, after: BrokerCounters, prefix: str, commands: int
) -> dict[str, object]:
    """Per command over the phase between two readings: requests per type (only the types
    that moved), records produced to each of the run's topics (`<prefix>.<name>` shown as
    `<name>`) and to the broker's internal topics, and the totals."""
    if commands <= 0:
        raise ValueError("per command needs a positive number of commands")

    def moved(old: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
        return {k: (v - old.get(k, 0.0)) / commands for k, v in new.items() if v > old.get(k, 0.0)}

    records: dict[str, float] = {}
    for topic, per in moved(before.records_in, after.records_in).items():
        if topic.startswith(f"{prefix}."):
            records[topic[len(prefix) + 1 :]] = per
        elif topic.startswith("__"):
            records[topic] = per
    requests = moved(before.requests, after.requests)
    return {
        "requests": requests,
        "records_in": records,
        "records_in_total": (after.records_in_total - before.records_in_total) / commands,
        "produce_requests": requests.get("Produce", 0.0),
        "fetch_requests": requests.get("Fetch", 0.0),
        "transactions": requests.get("EndTxn", 0.0),
    }
