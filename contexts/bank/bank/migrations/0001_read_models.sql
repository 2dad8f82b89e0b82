-- The bank's read models. Columns are named like the fields of the row schemas
-- (bank/schemas/projections/*.avsc): the sink maps field to column by name.

CREATE TABLE accounts (
    account_id text        PRIMARY KEY,
    owner      text        NOT NULL,
    currency   text        NOT NULL,
    balance    bigint      NOT NULL,
    status     text        NOT NULL,
    version    bigint      NOT NULL,  -- aggregate version of the last event applied
    updated_at timestamptz NOT NULL
);

-- One row per currency, day AND partition of bank.events: each row counts the events of one
-- partition only, so its offset watermark (source_offset) is exact. Query the view below.
CREATE TABLE daily_totals_by_partition (
    currency         text    NOT NULL,
    day              date    NOT NULL,
    source_partition integer NOT NULL,
    deposits         bigint  NOT NULL,
    withdrawals      bigint  NOT NULL,
    count            bigint  NOT NULL,
    source_offset    bigint  NOT NULL,
    PRIMARY KEY (currency, day, source_partition)
);

CREATE VIEW daily_totals AS
SELECT currency,
       day,
       sum(deposits)::bigint    AS deposits,
       sum(withdrawals)::bigint AS withdrawals,
       sum(count)::bigint       AS count
FROM daily_totals_by_partition
GROUP BY currency, day;

-- Every event of the context, for audit and temporal queries ("as of T", "at version N").
CREATE TABLE event_log (
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    version          bigint      NOT NULL,
    event_id         text        NOT NULL,
    type             text        NOT NULL,
    time             timestamptz NOT NULL,
    correlation_id   text,
    causation_id     text,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    payload_json     jsonb       NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, version)
);
CREATE INDEX event_log_by_aggregate_id ON event_log (aggregate_id, version);
CREATE INDEX event_log_by_time ON event_log (time);
