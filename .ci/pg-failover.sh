#!/usr/bin/env bash
# PostgreSQL failover under a quota storm (docs/reliability.md, "database failover").
# Builds its own primary and synchronous standby on free loopback ports
# (pg_createcluster, pg_basebackup; the main cluster on 5432 is never touched), starts
# two quotask instances whose database URL names both hosts with
# target_session_attrs=read-write, and keeps creating tasks through both for two users:
# one with no practical limit, one with a limit of 300 that the storm passes. Then it
# stops the primary with `-m immediate` and promotes the standby, and checks that:
#   - both instances answer 201 again within 10 s of the promotion, by themselves;
#   - meanwhile nothing but 201, 429 and 503 with Retry-After is answered;
#   - every task acknowledged with 201 is on the new primary;
#   - the limited user never has more tasks than the limit, and its counter equals its
#     tasks.
# Both clusters are always dropped on exit. Bounded: a watchdog ends it after 300 s.
#
#   QUOTASK_BIN   use this binary instead of building target/debug/quotask
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=$(ls /etc/postgresql | sort -n | tail -n 1)
primary="qtfailover_primary_$$"
standby="qtfailover_standby_$$"
limit=300
say() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
watchdog_pid=""
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -n $watchdog_pid ]] && kill "$watchdog_pid" 2>/dev/null || true
  for cluster in "$primary" "$standby"; do
    if [[ -d /etc/postgresql/$version/$cluster ]]; then
      pg_dropcluster --stop "$version" "$cluster" >/dev/null 2>&1 || say "cleanup: could not drop cluster $cluster"
    fi
  done
  if [[ $status -ne 0 ]]; then
    for log in "$work"/quotask-*.log; do
      [[ -f $log ]] || continue
      say "$(basename "$log") (last 5 lines):"
      tail -n 5 "$log"
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

command -v pg_createcluster >/dev/null || fail "pg_createcluster not found (Debian's postgresql-common)"
if [[ -z ${QUOTASK_BIN:-} ]]; then
  say "building quotask (debug)"
  timeout 1200 cargo build --quiet --bin quotask
  QUOTASK_BIN=target/debug/quotask
fi
QUOTASK_BIN=$(realpath "$QUOTASK_BIN")
(for _ in $(seq 300); do sleep 1; done; say "watchdog: giving up after 300 s"; kill -TERM $$) &
watchdog_pid=$!

p_port=$(free_port)
s_port=$(free_port)
hba='local all all trust
host all all 127.0.0.1/32 trust
local replication all trust
host replication all 127.0.0.1/32 trust'

say "primary: cluster $version/$primary on 127.0.0.1:$p_port"
pg_createcluster "$version" "$primary" -p "$p_port" >/dev/null
echo "$hba" >"/etc/postgresql/$version/$primary/pg_hba.conf"
cat >"/etc/postgresql/$version/$primary/conf.d/failover.conf" <<EOF
listen_addresses = '127.0.0.1'
synchronous_standby_names = 'quotask_standby'
synchronous_commit = on
max_connections = 100
EOF
pg_ctlcluster "$version" "$primary" start

