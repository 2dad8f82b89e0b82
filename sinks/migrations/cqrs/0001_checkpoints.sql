-- The sink's checkpoints: per (projection, source partition), the offset of <ctx>.events up
-- to which every row change is in this schema. Written in the same transaction as the rows.
CREATE TABLE cqrs_checkpoints (
    projection       text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, source_partition)
);
