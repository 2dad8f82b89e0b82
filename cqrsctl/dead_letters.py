"""Dead letters of `<ctx>.dlq`: read them, filter them, and replay them to `<ctx>.commands`.

A dead letter is the original command record (key, value, headers) plus the processor's
`dlq_*` headers (schemas/wire/dead_letter.py: `dlq_reason`, `dlq_error_type`, `dlq_source_topic`,
`dlq_source_partition`, `dlq_source_offset`, `dlq_time`, and `dlq_truncated` when it had to
be cut down). A replay produces the original key, value and headers again (the `dlq_*` ones
dropped, `cqrs_replay_of` naming the dead letter), so the command keeps its `ce_id`: the
processor answers a command id it has handled already with its first result and emits
nothing, and dead-letters a record that is still invalid again, with its reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message, Producer

from cqrsctl.record_view import text
from processors.partitioning import partition_for
from processors.topic_reader import read_topic
from schemas.wire import dead_letter as dlq
from schemas.wire import headers as ce

REPLAY_OF = "cqrs_replay_of"
"""Header on a replayed command: the dead letter it came from, `<dlq topic>:<p>:<offset>`."""

_DURATION = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: dt.datetime | None
    message: Message = field(repr=False, compare=False)

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        found = None
        for k, v in self.headers:
            if k == name:
                found = text(v)
        return found

    @property
    def reason(self) -> str:
        return self.header(dlq.REASON) or ""

    @property
    def error_type(self) -> str:
        return self.header(dlq.ERROR_TYPE) or ""

    @property
    def time(self) -> dt.datetime | None:
        """When the processor dead-lettered it (`dlq_time`), else the record's timestamp."""
        stamp = self.header(dlq.TIME)
        if stamp:
            try:
                return ce.parse_time(stamp, dlq.TIME)
            except ce.HeaderError:
                pass
        return self.timestamp

    @property
    def truncated(self) -> str | None:
        return self.header(dlq.TRUNCATED)

    def summary(self) -> dict[str, Any]:
        moment = self.time
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": ce.format_time(moment) if moment else None,
            "error_type": self.error_type,
            "reason": self.reason,
            "key": text(self.key),
            "command_type": self.header(ce.TYPE),
            "command_id": self.header(ce.ID),
            "source": {
                "topic": self.header(dlq.SOURCE_TOPIC),
                "partition": _int(self.header(dlq.SOURCE_PARTITION)),
                "offset": _int(self.header(dlq.SOURCE_OFFSET)),
            },
            "truncated": self.truncated,
            "replay_of": self.header(REPLAY_OF),
        }


@dataclass(frozen=True, slots=True)
class Filters:
    """Which dead letters to take: `positions` (partition, offset), a `reason` text found in
    the error type or the reason (any case), and a `since` moment."""

    positions: frozenset[tuple[int, int]] = frozenset()
    reason: str | None = None
    since: dt.datetime | None = None

    def accepts(self, letter: DeadLetter) -> bool:
        if self.positions and (letter.partition, letter.offset) not in self.positions:
            return False
        if self.reason is not None:
            wanted = self.reason.lower()
            if wanted not in letter.error_type.lower() and wanted not in letter.reason.lower():
                return False
        if self.since is not None:
            moment = letter.time
            if moment is None or moment < self.since:
                return False
        return True


def parse_position(text_: str) -> tuple[int, int]:
    """`P:O` (partition and offset of a dead letter) as a pair; ValueError if malformed."""
    partition, sep, offset = text_.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text_!r} is not a dead letter's position PARTITION:OFFSET, e.g. 0:17")
    return int(partition), int(offset)


def parse_since(text_: str, now: dt.datetime | None = None) -> dt.datetime:
    """An RFC 3339 time (`2026-05-01T12:00:00Z`) or a duration ago (`30s`, `15m`, `2h`, `1d`);
    ValueError if neither."""
    match = _DURATION.match(text_.strip())
    if match is not None:
        seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        return ce.parse_time(text_.strip(), "--since")
    except ce.HeaderError:
        raise ValueError(
            f"--since {text_!r}: expected a time like 2026-05-01T12:00:00Z or a duration "
            "like 30s, 15m, 2h, 1d"
        ) from None


