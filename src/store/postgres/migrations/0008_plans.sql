-- Plans, boosts and limits that adapt (docs/quota.md item 10); the same as SQLite's
-- 0011_plans.sql, which explains each column.
create table plans (
    name text primary key,
    daily_limit integer not null check (daily_limit between 0 and 1000000),
    adapt_step integer,
    adapt_after_days_at_limit integer,
    adapt_max integer,
    adapt_after_idle_days integer,
    adapt_min integer,
    created_at bigint not null
);

alter table users add column limit_is_own boolean not null default true;
alter table users add column plan text references plans (name);
alter table users add column adapted_limit integer;
alter table users add column adapted_from date;
alter table users add column adapted_before integer;
alter table users add column adapt_checked date;

update users set limit_is_own = false
    where not exists (select 1 from audit a where a.target_id = users.id and a.field = 'daily_limit');

create table boosts (
    id uuid primary key,
    user_id uuid not null references users (id),
    extra integer not null check (extra between 1 and 1000000),
    from_day date not null,
    to_day date not null,
    reason text not null,
    actor_id uuid,
    created_at bigint not null
);
create index boosts_by_user on boosts (user_id, from_day);

create table plan_audit (
    id uuid primary key,
    actor_id uuid,
    plan text not null references plans (name),
    field text not null,
    old_value text not null,
    new_value text not null,
    at bigint not null
);
create index plan_audit_by_plan on plan_audit (plan, id);
