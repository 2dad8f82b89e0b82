"""`cqrsctl tail <topic>`: print a topic's records decoded through the schema catalog, with
key, partition, offset and headers, and follow new ones.

Reads committed records only (read_committed) unless `--uncommitted` is given. Nothing is
committed to Kafka: the consumer is assigned its partitions and has no group offsets.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import typer
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from cqrsctl.console import TIMEOUT, UNAVAILABLE, OutputFormat, fail, out_console, settings_or_fail
from cqrsctl.record_output import (
    RECORD_COLUMNS,
    print_json_line,
    quiet,
    record_row,
    table,
)
from cqrsctl.record_view import view
from processors.topic_reader import ReadError, partition_count, read_partition, watermarks
from processors.topics import ContextTopics
from schemas.codec import default_codec

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C
# Topic names relative to a context's prefix: `tail events` is `tail bank.events`.
SHORT_NAMES = {
    "commands": "commands",
    "events": "events",
    "results": "command-results",
    "command-results": "command-results",
    "aggregates": "aggregates",
    "dlq": "dlq",
}


def resolve_topic(name: str, prefix: str) -> str:
    """`events`, `results`, `dlq`, `projection.accounts`, ... under `prefix`; any other name
    is a full topic name."""
    topics = ContextTopics(prefix)
    if name in SHORT_NAMES:
        return f"{topics.prefix}.{SHORT_NAMES[name]}"
    if name.startswith("projection."):
        return topics.projection(name.removeprefix("projection."))
    return name


def tail(
    topic: str = typer.Argument(
        ...,
        help="A topic name (bank.events), or one relative to --prefix: commands, events, "
        "results, aggregates, dlq, projection.<name>.",
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the first record of each partition."
    ),
    last: int = typer.Option(
        None, "--last", min=1, help="Start with the last N records of each partition."
    ),
    partition: int = typer.Option(None, "--partition", min=0, help="Read only this partition."),
    key: str = typer.Option(None, "--key", help="Show only records with this key."),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--output", help="table, or json (one object per line)."
    ),
    max_records: int = typer.Option(
        None, "--max", min=1, help="Stop after printing this many records."
    ),
    follow: bool = typer.Option(
        True,
        "--follow/--no-follow",
        help="Keep waiting for new records, or stop at the end of every partition.",
    ),
    timeout: float = typer.Option(
        None,
        "--timeout",
        min=0.1,
        help="Stop after this many seconds without a new record; exit 3 if --max was not reached.",
    ),
    uncommitted: bool = typer.Option(
        False,
        "--uncommitted",
        help="Also show records of open and aborted transactions (read_uncommitted).",
    ),
    context: str = typer.Option("bank", help="Context whose topics short names refer to."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
) -> None:
    """Decode and print a topic's records (key, partition, offset, headers, value), following
    new ones. Bad bytes show as a decode error with the reason."""
    if from_beginning and last is not None:
        fail("--from-beginning and --last exclude each other")
    name = resolve_topic(topic, prefix or context)
    kafka = quiet(settings_or_fail(postgres=False).kafka.client_config())
    count = _partitions(kafka, name)
    if partition is not None and partition >= count:
        fail(f"topic {name} has partitions 0-{count - 1}; there is no partition {partition}")
    partitions = [partition] if partition is not None else list(range(count))
    wanted = key.encode() if key is not None else None

    def matches(msg: Message) -> bool:
        return wanted is None or msg.key() == wanted

    printer = _Printer(output, max_records)
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"cqrsctl-tail-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted" if uncommitted else "read_committed",
        }
    )
    try:
        starts: dict[int, int] = {}
        backlog: list[Message] = []
        for p in partitions:
            low, high = watermarks(consumer, TopicPartition(name, p))
            if from_beginning:
                starts[p] = low
            elif last is not None:
                found, starts[p] = _last_records(kafka, name, p, last, matches, uncommitted)
                backlog += found
            else:
                starts[p] = high
        consumer.assign([TopicPartition(name, p, starts[p]) for p in partitions])
        isolation = "uncommitted" if uncommitted else "committed"
        typer.echo(
            f"tail {name}: partitions {','.join(map(str, partitions))}, {isolation} records, "
            + ("following; Ctrl-C stops" if follow else "up to the end"),
            err=True,
        )
        if printer.show(backlog):
            return
        _follow(consumer, partitions, matches, printer, follow, timeout)
    except KafkaException as exc:
        fail(f"reading {name}: {exc.args[0]}", code=UNAVAILABLE)
    except ReadError as exc:
        fail(str(exc), code=UNAVAILABLE)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; nothing more can be written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()


def _follow(
    consumer: Consumer,
    partitions: list[int],
    matches: Callable[[Message], bool],
    printer: _Printer,
    follow: bool,
    timeout: float | None,
) -> None:
    at_end: set[int] = set()
    last_record = time.monotonic()
    while True:
        batch: list[Message] = []
        for msg in consumer.consume(500, 0.2):
            err = msg.error()
            if err is None:
                at_end.discard(msg.partition())
                last_record = time.monotonic()
                if matches(msg):
                    batch.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(err)
            else:
                typer.echo(f"warning: {err.str()}", err=True)
        if printer.show(batch):
            return
        if not follow and at_end.issuperset(partitions):
            return
        if timeout is not None and time.monotonic() - last_record >= timeout:
            if printer.max_records is not None:
                fail(
                    f"timed out: {printer.shown} of {printer.max_records} records in "
                    f"{timeout:g}s without a new record",
                    code=TIMEOUT,
                )
            return


def _last_records(
    kafka: dict[str, Any],
    topic: str,
    partition: int,
    n: int,
    matches: Callable[[Message], bool],
    uncommitted: bool,
) -> tuple[list[Message], int]:
    """The last `n` matching records of a partition, and the offset to follow on from.

    Offsets count transaction markers and aborted records too, so the read goes back
    further (4x each time) until it has `n` records or has read the whole partition."""
    probe = Consumer({**kafka, "group.id": f"{topic}.reader"})
    try:
        low, high = watermarks(probe, TopicPartition(topic, partition))
    finally:
        probe.close()
    span = n
    while True:
        found: list[Message] = []
        resume = high
        for msg in read_partition(kafka, topic, partition, tail=span, uncommitted=uncommitted):
            resume = max(resume, msg.offset() + 1)
            if matches(msg):
                found.append(msg)
        if len(found) >= n or span >= high - low:
            return found[-n:], resume
        span *= 4


def _partitions(kafka: dict[str, Any], topic: str) -> int:
    try:
        return partition_count(kafka, topic)
    except ReadError as exc:
        fail(
            f"{exc} (does the topic exist? `cqrsctl topics create` makes a context's)",
            code=UNAVAILABLE,
        )
    except KafkaException as exc:
        fail(
            f"cannot read the topics of the broker at {kafka['bootstrap.servers']}: "
            f"{exc.args[0]}; is it running (`cqrsctl status`)?",
            code=UNAVAILABLE,
        )


class _Printer:
    """Prints records as they come, up to `max_records`; a table per batch in table mode."""

    def __init__(self, output: OutputFormat, max_records: int | None) -> None:
        self.output = output
        self.max_records = max_records
        self.shown = 0
        self._console = out_console() if output is OutputFormat.table else None
        self._codec = default_codec()

    def show(self, messages: list[Message]) -> bool:
        """Print `messages` (cut at --max); True once --max records are printed."""
        if self.max_records is not None:
            messages = messages[: self.max_records - self.shown]
        if messages:
            records = [view(msg, self._codec) for msg in messages]
            if self._console is None:
                for record in records:
                    print_json_line(record.to_json())
            else:
                out = table(RECORD_COLUMNS, (record_row(r) for r in records))
                out.show_header = self.shown == 0
                self._console.print(out)
            self.shown += len(messages)
        return self.max_records is not None and self.shown >= self.max_records


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
