"""The wire contract in code: every header, key and size rule of every topic
(docs/wire-format.md describes the same contract for people).

- `schemas.wire.headers`: CloudEvents attributes and `traceparent` as Kafka headers, built
  and read through `CloudEventHeaders`; `ce_time`; ids.
- `schemas.wire.limits`: id and record size limits, record ids and snapshot keys.
- `schemas.wire.progress`: the progress headers and checkpoint records of projection topics.
- `schemas.wire.dead_letter`: dead-letter records and their `dlq_*` headers.
"""
