#!/usr/bin/env bash
# docker-compose.yml for real: builds the image, starts PostgreSQL, Redis and two quotask
# instances in containers, runs the seed's walk-through against both instances over
# HTTP, and always takes everything down again (containers, network, volume).
#
# Images come from Debian's packages (scripts/docker-local-images.sh), so no image
# registry is needed. Where no Docker engine can run (no root to start one, no kernel
# support), it prints one line, "docker: skipped: <why>", and exits 0. An engine it
# starts itself it also stops. Nothing is published on the host but 127.0.0.1:5001 and
# 127.0.0.1:5002: the host's own PostgreSQL (5432) and Redis (6379) are never touched.
# shellcheck disable=SC2016,SC2034  # check's conditions are strings, evaluated by check
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$(date +%s)
say() { printf '[%s] docker: %s\n' "$(date +%T)" "$*"; }
elapsed() { echo "$(($(date +%s) - started)) s"; }
skip() {
  echo "docker: skipped: $*"
  exit 0
}

# The classic builder (no buildx plugin needed); compose builds through the engine's API.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export COMPOSE_PROJECT_NAME=quotaskci
work=$(mktemp -d)
engine_pid=
compose_up=
stream=

cleanup() {
  local status=$?
  set +e
  [[ -n $stream ]] && kill "$stream" 2>/dev/null
  if [[ -n $compose_up ]]; then
    if [[ $status -ne 0 ]]; then
      say "failed; the containers' last log lines:"
      compose logs --no-color --tail 40 >&2
    fi
    compose down -v --remove-orphans >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    if [[ -n $left ]]; then
      say "containers left after down: $left; removing them"
      # shellcheck disable=SC2086  # one argument per container id
      docker rm -fv $left >/dev/null
      status=1
    fi
    # Old builds' layers (the latest build stages are kept by their tags), on an engine
    # this script started: another engine's dangling images are its owner's business.
    [[ -n $engine_pid ]] && docker image prune -f >/dev/null
  fi
  if [[ -n $engine_pid ]]; then
    kill "$engine_pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- an engine --------------------------------------------------------------------
apt_install() {
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$work/apt.log" 2>&1 ||
    { apt-get update >"$work/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$work/apt.log" 2>&1; } ||
    { tail -20 "$work/apt.log" >&2; exit 1; }
}

if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || skip "no Docker engine answers, and starting one needs root"
  command -v dockerd >/dev/null || apt_install docker.io
  log=${TMPDIR:-/tmp}/quotask-dockerd.log
  say "starting dockerd (log: $log)"
  dockerd >"$log" 2>&1 &
  engine_pid=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$engine_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    why=$(grep -iE 'level=(fatal|error)|failed' "$log" | tail -1 | cut -c1-200)
    kill "$engine_pid" 2>/dev/null || true
    engine_pid=
    skip "the Docker engine did not start: ${why:-see $log}"
  fi
fi
say "engine $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}')"

if docker compose version >/dev/null 2>&1; then
  compose() { docker compose "$@"; }
else
  command -v docker-compose >/dev/null || apt_install docker-compose
  compose() { docker-compose "$@"; }
fi

# --- images -------------------------------------------------------------------------
say "local images from Debian's packages"
eval "$(scripts/docker-local-images.sh)"
say "images ready ($(elapsed))"

# The build stages, tagged so that pruning old builds keeps them: a change to the
# source then rebuilds only the crate, and no change rebuilds nothing.
for stage in deps build; do
  say "building the image's $stage stage"
  docker build --target "$stage" -t "quotask-local/$stage" \
    --build-arg "QUOTASK_BUILD_IMAGE=$QUOTASK_BUILD_IMAGE" \
    --build-arg "QUOTASK_RUNTIME_IMAGE=$QUOTASK_RUNTIME_IMAGE" . >"$work/$stage.log" 2>&1 ||
    { tail -40 "$work/$stage.log" >&2; exit 1; }
  say "$stage stage ready ($(elapsed))"
done

# --- up -----------------------------------------------------------------------------
for port in 5001 5002; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "docker: 127.0.0.1:$port is taken; docker-compose.yml publishes an instance there" >&2
    exit 1
  fi
done
say "docker compose up -d --build"
compose_up=1
compose up -d --build >"$work/up.log" 2>&1 || { tail -60 "$work/up.log" >&2; exit 1; }
say "up ($(elapsed))"

b1=http://127.0.0.1:5001
b2=http://127.0.0.1:5002
for b in $b1 $b2; do
  for _ in $(seq 1 120); do
    curl -sf -o /dev/null "$b/readyz" && break
    sleep 0.5
  done
  curl -sf -o /dev/null "$b/readyz" || { echo "docker: $b/readyz never answered 200" >&2; exit 1; }
done
say "both instances ready ($(elapsed))"

# The image's own HEALTHCHECK must agree.
for svc in quotask-1 quotask-2; do
  id=$(compose ps -q "$svc")
  for _ in $(seq 1 60); do
    [[ $(docker inspect --format '{{.State.Health.Status}}' "$id") == healthy ]] && break
    sleep 1
  done
  health=$(docker inspect --format '{{.State.Health.Status}}' "$id")
  [[ $health == healthy ]] || { echo "docker: $svc's health check says $health" >&2; exit 1; }
done
say "both containers healthy"

# --- the seed's walk-through, across both instances ---------------------------------
passed=0
check() { # check WHAT CONDITION...
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    printf '  ok  %s\n' "$what"
  else
    printf '  FAIL %s\n' "$what" >&2
    printf '       status %s, body %s\n' "$(cat "$work/status")" "$(cat "$work/body")" >&2
    exit 1
  fi
}
# call METHOD URL [curl args]: the status in $work/status, the body in $work/body,
# the headers in $work/headers.
call() {
  local method=$1 url=$2
  shift 2
  curl -s -X "$method" -D "$work/headers" -o "$work/body" -w '%{http_code}' "$@" "$url" >"$work/status"
}
status_is() { [[ $(cat "$work/status") == "$1" ]]; }
body() { jq -r "$1" "$work/body"; }
header() { grep -i "^$1:" "$work/headers" | cut -d: -f2- | tr -d ' \r'; }
json=(-H "Content-Type: application/json")
creds='{"username":"user","password":"testtest"}'

say "the seed's walk-through on $b1 and $b2"
call POST "$b1/auth/signup" "${json[@]}" -d "$creds"
check "sign-up on instance 1: 200 in the seed's shape" \
  eval 'status_is 200 && [[ $(body .message) == "" && $(body .data.user_id) != null ]]'
call POST "$b2/auth/signup" "${json[@]}" -d "$creds"
check "the same sign-up on instance 2: 409" status_is 409

call POST "$b2/auth/signin" "${json[@]}" -d '{"username":"user","password":"wrongwrong"}'
check "a wrong password on instance 2: 401" status_is 401
call POST "$b2/auth/signin" "${json[@]}" -d "$creds"
check "sign-in on instance 2: 200 with 'Bearer: ey...'" \
  eval 'status_is 200 && [[ $(body .data.bearer_token) == "Bearer: ey"* ]]'
bearer=$(body .data.bearer_token)

# As in the seed: a JSON content type, an accept header, and no body at all.
task() { call POST "$1/task" "${json[@]}" -H "accept: */*" -H "Authorization: $bearer"; }
# Instance 2's event stream, open while the tasks are created: the creates through
# instance 1 reach it only through Redis.
curl -sN --max-time 30 -H "Authorization: Bearer ${bearer#Bearer: }" "$b2/v1/events" >"$work/events" &
stream=$!
for _ in $(seq 1 50); do grep -q 'quotask events' "$work/events" && break; sleep 0.1; done
first=
for i in 1 2 3 4 5; do
  if ((i % 2)); then b=$b1; else b=$b2; fi
  task "$b"
  check "task $i of the daily 5 through ${b##*:}: 200" \
    eval 'status_is 200 && [[ $(body .data.id) != null && $(body .data.content) == "untitled task" ]]'
  [[ -n $first ]] || first=$(body .data.id)
done
for _ in $(seq 1 50); do (($(grep -c '^event: task.created' "$work/events") >= 5)) && break; sleep 0.1; done
kill "$stream" 2>/dev/null || true
echo "(the stream)" >"$work/status"
cp "$work/events" "$work/body"
check "instance 2's event stream saw all 5 creates, 3 of them made through instance 1 (Redis)" \
  eval '[[ $(grep -c "^event: task.created" "$work/events") == 5 ]]'
task "$b2"
check "a 6th task through instance 2: 429, Retry-After, the seed's error shape" \
  eval 'status_is 429 && [[ -n $(header retry-after) && $(body .message) == *"daily limit"* &&
        $(body .payload.type) == https://quotask.dev/problems/quota-exceeded ]]'
task "$b1"
check "a 7th through instance 1: 429 too" status_is 429

call GET "$b2/v1/tasks" -H "Authorization: Bearer ${bearer#Bearer: }"
check "instance 2 lists the 5 tasks, the first made through instance 1 among them" \
  eval 'status_is 200 && [[ $(body ".items | length") == 5 &&
        $(jq --arg id "$first" "[.items[] | select(.id == \$id)] | length" "$work/body") == 1 ]]'

# --- what the instances share, and what the host sees ------------------------------
docker exec "$(compose ps -q redis)" redis-cli client list >"$work/body" 2>&1 || true
subscribers=$(grep -c 'cmd=subscribe' "$work/body" || true)
check "Redis holds both instances' event subscriptions" eval '[[ $subscribers == 2 ]]'
docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --format '{{.Names}} {{.Ports}}' >"$work/body"
published=$(tr ',' '\n' <"$work/body" | grep -o '[0-9.]*:[0-9]*->[0-9]*/tcp' | sort | tr '\n' ' ')
check "only 127.0.0.1:5001 and :5002 are published on the host" \
  eval '[[ $published == "127.0.0.1:5001->5000/tcp 127.0.0.1:5002->5000/tcp " ]]'

say "$passed passed, 0 failed; $(elapsed) in all"
