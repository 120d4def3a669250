#!/usr/bin/env bash
# Database outage under load (docs/reliability.md, "database outage"). Starts quotask on
# PostgreSQL (a schema of its own), keeps creating tasks from 8 clients while recording
# every answer, stops PostgreSQL with `-m immediate`, checks that requests get 503 with
# Retry-After within 2 s and that /readyz is 503, starts PostgreSQL again, checks that
# the service recovers by itself within 5 s, and that every task acknowledged with 201
# is in the database.
#
# PostgreSQL is ALWAYS started again on exit (other tests use it). Loopback only.
# Bounded in time: a watchdog ends the run after 300 s (plus the build). Do not run it
# while the test suite runs: the suite needs the server this script stops.
#
#   QUOTASK_BIN        use this binary instead of building target/debug/quotask
#   PG_OUTAGE_SERVER   PostgreSQL to use (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

server_url=${PG_OUTAGE_SERVER:-postgres://postgres@127.0.0.1:5432/postgres}
version=$(ls /etc/postgresql)
pgctl() { pg_ctlcluster --skip-systemctl-redirect "$version" main "$@"; }
now() { date +%s.%N; }
# Arithmetic on those times, without starting an interpreter (slow on a loaded machine).
seconds_between() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
under() { awk "BEGIN { exit !($1 < $2) }"; }
say() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}

work=$(mktemp -d)
schema="outage_$(date +%s)_$$"
quotask_pid=""
load_pid=""
watchdog_pid=""

cleanup() {
  local status=$?
  [[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null || true
  [[ -n $quotask_pid ]] && kill "$quotask_pid" 2>/dev/null || true
  [[ -n $watchdog_pid ]] && kill "$watchdog_pid" 2>/dev/null || true
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "cleanup: starting PostgreSQL again"
    pgctl start || say "cleanup: PostgreSQL did not start; run: pg_ctlcluster --skip-systemctl-redirect $version main start"
  fi
  psql -q "$server_url" -c "drop schema if exists $schema cascade" >/dev/null 2>&1 || true
  if [[ $status -ne 0 && -f $work/quotask.log ]]; then
    say "quotask log (last 10 lines):"
    tail -n 10 "$work/quotask.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

pg_isready -q -h 127.0.0.1 -p 5432 || fail "PostgreSQL is not running at 127.0.0.1:5432"

if [[ -z ${QUOTASK_BIN:-} ]]; then
  say "building quotask (debug)"
  timeout 1200 cargo build --quiet --bin quotask
  QUOTASK_BIN=target/debug/quotask
fi
(for _ in $(seq 300); do sleep 1; done; say "watchdog: giving up after 300 s"; kill -TERM $$) &
watchdog_pid=$!

# Stopping the server under someone else's tests would fail them: wait until nobody
# else is connected (PG_OUTAGE_FORCE=1 skips this).
others() {
  psql -At "$server_url" -c "select count(*) from pg_stat_activity
    where backend_type = 'client backend' and pid <> pg_backend_pid()"
}
if [[ -z ${PG_OUTAGE_FORCE:-} ]]; then
  for _ in $(seq 120); do
    [[ $(others) == 0 ]] && break
    sleep 1
  done
  [[ $(others) == 0 ]] || fail "other clients stay connected to PostgreSQL; set PG_OUTAGE_FORCE=1 to stop it anyway"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
psql -q "$server_url" -c "create schema $schema"
say "starting $QUOTASK_BIN on $base, schema $schema"
QUOTASK_BIND="127.0.0.1:$port" \
  QUOTASK_DATABASE_URL="$server_url?options[search_path]=$schema" \
  QUOTASK_DATA_DIR="$work/data" \
  QUOTASK_DEFAULT_DAILY_LIMIT=1000000 \
  QUOTASK_LOG_FORMAT=json \
  "$QUOTASK_BIN" >"$work/quotask.log" 2>&1 &
quotask_pid=$!
for _ in $(seq 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "$base/readyz") == 200 ]] && break
  sleep 0.2
done
[[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "$base/readyz") == 200 ]] || fail "quotask did not become ready"

