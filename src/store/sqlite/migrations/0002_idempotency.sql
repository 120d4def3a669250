-- Idempotency keys of task creations (docs/quota.md item 6): the first answer, kept for 24
-- hours. Only creations that succeeded are kept; the task as first created is kept
-- with them, so a replay answers exactly what the first request got even if the task
-- was changed or deleted since.
create table idempotency_keys (
    user_id text not null references users (id),
    key text not null,
    fingerprint blob not null,
    task_id text not null,
    content text not null,
    day text not null,
    created_at integer not null,
    primary key (user_id, key)
) strict, without rowid;
