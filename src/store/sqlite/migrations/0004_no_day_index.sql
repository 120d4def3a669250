-- A day's tasks are found through the primary key instead: ids are UUIDv7, so the tasks
-- of a local day lie in a known id range (see `day_bounds`), and the index on
-- (user_id, day, id) was one more B-tree page to write on every create.
drop index tasks_by_user_day;
