"""Reading one consumed batch of projection records: the check that no offset was jumped
over, and the decoding of each record into its checkpoint and, for only the newest record
per key and partition, its row. Undecodable records are counted, logged and skipped."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping, Sequence

from confluent_kafka import Message

from processors.projections import Projection
from schemas.codec import Codec, CodecError
from schemas.wire import headers as ce
from schemas.wire.progress import BadProgressHeaders, header_map, is_checkpoint, read_progress
from sinks.batch import Position, SinkRecord, skipped_offsets
from sinks.metrics import SinkMetrics

log = logging.getLogger("sinks.app")  # the sink worker's logger, whichever module logs


class RecordReader:
    """Decodes the records of the projection topics in `by_topic`; `last_seen` holds the
    highest offset seen per assigned partition (the sink sets it from its stored
    positions on assignment)."""

    def __init__(
        self, by_topic: Mapping[str, Projection], codec: Codec, metrics: SinkMetrics
    ) -> None:
        self.by_topic = by_topic
        self.codec = codec
        self.metrics = metrics
        self.last_seen: dict[Position, int] = {}  # for the skipped-offsets check

    def check_contiguous(self, messages: Sequence[Message]) -> None:
        """Projection records are produced without transactions, so within one partition
        every offset holds a record; one this process jumps over was either compacted away
        or lost upstream of the sink. Counted and logged, so such a loss is visible."""
        positions = ((m.topic(), m.partition(), m.offset()) for m in messages)
        for topic, partition, first, last in skipped_offsets(self.last_seen, positions):
            count = last - first + 1
            self.metrics.skipped_offsets.labels(self.by_topic[topic].name).inc(count)
            log.warning(
                "%s[%d]: offsets %d..%d skipped (%d records never seen by this sink)",
                topic,
                partition,
                first,
                last,
                count,
                extra={"partition": partition},
            )

    def records(self, messages: Sequence[Message]) -> tuple[list[SinkRecord], dt.datetime | None]:
        """Every record's checkpoint, and the row of only the newest record per key and
        partition, decoded: decoding is most of a record's cost, and an older row of the
        same key loses anyway. The newest is the one with the highest `ce_sourceoffset`
        (ties: the later record), because a row published for the event at source offset X
        holds every change of its key up to X; `reduce_batch` and the guarded upsert still
        compare the rows themselves. Also the oldest `ce_time` among the rows."""
        out: list[SinkRecord] = []
        newest: dict[tuple[str, int, bytes], tuple[int, Message, SinkRecord]] = {}
        counts: dict[str, int] = {}
        oldest_time: str | None = None
        for m in messages:
            projection = self.by_topic[m.topic()]
            counts[projection.name] = counts.get(projection.name, 0) + 1
            headers = header_map(m.headers())
            try:
                partition, checkpoint, cause = read_progress(headers)
            except BadProgressHeaders as exc:
                self._skip(m, exc)
                continue
            if m.value() is None or is_checkpoint(headers):  # None: earlier versions' markers
                out.append(SinkRecord(projection, partition, checkpoint, None))
                continue
            time_text = headers.get(ce.TIME)
            if time_text is not None and (oldest_time is None or time_text < oldest_time):
                oldest_time = time_text  # RFC 3339 in UTC, as the projector writes it
            progress = SinkRecord(projection, partition, checkpoint, None)
            if cause is None:  # not the projector's: decode it anyway
                if (record := self._decode(m, progress)) is not None:
                    out.append(record)
                continue
            slot = (m.topic(), m.partition(), m.key() or b"")
            held = newest.get(slot)
            if held is not None and held[0] > cause:
                out.append(progress)
                continue
            if held is not None:  # the older row's checkpoint still counts
                out.append(held[2])
            newest[slot] = (cause, m, progress)
        for _, m, progress in newest.values():
            if (record := self._decode(m, progress)) is not None:
                out.append(record)
        for name, n in counts.items():
            self.metrics.records.labels(name).inc(n)
        oldest = None
        if oldest_time is not None:
            with contextlib.suppress(ce.HeaderError):
                oldest = ce.parse_time(oldest_time)
        return out, oldest

    def _decode(self, message: Message, progress: SinkRecord) -> SinkRecord | None:
        """`progress` (a record's checkpoint) with the record's row decoded, or None."""
        partition = progress.source_partition
        try:
            row = self.codec.decode(message.value(), progress.projection.row_schema)
        except CodecError as exc:
            self._skip(message, exc)
            return None
        if partition != message.partition():
            log.error(
                "record %s[%d]@%d names source partition %d; projection topics must have "
                "the partition count of the events topic",
                message.topic(),
                message.partition(),
                message.offset(),
                partition,
                extra={"partition": message.partition()},
            )
        return SinkRecord(progress.projection, partition, progress.checkpoint, row)

    def _skip(self, message: Message, exc: Exception) -> None:
        # Nothing the projector writes looks like this; a stray producer does. Skip it: the
        # rows come from the events, which the projector can always publish again.
        self.metrics.undecodable.inc()
        log.error(
            "skipping undecodable record %s[%d]@%d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            exc,
            extra={"partition": message.partition()},
        )
