-- Webhooks (docs/api.md, "Webhooks") and their outbox: the same tables as the SQLite
-- store's migration 0010. An event is written to `webhook_events` in the statement
-- (or transaction) of the change it reports, one row per webhook that asked for it;
-- instances claim due rows with `for update skip locked` and a lease (`locked_until`),
-- record every attempt in `webhook_attempts`, and set `next_attempt_at` to null once
-- the event is delivered or given up.
create table webhooks (
    id uuid primary key,
    user_id uuid not null references users (id),
    url text not null,
    -- The event names with a space on each side, e.g. ' task.created task.deleted '.
    events text not null,
    -- `whsec_` and base64: the signing key must be kept as it is to sign with it.
    secret text not null,
    created_at bigint not null,
    disabled boolean not null default false
);
-- A user's webhooks: listed, counted (at most 10), and looked up by every create.
create index webhooks_by_user on webhooks (user_id, id);

-- No foreign key to `webhooks`: a create writing an event must never fail because
-- the webhook is being deleted at that moment. The claim joins `webhooks`, so an
-- event of a deleted webhook is never sent, and the prune removes it with its age.
create table webhook_events (
    id uuid primary key,
    webhook_id uuid not null,
    type text not null,
    occurred_at bigint not null,
    -- The event's `data`, JSON.
    data text not null,
    attempts integer not null default 0,
    -- When the next attempt is due; null once delivered or given up.
    next_attempt_at bigint,
    -- Until then, the instance that claimed it is delivering it.
    locked_until bigint,
    last_status integer,
    last_error text,
    delivered_at bigint
);
create index webhook_events_due on webhook_events (next_attempt_at) where next_attempt_at is not null;
create index webhook_events_by_webhook on webhook_events (webhook_id, id);
-- The prune, by age.
create index webhook_events_by_age on webhook_events (occurred_at);

create table webhook_attempts (
    event_id uuid not null,
    attempt integer not null,
    at bigint not null,
    status integer,
    error text,
    primary key (event_id, attempt)
);
