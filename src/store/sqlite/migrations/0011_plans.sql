-- Plans, boosts and limits that adapt (docs/quota.md item 10).
--
-- A user's limit in force for a local day is their own limit if they have one, else
-- their plan's (or, on an adaptive plan, the limit it adapted to for them), else the
-- default they were given at sign-up; plus the boosts covering that day.
-- `users.daily_limit` keeps its meaning of "the user's limit": with `limit_is_own` it is
-- a limit an administrator set, without it the default at sign-up, which a plan
-- overrides.
create table plans (
    name text primary key,
    daily_limit integer not null check (daily_limit between 0 and 1000000),
    -- The adaptive rule, all five or none (see domain::limits::Adapt).
    adapt_step integer,
    adapt_after_days_at_limit integer,
    adapt_max integer,
    adapt_after_idle_days integer,
    adapt_min integer,
    created_at integer not null
) strict;

alter table users add column limit_is_own integer not null default 1;
alter table users add column plan text references plans (name);
-- The adaptive plan's result for this user: `adapted_limit` from local day
-- `adapted_from` on, `adapted_before` (null: the plan's) on earlier days, so that a
-- change never reaches a day already under way. `adapt_checked` is the local day on
-- which the rule last looked at the user (once per local day).
alter table users add column adapted_limit integer;
alter table users add column adapted_from text;
alter table users add column adapted_before integer;
alter table users add column adapt_checked text;

-- Users whose limit no administrator ever set had the default at sign-up: theirs is
-- the default, which a plan overrides. Every other limit stays the user's own. Nobody's
-- limit changes with this migration.
update users set limit_is_own = 0
    where not exists (select 1 from audit a where a.target_id = users.id and a.field = 'daily_limit');

create table boosts (
    id text primary key,
    user_id text not null references users (id),
    extra integer not null check (extra between 1 and 1000000),
    from_day text not null,
    to_day text not null,
    reason text not null,
    actor_id text,
    created_at integer not null
) strict;
create index boosts_by_user on boosts (user_id, from_day);

-- Changes to plans themselves, as `audit` keeps those to users.
create table plan_audit (
    id text primary key,
    actor_id text,
    plan text not null references plans (name),
    field text not null,
    old_value text not null,
    new_value text not null,
    at integer not null
) strict;
create index plan_audit_by_plan on plan_audit (plan, id);
