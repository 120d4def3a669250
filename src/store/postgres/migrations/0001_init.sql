-- quotask on PostgreSQL, version 1: the same tables as the SQLite schema.
-- Times are unix microseconds (UTC) in bigint, exactly as in SQLite, so both stores
-- read back the instant they were given and share one conversion; days are `date`
-- (the user's local calendar day); ids are UUIDv7, which sort by creation time.
create table users (
    id uuid primary key,
    username text not null,
    password_hash text not null,
    role text not null check (role in ('user', 'admin')),
    daily_limit integer not null check (daily_limit between 0 and 1000000),
    timezone text not null,
    pending_timezone text,
    timezone_effective_at bigint,
    created_at bigint not null,
    -- Named, because the store maps a violation of it onto "username taken".
    constraint users_username_key unique (username)
);

-- One row per user and local day: the quota's counter. The day is part of the key, so
-- nothing ever resets it; its row lock is what serialises concurrent creates.
create table usage (
    user_id uuid not null references users (id),
    day date not null,
    used integer not null check (used >= 0),
    primary key (user_id, day)
);

create table tasks (
    id uuid primary key,
    user_id uuid not null references users (id),
    content text not null,
    done boolean not null default false,
    day date not null,
    created_at bigint not null,
    updated_at bigint not null
);
create index tasks_by_user on tasks (user_id, id);
create index tasks_by_user_day on tasks (user_id, day, id);

-- A session is one refresh-token family; access tokens name it, so revoking it ends both.
create table sessions (
    id uuid primary key,
    user_id uuid not null references users (id),
    created_at bigint not null,
    revoked_at bigint
);

create table refresh_tokens (
    hash bytea primary key,
    session_id uuid not null references sessions (id),
    user_id uuid not null references users (id),
    expires_at bigint not null,
    spent_at bigint
);
create index refresh_tokens_by_session on refresh_tokens (session_id);

create table audit (
    id uuid primary key,
    actor_id uuid,
    target_id uuid not null references users (id),
    field text not null,
    old_value text not null,
    new_value text not null,
    at bigint not null
);
create index audit_by_target on audit (target_id, id);

-- Shared by every instance on this database: the token signing secret lives here.
create table settings (
    key text primary key,
    value bytea not null
);
