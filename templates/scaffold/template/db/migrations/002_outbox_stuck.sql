-- Outbox rows the relay cannot publish: no contract for their event type, a payload that breaks
-- its contract, headers that are not a JSON object, or larger than the broker accepts. The
-- relay records each here; `edaenv status`, its metric edaenv_outbox_stuck_rows and
-- `edaenv bundle` show them. A stuck row holds back the later rows of its aggregate (their
-- order is kept); other aggregates flow. Correct the row (or the contract, then restart the
-- relay): the relay checks stuck rows again every few seconds and publishes what now passes.
-- The relay creates this table itself in databases made before this migration.
CREATE TABLE IF NOT EXISTS outbox_stuck (
    id      uuid        PRIMARY KEY,  -- the outbox row's id
    reason  text        NOT NULL,     -- no-contract | invalid-payload | too-large | bad-headers
    detail  text        NOT NULL,     -- what is wrong
    hint    text        NOT NULL,     -- how to fix it
    pointer text,                     -- invalid-payload: JSON pointer into the payload
    rule    text,                     -- invalid-payload: the contract's keyword broken
    since   timestamptz NOT NULL DEFAULT now()
);
