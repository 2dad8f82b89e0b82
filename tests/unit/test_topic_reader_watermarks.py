"""`watermarks` waits out a partition whose leadership is settling, and nothing else."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.topic_reader import watermarks

TP = TopicPartition("t.events", 0)


class _Answers:
    """Answers get_watermark_offsets with the given errors first, then (0, 7)."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, 7


def test_a_partition_without_a_leader_yet_is_asked_again() -> None:
    answers = _Answers(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert watermarks(answers, TP, timeout_s=5) == (0, 7)  # type: ignore[arg-type]
    assert answers.calls == 3


def test_other_errors_are_raised_at_once() -> None:
    answers = _Answers(KafkaError.UNKNOWN_TOPIC_OR_PART)
    with pytest.raises(KafkaException):
        watermarks(answers, TP, timeout_s=5)  # type: ignore[arg-type]
    assert answers.calls == 1


def test_a_leader_that_never_settles_is_raised_after_the_timeout() -> None:
    answers = _Answers(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaException):
        watermarks(answers, TP, timeout_s=0.3)  # type: ignore[arg-type]
    assert 1 < answers.calls < 10
