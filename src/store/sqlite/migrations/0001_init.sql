-- quotask schema, version 1. Times are unix microseconds (UTC); days are 'YYYY-MM-DD'
-- in the user's zone; ids are UUIDv7 text, so they sort by creation time.
create table users (
    id text primary key,
    username text not null unique,
    password_hash text not null,
    role text not null check (role in ('user', 'admin')),
    daily_limit integer not null check (daily_limit between 0 and 1000000),
    timezone text not null,
    pending_timezone text,
    timezone_effective_at integer,
    created_at integer not null
) strict;

-- One row per user and local day: the quota's counter. The day is part of the key, so
-- nothing ever resets it.
create table usage (
    user_id text not null references users (id),
    day text not null,
    used integer not null check (used >= 0),
    primary key (user_id, day)
) strict, without rowid;

create table tasks (
    id text primary key,
    user_id text not null references users (id),
    content text not null,
    done integer not null default 0,
    day text not null,
    created_at integer not null,
    updated_at integer not null
) strict;
create index tasks_by_user on tasks (user_id, id);
create index tasks_by_user_day on tasks (user_id, day, id);

-- A session is one refresh-token family; access tokens name it, so revoking it ends both.
create table sessions (
    id text primary key,
    user_id text not null references users (id),
    created_at integer not null,
    revoked_at integer
) strict;

create table refresh_tokens (
    hash blob primary key,
    session_id text not null references sessions (id),
    user_id text not null references users (id),
    expires_at integer not null,
    spent_at integer
) strict;
create index refresh_tokens_by_session on refresh_tokens (session_id);

create table audit (
    id text primary key,
    actor_id text,
    target_id text not null references users (id),
    field text not null,
    old_value text not null,
    new_value text not null,
    at integer not null
) strict;
create index audit_by_target on audit (target_id, id);

create table settings (
    key text primary key,
    value blob not null
) strict;
