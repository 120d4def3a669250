-- A batch's first answer, kept with its idempotency key so that a repeat gets the same
-- tasks (ids and contents, as JSON); null for a single create's key.
alter table idempotency_keys add column batch text;
