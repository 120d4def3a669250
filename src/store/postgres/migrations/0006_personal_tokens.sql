-- Personal access tokens (docs/api.md, "Personal access tokens"): the same table as the
-- SQLite store's migration 0009. Only the SHA-256 of a token is kept; a request finds
-- its token through the unique index on it, in the one round trip an access token's
-- session lookup costs. Deleting a token deletes its row, so from that commit on no
-- instance finds it.
create table personal_tokens (
    id uuid primary key,
    user_id uuid not null references users (id),
    hash bytea not null,
    name text not null,
    -- Space-separated scope names, e.g. 'tasks:read tasks:write'.
    scopes text not null,
    created_at bigint not null,
    expires_at bigint,
    last_used_at bigint,
    constraint personal_tokens_hash_key unique (hash)
);
-- A user's tokens, listed and counted (at most 50 each) and deleted together.
create index personal_tokens_by_user on personal_tokens (user_id, id);
