-- Personal access tokens (docs/api.md, "Personal access tokens"). Only the SHA-256 of a
-- token is kept; a request finds its token through the unique index on it, in the same
-- one lookup an access token's session costs. Deleting a token deletes its row, so a
-- token that is gone is simply not found.
create table personal_tokens (
    id text primary key,
    user_id text not null references users (id),
    hash blob not null unique,
    name text not null,
    -- Space-separated scope names, e.g. 'tasks:read tasks:write'.
    scopes text not null,
    created_at integer not null,
    expires_at integer,
    last_used_at integer
) strict;
-- A user's tokens, listed and counted (at most 50 each) and deleted together.
create index personal_tokens_by_user on personal_tokens (user_id, id);
