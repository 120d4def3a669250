-- Idempotency keys of task creations (QUOTA.md item 6): the first answer, kept for 24
-- hours. Only creations that succeeded are kept; the task as first created is kept
-- with them, so a replay answers exactly what the first request got even if the task
-- was changed or deleted since.
create table idempotency_keys (
    user_id uuid not null references users (id),
    key text not null,
    fingerprint bytea not null,
    task_id uuid not null,
    content text not null,
    day date not null,
    created_at bigint not null,
    primary key (user_id, key)
);