say "standby: cluster $version/$standby on 127.0.0.1:$s_port, from pg_basebackup of the primary"
pg_createcluster "$version" "$standby" -p "$s_port" >/dev/null
echo "$hba" >"/etc/postgresql/$version/$standby/pg_hba.conf"
cat >"/etc/postgresql/$version/$standby/conf.d/failover.conf" <<EOF
listen_addresses = '127.0.0.1'
max_connections = 100
primary_conninfo = 'host=127.0.0.1 port=$p_port user=postgres application_name=quotask_standby'
EOF
standby_data=/var/lib/postgresql/$version/$standby
rm -rf "${standby_data:?}"/*
pg_basebackup -h 127.0.0.1 -p "$p_port" -U postgres -D "$standby_data" -X stream
touch "$standby_data/standby.signal"
chown -R postgres:postgres "$standby_data"
chmod 700 "$standby_data"
pg_ctlcluster "$version" "$standby" start

p_url="postgres://postgres@127.0.0.1:$p_port/postgres"
s_url="postgres://postgres@127.0.0.1:$s_port/postgres"
for _ in $(seq 100); do
  [[ $(psql -At "$p_url" -c "select sync_state from pg_stat_replication where application_name = 'quotask_standby'") == sync ]] && break
  sleep 0.1
done
[[ $(psql -At "$p_url" -c "select sync_state from pg_stat_replication where application_name = 'quotask_standby'") == sync ]] ||
  fail "the standby is not a synchronous standby of the primary"
say "the standby replicates synchronously"

database_url="postgres://postgres@127.0.0.1:$p_port,127.0.0.1:$s_port/postgres?target_session_attrs=read-write"
bases=()
for n in 1 2; do
  port=$(free_port)
  QUOTASK_BIND="127.0.0.1:$port" QUOTASK_DATABASE_URL="$database_url" QUOTASK_DATA_DIR="$work/data-$n" \
    QUOTASK_DEFAULT_DAILY_LIMIT=1000000 QUOTASK_LOG_FORMAT=json \
    "$QUOTASK_BIN" >"$work/quotask-$n.log" 2>&1 &
  pids+=($!)
  bases+=("http://127.0.0.1:$port")
done
for base in "${bases[@]}"; do
  for _ in $(seq 150); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "$base/readyz") == 200 ]] && break
    sleep 0.2
  done
  [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "$base/readyz") == 200 ]] || fail "quotask at $base did not become ready"
done
say "two quotask instances ready: ${bases[*]}"

post() { curl -s -m 10 -H 'content-type: application/json' "$@"; }
tokens=()
for user in unlimited limited; do
  post -o /dev/null -d "{\"username\": \"$user\", \"password\": \"a long failover password\"}" "${bases[0]}/v1/auth/signup"
  tokens+=("$(post -d "{\"username\": \"$user\", \"password\": \"a long failover password\"}" "${bases[0]}/v1/auth/signin" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')")
done
QUOTASK_DATABASE_URL="$database_url" QUOTASK_DATA_DIR="$work/data-1" "$QUOTASK_BIN" user set-limit limited "$limit" >/dev/null

# The storm: 4 clients a user, 2 on each instance, each creating back to back and
# writing one JSON line per answer.
clients=()
for base in "${bases[@]}"; do
  for _ in 1 2; do
    clients+=("unlimited|$base|${tokens[0]}" "limited|$base|${tokens[1]}")
  done
done
python3 .ci/create_load.py "$work/answers.jsonl" "$work/stop" "${clients[@]}" &
pids+=($!)
load_pid=$!
sleep 3
say "storm running: $(wc -l <"$work/answers.jsonl") answers so far"

say "stopping the primary (-m immediate) and promoting the standby"
stopped_at=$(now)
pg_ctlcluster "$version" "$primary" stop -m immediate
pg_ctlcluster "$version" "$standby" promote
promoted_at=$(now)
say "promoted"
sleep 12
touch "$work/stop"
wait "$load_pid"

psql -At "$s_url" -c "select t.id, u.username from tasks t join users u on u.id = t.user_id" >"$work/stored.txt"
psql -At "$s_url" -c "select coalesce(sum(g.used), 0) from usage g join users u on u.id = g.user_id where u.username = 'limited'" \
  >"$work/limited_used.txt"
say "checking every answer against the timeline and the new primary"
python3 - "$work/answers.jsonl" "$work/stored.txt" "$work/limited_used.txt" "$stopped_at" "$promoted_at" "$limit" <<'EOF'
import collections, json, sys

answers = [json.loads(line) for line in open(sys.argv[1])]
stored = dict(line.strip().split("|") for line in open(sys.argv[2]) if line.strip())
limited_used = int(open(sys.argv[3]).read().strip())
stopped_at, promoted_at, limit = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
problems = []

print(f"answers: {len(answers)} {dict(sorted(collections.Counter(a['status'] for a in answers).items()))}")
for a in answers:
    if a["status"] not in (201, 429, 503):
        problems.append(f"status {a['status']} from {a['base']} at {a['start'] - stopped_at:+.2f}s")
    elif a["status"] == 503 and not a["retry_after"]:
        problems.append(f"a 503 without Retry-After at {a['start'] - stopped_at:+.2f}s")
    elif a["status"] == 429 and a["user"] != "limited":
        problems.append("a 429 for the user without a practical limit")

for base in sorted({a["base"] for a in answers}):
    after = [a["end"] for a in answers if a["base"] == base and a["user"] == "unlimited"
             and a["status"] == 201 and a["start"] >= promoted_at]
    if not after:
        problems.append(f"{base} never answered 201 after the promotion")
        continue
    back = min(after) - promoted_at
    gap = [a for a in answers if a["base"] == base and stopped_at <= a["start"] < promoted_at + back]
    print(f"{base}: first 201 {back:.2f}s after the promotion; meanwhile "
          f"{dict(collections.Counter(a['status'] for a in gap))}")
    if back > 10:
        problems.append(f"{base} took {back:.2f}s (more than 10 s) to reach the new primary")

acknowledged = [a for a in answers if a["status"] == 201]
missing = [a["id"] for a in acknowledged if a["id"] not in stored]
print(f"acknowledged with 201: {len(acknowledged)}; on the new primary: {len(stored)}; missing: {len(missing)}")
if missing:
    problems.append(f"{len(missing)} acknowledged tasks are not on the new primary: {missing[:3]}")

limited_tasks = sum(1 for user in stored.values() if user == "limited")
limited_201 = sum(1 for a in acknowledged if a["user"] == "limited")
print(f"limited user: limit {limit}, 201s {limited_201}, tasks {limited_tasks}, counter {limited_used}")
if limited_tasks > limit:
    problems.append(f"the limited user has {limited_tasks} tasks, more than the limit {limit}")
if limited_used != limited_tasks:
    problems.append(f"the limited user's counter {limited_used} is not its {limited_tasks} tasks")
if limited_201 < limit:
    problems.append(f"the storm did not reach the limit ({limited_201} of {limit}): the check proves little")

for p in problems[:10]:
    print("FAIL:", p)
sys.exit(1 if problems else 0)
EOF
say "PASS"
