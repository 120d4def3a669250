-- The hourly prune deletes, in batches of 5,000: usage rows of days past retention,
-- idempotency keys past their 24 hours, refresh tokens expired or of a revoked session,
-- and sessions left without a token. Without these indexes each batch, and above all
-- the last one that finds nothing, read a whole table, under the 5 s statement timeout
-- that every store call has. Same indexes as the SQLite store's migration 0006.
--
-- Built in this migration's transaction: on a large existing table the build holds off
-- writes to that table until it is done (creates wait on `usage`'s, sign-ins on the
-- tokens' and sessions').
create index usage_by_day on usage (day);
create index idempotency_keys_by_age on idempotency_keys (created_at);
create index refresh_tokens_by_expiry on refresh_tokens (expires_at);
create index sessions_by_age on sessions (created_at);
-- Only the revoked sessions whose tokens are not yet pruned: a handful at any time.
create index sessions_revoked on sessions (id) where revoked_at is not null;
