#!/usr/bin/env python3
"""WAL frames written per task create, for the schema and for variants of it.

    python3 bench/frames.py [--tasks 700000] [--creates 20000] [--batch 25] [--users 64]

A model of what the SQLite writer's group commits write, run with Python's own sqlite3
(no server, no HTTP): `--tasks` tasks are loaded first, spread over `--users` owners,
then creates are committed `--batch` at a time, each batch from that many distinct
owners (as in bench/run.sh, where each connection is one user). Every page a commit
changes is one WAL frame (4 KiB and a 24-byte header, two `pwrite`s), so frames per
create is what the writer's commits cost in I/O.

"schema" applies the real migrations (src/store/sqlite/migrations/*.sql) and inserts
with the real statement. The variants change only how keys and days are stored:
  blob-keys      user and task ids as 16-byte blobs instead of 36-character text
  blob-keys+day  the same, and the day as an integer (days since 1970) instead of text
  blob-id        only the task id as a blob (users.id stays text, so no foreign key
                 changes)
  appended       rows in creation order (a rowid table), found through an index on
                 (user_id, id); "appended+blob-keys" the same with blob ids
  staged         the schema, with creates going to a small table keyed by id alone and
                 moved into `tasks` in bulk, sorted by owner, every --move-every commits

Prints, per variant, frames per create and per commit, this process's CPU time per
create (SQLite's work, the kernel's writes and Python's own overhead, without syncs),
and which B-trees the frames belong to (from the `dbstat` table when this Python's
SQLite has it).
"""

import argparse
import collections
import datetime
import os
import random
import sqlite3
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent.parent / "src" / "store" / "sqlite" / "migrations"

# The variants' tables: the schema's `usage` and `tasks` with other key and day types.
VARIANT_DDL = """
create table users (id {user} primary key);
create table usage (
    user_id {user} not null references users (id), day {day} not null,
    used integer not null check (used >= 0), primary key (user_id, day)
) strict, without rowid;
{tasks}
create trigger tasks_use_quota after insert on tasks begin
    insert into usage (user_id, day, used) values (new.user_id, new.day, 1)
        on conflict (user_id, day) do update set used = used + 1;
end;
"""

CLUSTERED = """create table tasks (
    user_id {user} not null references users (id), id {task} not null,
    content text not null, done integer not null default 0, day {day} not null,
    created_at integer not null, updated_at integer not null,
    primary key (user_id, id)
) strict, without rowid;"""
# Rows in creation order (each commit appends to the table's last page), found through
# an index on (user_id, id): the index has an append point per user instead.
APPENDED = """create table tasks (
    n integer primary key, user_id {user} not null references users (id), id {task} not null,
    content text not null, done integer not null default 0, day {day} not null,
    created_at integer not null, updated_at integer not null
) strict;
create unique index tasks_by_owner on tasks (user_id, id);"""

VARIANTS = {
    "schema": None,
    "blob-keys": {"user": "blob", "task": "blob", "day": "text"},
    "blob-keys+day": {"user": "blob", "task": "blob", "day": "integer"},
    "blob-id": {"user": "text", "task": "blob", "day": "text"},
    "appended": {"user": "text", "task": "text", "day": "text", "tasks": APPENDED},
    "appended+blob-keys": {"user": "blob", "task": "blob", "day": "text", "tasks": APPENDED},
    "staged": None,
}

# "staged": the schema, with creates going to a table keyed by id alone (ids are
# UUIDv7, so new ones land at its right edge), counted by its own trigger.
STAGED_DDL = """
drop trigger tasks_use_quota;
create table tasks_recent (
    id text primary key, user_id text not null references users (id),
    content text not null, done integer not null default 0, day text not null,
    created_at integer not null, updated_at integer not null
) strict, without rowid;
create trigger tasks_recent_use_quota after insert on tasks_recent begin
    insert into usage (user_id, day, used) values (new.user_id, new.day, 1)
        on conflict (user_id, day) do update set used = used + 1;
end;
"""


def new_id(ms):
    """A UUIDv7 for unix milliseconds `ms`, as the server makes them."""
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0b10 << 62) | random.getrandbits(62))


def open_db(path, variant):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma wal_autocheckpoint=0")
    db.execute("pragma foreign_keys=on")
    types = VARIANTS[variant]
    if types is None:
        for sql in sorted(MIGRATIONS.glob("*.sql")):
            db.executescript(sql.read_text())
    else:
        tasks = types.get("tasks", CLUSTERED).format(**types)
        db.executescript(VARIANT_DDL.format(**{**types, "tasks": tasks}))
    return db, types