post() { curl -s -m 10 -H 'content-type: application/json' "$@"; }
post -o /dev/null -d '{"username": "outage", "password": "a long outage password"}' "$base/v1/auth/signup"
token=$(post -d '{"username": "outage", "password": "a long outage password"}' "$base/v1/auth/signin" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

# The load: 8 clients creating tasks back to back, one JSON line per answer.
clients=()
for _ in $(seq 8); do clients+=("outage|$base|$token"); done
python3 .ci/create_load.py "$work/answers.jsonl" "$work/stop" "${clients[@]}" &
load_pid=$!
sleep 3
say "load running: $(wc -l <"$work/answers.jsonl") answers so far"

say "stopping PostgreSQL (-m immediate)"
pgctl stop -m immediate
stopped_at=$(now)

# Probes while it is down: a create and /readyz, each timed.
probe() { # path method -> "status seconds retry-after"; a created task's id goes to probe_ids.txt
  local headers="$work/probe.headers"
  local line
  if [[ $2 == POST ]]; then
    line=$(curl -s -o "$work/probe.body" -D "$headers" -w '%{http_code} %{time_total}' -m 10 -X POST \
      -H 'content-type: application/json' -H "authorization: Bearer $token" -d '{"content": "probe"}' "$base$1")
    if [[ $line == 201* ]]; then
      grep -o '"id": *"[^"]*"' "$work/probe.body" | head -n 1 | cut -d'"' -f4 >>"$work/probe_ids.txt"
    fi
  else
    line=$(curl -s -o /dev/null -D "$headers" -w '%{http_code} %{time_total}' -m 10 "$base$1")
  fi
  echo "$line $(grep -i '^retry-after:' "$headers" | tr -d '\r' | awk '{print $2}')"
}
for delay in 0.5 2 4; do
  sleep "$delay"
  read -r code secs retry < <(probe /v1/tasks POST)
  say "outage probe: POST /v1/tasks -> $code in ${secs}s, Retry-After: ${retry:-none}"
  [[ $code == 503 ]] || fail "a create during the outage answered $code, not 503"
  [[ -n ${retry:-} ]] || fail "the 503 has no Retry-After"
  under "$secs" 2.0 || fail "the 503 took ${secs}s (more than 2 s)"
  read -r code secs retry < <(probe /readyz GET)
  say "outage probe: GET /readyz -> $code in ${secs}s"
  [[ $code == 503 ]] || fail "/readyz answered $code during the outage"
  under "$secs" 2.0 || fail "/readyz took ${secs}s (more than 2 s)"
done

say "starting PostgreSQL (crash recovery first: it may take a while to accept connections)"
restart_at=$(now)
pgctl start &
pgctl_pid=$!
for _ in $(seq 1200); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.05
done
pg_isready -q -h 127.0.0.1 -p 5432 || fail "PostgreSQL does not accept connections 60 s after its start"
ready_at=$(now)
say "PostgreSQL accepts connections again ($(seconds_between "$restart_at" "$ready_at")s after the start command)"
recovered=""
while under "$(seconds_between "$ready_at" "$(now)")" 10; do
  sent_at=$(now)
  read -r code secs retry < <(probe /v1/tasks POST)
  say "recovery probe: POST /v1/tasks -> $code in ${secs}s"
  if [[ $code == 201 ]]; then
    recovered=$(awk "BEGIN { printf \"%.2f\", $sent_at + $secs - $ready_at }")
    break
  fi
  sleep 0.1
done
wait "$pgctl_pid" || fail "pg_ctlcluster start failed"
[[ -n $recovered ]] || fail "no 201 within 10 s of PostgreSQL accepting connections"
say "recovered: a probe got 201 ${recovered}s after PostgreSQL accepted connections"
read -r code secs retry < <(probe /readyz GET)
say "GET /readyz -> $code"
[[ $code == 200 ]] || fail "/readyz answered $code after recovery"
sleep 3
touch "$work/stop"
wait "$load_pid"
load_pid=""

psql -At "$server_url" -c "select id from $schema.tasks" >"$work/stored.txt"
say "checking every answer against the timeline and the database"
touch "$work/probe_ids.txt"
python3 - "$work/answers.jsonl" "$work/stored.txt" "$stopped_at" "$restart_at" "$ready_at" "$work/probe_ids.txt" <<'EOF'
import collections, json, sys

answers = [json.loads(line) for line in open(sys.argv[1])]
stored = set(line.strip() for line in open(sys.argv[2]) if line.strip())
# Down: from the stop's return to the start command (PostgreSQL cannot be back before);
# recovery is measured from the moment it accepts connections again.
stopped_at, restart_at, ready_at = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
problems = []

by_status = collections.Counter(a["status"] for a in answers)
print(f"answers: {len(answers)} {dict(sorted(by_status.items()))}")
for status in by_status:
    if status not in (201, 503):
        problems.append(f"{by_status[status]} answers with status {status} (only 201 and 503 are acceptable)")

down = [a for a in answers if stopped_at <= a["start"] < restart_at]
print(f"while PostgreSQL was down: {len(down)} answers, {collections.Counter(a['status'] for a in down)}, "
      f"slowest {max((a['end'] - a['start'] for a in down), default=0):.2f}s "
      f"(a 201 here was still waiting for a connection when the start command ran)")
for a in down:
    # A request begun shortly before the start command may wait for a connection
    # until PostgreSQL is back and then succeed; one answered while it was down may not.
    spans_restart = a["end"] >= restart_at
    if not (a["status"] == 503 and a["retry_after"]) and not (a["status"] == 201 and spans_restart):
        problems.append(f"during the outage: status {a['status']}, Retry-After {a['retry_after']}, "
                        f"begun {a['start'] - stopped_at:.2f}s after the stop")
    if a["end"] - a["start"] >= 2.0:
        problems.append(f"during the outage: an answer took {a['end'] - a['start']:.2f}s")
slowest = max((a["end"] - a["start"] for a in answers), default=0)
print(f"slowest answer overall: {slowest:.2f}s")

starting = [a for a in answers if restart_at <= a["start"] < ready_at]
print(f"while PostgreSQL was starting (crash recovery): {len(starting)} answers, "
      f"{collections.Counter(a['status'] for a in starting)}")
after = [a for a in answers if a["start"] >= ready_at]
first_ok = min((a["end"] for a in after if a["status"] == 201), default=None)
if first_ok is None:
    problems.append("the load never got a 201 after PostgreSQL came back")
else:
    print(f"load: first 201 {first_ok - ready_at:.2f}s after PostgreSQL accepted connections")
    if first_ok - ready_at > 5:
        problems.append("recovery took more than 5 s")
late_failures = [a for a in after if a["start"] > ready_at + 5 and a["status"] != 201]
if late_failures:
    problems.append(f"{len(late_failures)} failures more than 5 s after PostgreSQL was back")

acknowledged = [a["id"] for a in answers if a["status"] == 201]
acknowledged += [line.strip() for line in open(sys.argv[6]) if line.strip()]
missing = [i for i in acknowledged if i not in stored]
print(f"acknowledged with 201 (load and probes): {len(acknowledged)}; in the database: {len(stored)}; "
      f"acknowledged but missing: {len(missing)}")
if missing:
    problems.append(f"lost acknowledged tasks: {missing[:5]}")
in_doubt = len(stored) - len(set(acknowledged) & stored)
print(f"stored without a 201 (in flight when PostgreSQL died, answered 503): {in_doubt}")

for p in problems[:10]:
    print("FAIL:", p)
if len(problems) > 10:
    print(f"FAIL: ... and {len(problems) - 10} more")
sys.exit(1 if problems else 0)
EOF
say "503s answered by quotask (log lines): $(grep -c 'answering 503' "$work/quotask.log" || true)"
say "PASS"
