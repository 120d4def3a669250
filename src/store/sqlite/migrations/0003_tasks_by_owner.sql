-- Tasks clustered by their owner: the table itself is the (user_id, id) index, which
-- every task query starts from (a task is only ever read, changed or deleted by its
-- owner, and the list walks one owner's tasks newest first). One B-tree fewer to
-- write on every create than a rowid table with a separate owner index.
create table tasks_by_owner (
    user_id text not null references users (id),
    id text not null,
    content text not null,
    done integer not null default 0,
    day text not null,
    created_at integer not null,
    updated_at integer not null,
    primary key (user_id, id)
) strict, without rowid;
insert into tasks_by_owner (user_id, id, content, done, day, created_at, updated_at)
    select user_id, id, content, done, day, created_at, updated_at from tasks;
drop table tasks;
alter table tasks_by_owner rename to tasks;
create index tasks_by_user_day on tasks (user_id, day, id);
