-- The sample consumer's side effect (consumer/main.py): one row per OrderPlaced event handled.
-- event_id is deliberately not unique: processed_events is the idempotency guard, and a second
-- row for one event would show that the guard failed.
CREATE TABLE IF NOT EXISTS order_confirmations (
    event_id     text        NOT NULL,
    order_id     text        NOT NULL,
    customer_id  text        NOT NULL,
    total        numeric     NOT NULL,  -- money: exact, read and written as Decimal
    confirmed_at timestamptz NOT NULL DEFAULT now()
);
