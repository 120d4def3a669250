-- How many units the last conditional upsert of a (user, day) row took: a group of
-- creates reads it back with `returning`, which shows only the new row.
alter table usage add column taken integer not null default 0;
