-- The UTS #39 confusable skeleton of each username (`domain::input::skeleton`): what
-- the name looks like. Unique, so that of two names a reader could take for each other
-- (`admin` and `admın`, `copeaa` and the Cyrillic `сореаа`) only one can exist; a
-- sign-up whose skeleton is taken is refused as a taken name. Same column and index as
-- the SQLite store's migration 0007.
--
-- SQL cannot compute a skeleton, so the column starts empty and every instance fills it
-- in at start, oldest account first, for the rows that have none (`skeletons.rs`).
-- Accounts that already looked alike before this keep working: the oldest gets the
-- skeleton, the others keep none (NULLs are distinct in a unique index) and are named
-- in a warning at each start, and no new name can take that skeleton either. The index
-- is built over a column of NULLs, so it holds off sign-ups only for a moment.
alter table users add column skeleton text;
create unique index users_skeleton_key on users (skeleton);