def read_dead_letters(kafka: dict[str, Any], topic: str, filters: Filters) -> list[DeadLetter]:
    """The committed dead letters of `topic` that pass `filters`, partition by partition."""
    found = []
    for msg in read_topic(kafka, topic):
        letter = _dead_letter(msg)
        if filters.accepts(letter):
            found.append(letter)
    return found


def _dead_letter(msg: Message) -> DeadLetter:
    kind, stamp = msg.timestamp()
    return DeadLetter(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or ()),
        timestamp=None
        if kind == TIMESTAMP_NOT_AVAILABLE
        else dt.datetime.fromtimestamp(stamp / 1000, dt.UTC),
        message=msg,
    )


# -- replay --------------------------------------------------------------------------------


@dataclass(slots=True)
class Replay:
    """What a replay did with one dead letter. `action`: replayed, would_replay (dry run),
    skipped (cannot be replayed as it is), failed (Kafka did not take it), timed_out."""

    letter: DeadLetter
    action: str
    detail: str = ""
    partition: int | None = None
    offset: int | None = None
    # The headers a replay sends: the original ones and REPLAY_OF.
    headers: list[tuple[str, bytes | None]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "dead_letter": self.letter.position,
            "error_type": self.letter.error_type,
            "key": text(self.letter.key),
            "command_id": self.letter.header(ce.ID),
            "action": self.action,
            "detail": self.detail,
            "commands_partition": self.partition,
            "commands_offset": self.offset,
        }


def replay(
    kafka: dict[str, Any],
    letters: Iterable[DeadLetter],
    commands_topic: str,
    partitions: int,
    dry_run: bool,
    timeout_s: float,
) -> list[Replay]:
    """Produce each dead letter's original record to `commands_topic` (unless `dry_run`), on
    the partition its key belongs to (Kafka's murmur2, as clients produce), and report each
    one's outcome once the broker acknowledged it or `timeout_s` passed."""
    plans = [_plan(letter, partitions) for letter in letters]
    todo = [plan for plan in plans if plan.action == "would_replay"]
    if dry_run or not todo:
        return plans
    producer = Producer(
        {**kafka, "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 30_000}
    )
    for plan in todo:
        plan.action = "timed_out"
        plan.detail = f"no acknowledgement from the broker in {timeout_s:g}s"
        producer.produce(
            commands_topic,
            plan.letter.value,
            plan.letter.key,
            partition=plan.partition,
            headers=plan.headers,
            on_delivery=_outcome(plan),
        )
        producer.poll(0)
    producer.flush(timeout_s)
    # What is still queued must not be sent after we said it timed out.
    producer.purge()
    producer.flush(0)
    return plans


def _plan(letter: DeadLetter, partitions: int) -> Replay:
    if letter.truncated:
        return Replay(
            letter,
            "skipped",
            f"the dead letter was cut down ({letter.truncated}); the whole original is on "
            f"{letter.header(dlq.SOURCE_TOPIC)} partition "
            f"{letter.header(dlq.SOURCE_PARTITION)} offset "
            f"{letter.header(dlq.SOURCE_OFFSET)}",
        )
    partition = _target_partition(letter, partitions)
    headers = [(k, v) for k, v in letter.headers if not k.startswith(dlq.PREFIX) and k != REPLAY_OF]
    headers.append((REPLAY_OF, f"{letter.topic}:{letter.position}".encode()))
    return Replay(letter, "would_replay", partition=partition, headers=headers)


def _target_partition(letter: DeadLetter, partitions: int) -> int:
    """The partition a client would produce the key to; for a record without a UTF-8 key
    (it will be dead-lettered again) the partition it was on."""
    if letter.key is not None:
        try:
            return partition_for(letter.key.decode(), partitions)
        except UnicodeDecodeError:
            pass
    source = _int(letter.header(dlq.SOURCE_PARTITION))
    if source is not None and 0 <= source < partitions:
        return source
    return letter.partition % partitions


def _outcome(plan: Replay) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            plan.action, plan.detail = "replayed", ""
            plan.partition, plan.offset = msg.partition(), msg.offset()
        elif err.code() != KafkaError._PURGE_QUEUE:
            plan.action, plan.detail = "failed", err.str()

    return on_delivery


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
