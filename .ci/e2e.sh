#!/usr/bin/env bash
# End-to-end test of the web page: builds quotask, makes an admin with the command line,
# starts it on a free port with a fresh database, drives the admin page and then the
# user's page in a real headless Chromium (tests/e2e/admin.spec.mjs, web.spec.mjs) and
# always stops the server. The screenshots land in target/e2e/.
#
#   QUOTASK_BIN   use this binary instead of building target/release/quotask
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
out="$root/target/e2e"
limit=3 # the server's QUOTASK_DEFAULT_DAILY_LIMIT; the spec is told the same
mkdir -p "$out"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if [[ ! -x /usr/bin/chromium ]]; then
  echo "e2e: installing Chromium"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y chromium chromium-driver; then
    as_root apt-get update
    as_root apt-get install -y chromium chromium-driver
  fi
fi

echo "e2e: npm ci"
(cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

if [[ -n ${QUOTASK_BIN:-} ]]; then
  bin=$QUOTASK_BIN
else
  echo "e2e: cargo build --release"
  cargo build --release
  bin="${CARGO_TARGET_DIR:-$root/target}/release/quotask"
fi
[[ -x $bin ]] || { echo "e2e: no quotask binary at $bin" >&2; exit 1; }

data_dir=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
base_url="http://127.0.0.1:$port"
log="$out/server.log"
: >"$log"

# A fresh SQLite database whatever the caller's environment points at. The admin
# spec signs up two dozen users from this address, more than the default allows an hour.
quotask=(env -u QUOTASK_DATABASE_URL -u QUOTASK_REDIS_URL
  QUOTASK_DATA_DIR="$data_dir"
  QUOTASK_BIND="127.0.0.1:$port"
  QUOTASK_DEFAULT_DAILY_LIMIT="$limit"
  QUOTASK_SIGNUPS_PER_HOUR=100
  "$bin")

# The first admin is made the way an operator makes one: with the command line.
admin=root
admin_password="e2e-admin-$RANDOM-$RANDOM-$RANDOM"
echo "$admin_password" | "${quotask[@]}" user create "$admin" --admin --timezone Europe/Lisbon >>"$log" 2>&1 ||
  { echo "e2e: could not make the admin; the log:" >&2; cat "$log" >&2; exit 1; }

"${quotask[@]}" >>"$log" 2>&1 &
server_pid=$!

ready() {
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$base_url/readyz"
}

echo "e2e: waiting for $base_url/readyz"
for _ in $(seq 1 100); do
  if ready; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "e2e: the server exited; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done
ready || { echo "e2e: the server never became ready; its log:" >&2; tail -50 "$log" >&2; exit 1; }

status=0
# The admin page first, on a database holding only its users (the screenshot shows them).
QUOTASK_E2E_BASE_URL="$base_url" \
  QUOTASK_E2E_DAILY_LIMIT="$limit" \
  QUOTASK_E2E_ADMIN="$admin" \
  QUOTASK_E2E_ADMIN_PASSWORD="$admin_password" \
  QUOTASK_E2E_ADMIN_SCREENSHOT="$out/admin-screenshot.png" \
  QUOTASK_E2E_EXPECT_PLANS=1 \
  node tests/e2e/admin.spec.mjs || status=$?
QUOTASK_E2E_BASE_URL="$base_url" \
  QUOTASK_E2E_DAILY_LIMIT="$limit" \
  QUOTASK_E2E_SCREENSHOT="$out/screenshot.png" \
  node tests/e2e/web.spec.mjs || status=$?

if [[ $status -ne 0 ]]; then
  echo "e2e: failed; the last lines of the server log ($log):" >&2
  tail -30 "$log" >&2
fi
exit "$status"
