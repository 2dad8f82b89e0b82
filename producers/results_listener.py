"""The command client's results listener: reads `<ctx>.command-results` from its end and
hands each result the client waits for to it, matched by command id: read from the value's
first bytes (producers/result_reader.py), or from the causation id header when the value is
not the layout it knows. It is
also the one thread that serves the client's producer: delivery reports and the
replacement of a stalled producer."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from producers.command_results import InvalidCommand
from schemas.wire import headers as ce

if TYPE_CHECKING:
    from producers.command_client import CommandClient

log = logging.getLogger("producers.command_client")

STALL_S = 20.0  # no delivery report / no result record for this long: replace the client

# Leadership moving (a new topic, a broker restart): librdkafka does not flag these retriable.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


class ResultListener(threading.Thread):
    """Reads `<ctx>.command-results` from its end at start-up, before any command is sent.

    Around a broker restart its librdkafka consumer can fall silent: no record and no log
    line, while the results are committed (docs/reliability.md). So when commands wait and
    no record has come for `stall_s`, it replaces the consumer with a new one at the
    positions it had reached (the old one is closed on a side
    thread, in case it hangs). A quiet topic with waiters (the processor is down) only costs
    a reconnect per `stall_s`.
    """

    def __init__(
        self, kafka: dict[str, Any], topic: str, client: CommandClient, stall_s: float = STALL_S
    ) -> None:
        super().__init__(name="command-results", daemon=True)
        self._client = client
        self._kafka = kafka
        self._topic = topic
        self.stall_s = stall_s
        self.reconnects = 0
        self._stopping = threading.Event()
        self._consumer = self._new_consumer()
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise InvalidCommand(f"cannot read {topic}: {meta.error}")
        # next offset to read per partition: where a replacement consumer starts
        self._next = {p: self._end_of(topic, p) for p in meta.partitions}
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in self._next.items()])
        self._last_record = time.monotonic()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                **self._kafka,
                "group.id": f"{self._topic}.client-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # One fetch per 50 ms at most while results trickle in, not one per
                # transaction commit of every processor.
                "fetch.wait.max.ms": 50,
                "fetch.min.bytes": 256 * 1024,
                # librdkafka's default ("largest") would jump over every result written
                # between a lost position and the end, e.g. when a broker restart makes its
                # offset look out of range: waiters would time out on results that exist.
                "auto.offset.reset": "earliest",
            }
        )

    def describe(self) -> str:
        """For diagnostics: is it reading, and where."""
        quiet = time.monotonic() - self._last_record
        return (
            f"results listener alive={self.is_alive()}, last record {quiet:.1f}s ago, "
            f"reconnects {self.reconnects}, next offsets {dict(sorted(self._next.items()))}"
        )

    def _end_of(self, topic: str, partition: int, timeout: float = 30.0) -> int:
        # A topic created a moment ago, or a broker that just restarted, answers "not
        # leader" for a while: retry what the broker says is retriable.
        deadline = time.monotonic() + timeout
        while True:
            try:
                tp = TopicPartition(topic, partition)
                return self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            except KafkaException as exc:
                err = exc.args[0]
                if not (
                    isinstance(err, KafkaError) and (err.retriable() or err.code() in _TRANSIENT)
                ):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self) -> None:
        causation = ce.CAUSATION_ID
        client = self._client
        command_id_of = client._results.command_id_of
        deliver = client._deliver
        positions = self._next
        try:
            while not self._stopping.is_set():
                # This thread alone serves the producer's delivery reports: a command Kafka
                # refused fails its waiter now, not at the sender's next send or flush. While
                # commands await a report, it looks for them every few milliseconds.
                self._client._producer.poll(0)
                wait = 0.005 if self._client._awaiting_delivery() else 0.1
                records = 0
                for msg in self._consumer.consume(1000, wait):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("reading command results: %s", err.str())
                        continue
                    records += 1
                    positions[msg.partition()] = msg.offset() + 1
                    value = msg.value()
                    command_id = command_id_of(value)
                    if command_id is None:
                        for k, v in msg.headers() or ():
                            if k == causation and v is not None:
                                command_id = v.decode()
                                break
                        else:
                            continue
                    deliver(command_id, value)
                now = time.monotonic()
                if records:
                    self._last_record = now
                elif now - self._last_record > self.stall_s and self._client._has_waiters():
                    self._reconnect()
                self._client._replace_a_stalled_producer()
        finally:
            self._consumer.close()

    def _reconnect(self) -> None:
        log.warning(
            "no command result for %.0fs while commands wait: new consumer for %s at %s",
            self.stall_s,
            self._topic,
            dict(sorted(self._next.items())),
        )
        stale = self._consumer
        self._consumer = self._new_consumer()
        self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in self._next.items()])
        self.reconnects += 1
        self._last_record = time.monotonic()
        threading.Thread(target=stale.close, name="command-results-close", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)
