-- The transactional outbox: a service inserts its event here in the same transaction as its
-- business change; the relay publishes it afterwards (at least once, in order per aggregate).
CREATE TABLE IF NOT EXISTS outbox (
    id             uuid        PRIMARY KEY,
    -- Insert order, used only to order one aggregate's rows (never as a "rows after N" cursor:
    -- sequence values commit out of order). A service writes one aggregate's events serially
    -- (it updates or locks the aggregate's row first), so per aggregate this is commit order.
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- traceparent, correlation id
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);

-- The relay claims the oldest unpublished rows: a partial index keeps that scan small however
-- many published rows wait for the retention clean-up.
CREATE INDEX IF NOT EXISTS outbox_unpublished
    ON outbox (seq) WHERE published_at IS NULL;
-- Retention: published rows are deleted after a while.
CREATE INDEX IF NOT EXISTS outbox_published_at
    ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relay as soon as a row commits (it also polls, in case a notification is missed).
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotent consumers: insert the event id in the same transaction as the side effect,
-- ON CONFLICT DO NOTHING; a second delivery then finds it and does nothing.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
