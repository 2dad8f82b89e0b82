-- The sink's position in each projection-topic partition: the offset of the next record to
-- write. Stored in the same transaction as the rows it covers, so a restarted sink resumes
-- right after its last committed batch (the group's offsets in Kafka are only a copy, for
-- lag tools). Delete a topic's rows to make the sink read it again from the beginning.
CREATE TABLE cqrs_sink_offsets (
    topic           text        NOT NULL,
    topic_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, topic_partition)
);
