#!/usr/bin/env bash
# Fuzzes the live API against its own /openapi.json with schemathesis, every check (its
# default; `--checks all` on the command line would also override the few exceptions
# that .ci/schemathesis.toml makes, and says why), as an authenticated admin. Fails on
# any 5xx or any response that does not match the schema.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${QUOTASK_BIN:-target/debug/quotask}
[ -x "$bin" ] || cargo build
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export QUOTASK_DATA_DIR="$data" QUOTASK_BIND="127.0.0.1:$port" QUOTASK_DEFAULT_DAILY_LIMIT=1000 RUST_LOG=warn
printf 'schemathesis password\n' | "$bin" user create fuzzer --admin >/dev/null
"$bin" >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done

token=$(curl -sf -XPOST "$base/v1/auth/signin" -H 'content-type: application/json' \
  -d '{"username":"fuzzer","password":"schemathesis password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Sign-out would end the very session the run uses; the event stream never ends by
# itself (15 minutes); both have their own tests in tests/api.
"$venv/bin/schemathesis" --config-file .ci/schemathesis.toml run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --exclude-path /v1/auth/signout \
  --exclude-path /v1/events \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
  --max-time "${SCHEMATHESIS_MAX_TIME:-240}" \
  --workers 2 \
  --seed 1 \
  "$@"
status=$?
if grep -q 'answering 500' "$data/server.log"; then
  echo "the server logged a 500:"; grep 'answering 500' "$data/server.log" | head -5
  exit 1
fi
exit $status