def value(kind, u):
    return u.bytes if kind == "blob" else str(u)


def run(variant, tasks, creates, batch, users, move_every):
    with tempfile.TemporaryDirectory(prefix="quotask-frames-") as tmp:
        path = os.path.join(tmp, "db")
        db, types = open_db(path, variant)
        user_kind = types["user"] if types else "text"
        task_kind = types["task"] if types else "text"
        day = 20_420 if types and types["day"] == "integer" else "2025-11-28"
        owners = [uuid.uuid4() for _ in range(users)]
        if types is None:
            for i, u in enumerate(owners):
                db.execute(
                    "insert into users (id, username, password_hash, role, daily_limit, timezone, created_at)"
                    " values (?, ?, 'x', 'user', 1000000, 'UTC', 0)",
                    (str(u), f"u{i}"),
                )
        else:
            db.executemany("insert into users (id) values (?)", [(value(user_kind, u),) for u in owners])
        insert = (
            "insert into tasks (id, user_id, content, done, day, created_at, updated_at)"
            " values (?, ?, ?, 0, ?, ?, ?)"
        )
        ms = int(time.time() * 1000) - tasks - creates

        def one(owner):
            nonlocal ms
            ms += 1
            db.execute(insert, (value(task_kind, new_id(ms)), value(user_kind, owner), "bench task", day, ms, ms))

        db.execute("begin")
        for i in range(tasks):
            one(owners[i % users])
        db.execute("commit")
        db.execute("pragma wal_checkpoint(truncate)")

        if variant == "staged":
            # New tasks go to a small table in id order (its right edge) instead, and
            # move into `tasks` in bulk, sorted by owner, every `move_every` commits.
            db.executescript(STAGED_DDL)
            insert = insert.replace("insert into tasks ", "insert into tasks_recent ")

        # No sync per commit: frames do not depend on it, and the CPU time below is then
        # SQLite's and the kernel's writes (and Python's), not waits for the disk.
        db.execute("pragma synchronous=normal")
        commits = 0
        done = 0
        order = list(range(users))
        cpu = time.process_time()
        while done < creates:
            random.shuffle(order)
            db.execute("begin")
            for j in order[:batch]:
                one(owners[j])
                done += 1
            if variant == "staged" and commits % move_every == move_every - 1:
                db.execute(
                    "insert into tasks (id, user_id, content, done, day, created_at, updated_at)"
                    " select id, user_id, content, done, day, created_at, updated_at from tasks_recent"
                    " order by user_id, id"
                )
                db.execute("delete from tasks_recent")
            db.execute("commit")
            commits += 1

        cpu = time.process_time() - cpu
        pages = wal_pages(path + "-wal")
        owner_of = {}
        try:
            owner_of = {
                pageno: f"{name} {kind}" if kind in ("leaf", "internal") else name
                for name, pageno, kind in db.execute("select name, pageno, pagetype from dbstat")
            }
        except sqlite3.DatabaseError:
            pass
        db.close()
    by_tree = collections.Counter(owner_of.get(p, "?") for p in pages)
    trees = ", ".join(f"{name} {n / commits:.1f}" for name, n in by_tree.most_common())
    print(
        f"{variant:<14} {len(pages) / done:5.2f} frames a create, {len(pages) / commits:5.1f} a commit, "
        f"{cpu / done * 1e6:4.1f} µs of CPU a create ({trees})"
    )


def wal_pages(path):
    """The page number of every frame of the WAL's current generation."""
    data = Path(path).read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    pages, offset = [], 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salt:
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += 24 + page_size
    return pages


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=700_000, help="tasks loaded before measuring")
    parser.add_argument("--creates", type=int, default=20_000, help="creates measured")
    parser.add_argument("--batch", type=int, default=25, help="creates per commit (distinct owners)")
    parser.add_argument("--users", type=int, default=64, help="owners")
    parser.add_argument("--move-every", type=int, default=16, help="commits between moves (staged)")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=", ".join(VARIANTS))
    args = parser.parse_args()
    if args.batch > args.users:
        sys.exit("--batch cannot exceed --users: a batch has distinct owners")
    print(f"sqlite {sqlite3.sqlite_version}, {args.tasks} tasks loaded, {args.creates} creates, "
          f"{args.batch} a commit, {args.users} users; {datetime.date.today()}")
    for variant in args.variants:
        if variant not in VARIANTS:
            sys.exit(f"unknown variant {variant}; known: {', '.join(VARIANTS)}")
        run(variant, args.tasks, args.creates, args.batch, args.users, args.move_every)


if __name__ == "__main__":
    main()
