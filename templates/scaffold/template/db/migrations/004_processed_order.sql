-- The order in which a consumer recorded the events it processed: `edaenv verify` checks it
-- against the order the events of each aggregate were sent. Rows of one batch get their
-- numbers in the order the consumer claimed them (service.claim_new keeps the batch's order).
ALTER TABLE processed_events ADD COLUMN IF NOT EXISTS seq bigserial;
