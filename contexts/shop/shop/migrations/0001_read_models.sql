-- The shop's read models. Columns are named like the fields of the row schemas
-- (shop/schemas/projections/*.avsc): the sink maps field to column by name.

CREATE TABLE orders (
    order_id    text        PRIMARY KEY,
    customer    text        NOT NULL,
    transfer_id text        NOT NULL,
    amount      bigint      NOT NULL,
    lines       integer     NOT NULL,
    status      text        NOT NULL,
    reason      text        NOT NULL,
    version     bigint      NOT NULL,  -- aggregate version of the last event applied
    updated_at  timestamptz NOT NULL
);

CREATE TABLE stock (
    product_id text        PRIMARY KEY,
    available  bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    sold       bigint      NOT NULL,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
