-- Every task created uses one unit of its owner's quota for its day. The database keeps
-- that true itself: creating a task and counting it are then one statement, which
-- SQLite applies whole or not at all, so the create needs no savepoint of its own.
-- The quota decision (used < daily_limit) is made just before, in the same write
-- transaction of the one writer (see `tasks::create`).
create trigger tasks_use_quota after insert on tasks
begin
    insert into usage (user_id, day, used) values (new.user_id, new.day, 1)
        on conflict (user_id, day) do update set used = used + 1;
end;
