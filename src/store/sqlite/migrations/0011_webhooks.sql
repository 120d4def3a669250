-- Webhooks (docs/api.md, "Webhooks") and their outbox. An event is written to
-- `webhook_events` in the same transaction as the change it reports, one row per
-- webhook that asked for it; the delivery worker claims due rows with a lease
-- (`locked_until`), records every attempt in `webhook_attempts`, and sets
-- `next_attempt_at` to null once the event is delivered or given up.
create table webhooks (
    id text primary key,
    user_id text not null references users (id),
    url text not null,
    -- The event names with a space on each side, e.g. ' task.created task.deleted '.
    events text not null,
    -- `whsec_` and base64: the signing key must be kept as it is to sign with it.
    secret text not null,
    created_at integer not null,
    disabled integer not null default 0
) strict;
-- A user's webhooks: listed, counted (at most 10), and looked up by a create.
create index webhooks_by_user on webhooks (user_id, id);

-- No foreign key to `webhooks`: a create writing an event must never fail because
-- the webhook is being deleted at that moment. The claim joins `webhooks`, so an
-- event of a deleted webhook is never sent, and the prune removes it with its age.
create table webhook_events (
    id text primary key,
    webhook_id text not null,
    type text not null,
    occurred_at integer not null,
    -- The event's `data`, JSON.
    data text not null,
    attempts integer not null default 0,
    -- When the next attempt is due; null once delivered or given up.
    next_attempt_at integer,
    -- Until then, the instance that claimed it is delivering it.
    locked_until integer,
    last_status integer,
    last_error text,
    delivered_at integer
) strict;
-- Due events, oldest first: only those still to deliver are in it.
create index webhook_events_due on webhook_events (next_attempt_at) where next_attempt_at is not null;
-- A webhook's delivery log, newest first.
create index webhook_events_by_webhook on webhook_events (webhook_id, id);
-- The prune, by age.
create index webhook_events_by_age on webhook_events (occurred_at);

create table webhook_attempts (
    event_id text not null,
    attempt integer not null,
    at integer not null,
    status integer,
    error text,
    primary key (event_id, attempt)
) strict;
