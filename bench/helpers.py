#!/usr/bin/env python3
"""Helpers for bench/run.sh: the parts that are clumsy in shell. Standard library only.

  users BASE_URL PREFIX N TOKENS_OUT   sign up and sign in N users, one token a line
  pats BASE_URL TOKENS_IN OUT SCOPES   make a personal access token (SCOPES comma-separated)
                                       for each access token of TOKENS_IN, one a line
  startup TIMES URL BIN                start BIN (environment as given) TIMES times,
                                       report ms from spawn to the first 200 of /readyz
  sqlite-count DB                      print "TASKS USED_SUM" of a SQLite database
  pg-count URL PREFIX                  the same for PREFIX's users in PostgreSQL (psql)
  signin-body NAME                     print the JSON body that signs NAME in
  pgbench-script URL PREFIX N OUT [SHAPE]
                                       write a pgbench script doing create_task's SQL
                                       (SHAPE: statement, the default, or transaction)
"""

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

PASSWORD = "bench-password-1234"


def post_json(base, path, body, token=None):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def make_user(base, name):
    status, body = post_json(base, "/v1/auth/signup", {"username": name, "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"signup {name}: HTTP {status} {body[:200]!r}")
    status, body = post_json(base, "/v1/auth/signin", {"username": name, "password": PASSWORD})
    if status != 200:
        raise SystemExit(f"signin {name}: HTTP {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


def signin_body(name):
    print(json.dumps({"username": name, "password": PASSWORD}))


def users(base, prefix, n, out):
    names = [f"{prefix}{i}" for i in range(1, int(n) + 1)]
    # Password hashing (argon2id) is bounded to one per core by the server; a few
    # requests in flight keep it busy without queueing much.
    with ThreadPoolExecutor(max_workers=4) as pool:
        tokens = list(pool.map(lambda name: make_user(base, name), names))
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")


def pats(base, tokens_in, out, scopes):
    with open(tokens_in) as f:
        access = [line.strip() for line in f if line.strip()]
    made = []
    for token in access:
        status, body = post_json(base, "/v1/me/tokens", {"name": "bench", "scopes": scopes.split(",")}, token)
        if status != 201:
            raise SystemExit(f"personal token: HTTP {status} {body[:200]!r}")
        made.append(json.loads(body)["token"])
    with open(out, "w") as f:
        f.write("\n".join(made) + "\n")


def ready(host, port):
    """True once GET /readyz answers 200."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def startup(times, url, binary):
    url = urllib.parse.urlsplit(url)
    results = []
    for _ in range(int(times)):
        started = time.perf_counter()
        proc = subprocess.Popen([binary], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = started + 10
        elapsed = None
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode} while starting")
            if ready(url.hostname, url.port):
                elapsed = (time.perf_counter() - started) * 1000
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if elapsed is None:
            raise SystemExit("the server was not ready within 10 s")
        results.append(elapsed)
    print(" ".join(f"{ms:.1f}" for ms in results))


def sqlite_count(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    tasks = conn.execute("select count(*) from tasks").fetchone()[0]
    used = conn.execute("select coalesce(sum(used), 0) from usage").fetchone()[0]
    print(tasks, used)


def psql(url, sql):
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def pg_count(url, prefix):
    like = literal(prefix.replace("_", "\\_") + "%")
    tasks = psql(url, f"select count(*) from tasks t join users u on u.id = t.user_id where u.username like {like}")
    used = psql(url, f"select coalesce(sum(g.used), 0) from usage g join users u on u.id = g.user_id where u.username like {like}")
    print(tasks, used)


def pgbench_script(url, prefix, n, out, shape="statement"):
    """create_task's database work in PostgreSQL's SQL: read the user row, consume one
    unit of quota with a conditional upsert into usage, insert the task.

    shape "statement" is what the PostgreSQL store does (src/store/postgres/tasks.rs,
    `create_task` without an idempotency key): the user row in one statement, then the
    upsert and the insert in one statement with CTEs, each its own implicit transaction.
    shape "transaction" is the SQLite store's sequence in one explicit transaction.
    The expressions follow the column types the store gave the schema."""
    rows = psql(
        url,
        "select table_name || '.' || column_name || '=' || data_type from information_schema.columns "
        "where table_schema = current_schema() and table_name in ('users', 'usage', 'tasks')",
    )
    types = dict(line.split("=", 1) for line in rows.splitlines() if "=" in line)
    if "tasks.id" not in types or "usage.used" not in types:
        raise SystemExit("no users/usage/tasks tables in that database")

    def time_expr(column):
        kind = types.get(column, "")
        if kind.startswith("timestamp"):
            return "now()"
        if kind in ("bigint", "integer"):
            return "(extract(epoch from now()) * 1000000)::bigint"
        return "to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

    # A time-ordered id like the UUIDv7 the application makes (btree inserts at the right edge).
    uuid7 = "(lpad(to_hex((extract(epoch from clock_timestamp()) * 1000)::bigint), 12, '0') || substr(md5(random()::text), 1, 20))::uuid"
    task_id = uuid7 if types["tasks.id"] == "uuid" else uuid7 + "::text"
    day = "(now() at time zone 'UTC')::date"
    if types.get("usage.day") != "date":
        day = f"to_char({day}, 'YYYY-MM-DD')"
    task_day = "(now() at time zone 'UTC')::date" if types.get("tasks.day") == "date" else day
    done = "false" if types.get("tasks.done") == "boolean" else "0"
    uid = ":uid::uuid" if types.get("users.id") == "uuid" else ":uid::text"
    # The whole user row is read, as the store does; what the later statements need is
    # kept in variables, the rest travels as one text value (\gset refuses NULLs).
    users_cols = [c.split(".", 1)[1] for c in types if c.startswith("users.")]
    wanted = ["username", "role", "timezone", "pending_timezone", "timezone_effective_at", "created_at"]
    rest = ", ".join(c for c in wanted if c in users_cols)
    header = f"""-- generated by bench/helpers.py ({shape}): create_task for {n} users {prefix}1..{prefix}{n}
\\set u random(1, {int(n)})
"""
    user_read = f"""SELECT id AS uid, daily_limit AS lim, row({rest})::text AS rest FROM users WHERE username = {literal(prefix)} || :u::int::text
\\gset
"""
    created = time_expr("tasks.created_at")
    if shape == "statement":
        script = header + user_read + f"""WITH quota AS (SELECT daily_limit FROM users WHERE id = {uid}),
  counted AS (INSERT INTO usage AS g (user_id, day, used) SELECT {uid}, {day}, 1 FROM quota WHERE daily_limit > 0
    ON CONFLICT (user_id, day) DO UPDATE SET used = g.used + 1 WHERE g.used < (SELECT daily_limit FROM quota)
    RETURNING g.used),
  created AS (INSERT INTO tasks (id, user_id, content, done, day, created_at, updated_at)
    SELECT {task_id}, {uid}, 'bench task', {done}, {task_day}, {created}, {created} FROM counted)
SELECT quota.daily_limit, counted.used FROM quota LEFT JOIN counted ON true;
"""
        with open(out, "w") as f:
            f.write(script)
        return
    if shape != "transaction":
        raise SystemExit(f"unknown shape {shape!r}: statement or transaction")
    script = f"""-- generated by bench/helpers.py ({shape}): create_task for {n} users {prefix}1..{prefix}{n}
\\set u random(1, {int(n)})
BEGIN;
SELECT id AS uid, daily_limit AS lim, row({rest})::text AS rest FROM users WHERE username = {literal(prefix)} || :u::int::text
\\gset
INSERT INTO usage (user_id, day, used) SELECT {uid}, {day}, 1 WHERE :lim::int > 0
  ON CONFLICT (user_id, day) DO UPDATE SET used = usage.used + 1 WHERE usage.used < :lim::int
  RETURNING used;
INSERT INTO tasks (id, user_id, content, done, day, created_at, updated_at)
  VALUES ({task_id}, {uid}, 'bench task', {done}, {task_day}, {time_expr('tasks.created_at')}, {time_expr('tasks.updated_at')});
COMMIT;
"""
    with open(out, "w") as f:
        f.write(script)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    commands = {
        "users": users,
        "pats": pats,
        "signin-body": signin_body,
        "startup": startup,
        "sqlite-count": sqlite_count,
        "pg-count": pg_count,
        "pgbench-script": pgbench_script,
    }
    if command not in commands:
        raise SystemExit(__doc__)
    commands[command](*args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
