#!/usr/bin/env bash
# Runs schemathesis (pinned, in its own virtual environment) against the
# API document of a server it starts: once standalone, once with the local
# Hub and an access key. Exits non-zero on any failure.
#   scripts/api_conformance.sh [path to the vectorizer binary]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/vectorizer}
venv=${VENV:-target/venv-schemathesis}
examples=${SCHEMATHESIS_EXAMPLES:-60}

if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis==4.32.5
fi

work=$(mktemp -d)
cleanup() {
  # The servers' process ids (`start` runs in a subshell: kept in a file).
  while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
  for _ in $(seq 50); do
    alive=0
    while read -r p; do kill -0 "$p" 2>/dev/null && alive=1; done <"$work/pids"
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  rm -rf "$work"
}
touch "$work/pids"
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the server with the given arguments; prints its base URL.
start() {
  local log="$work/server-$#-$RANDOM.log"
  VECTORIZER_LOGGING__LEVEL=warn "$bin" serve --port 0 "$@" >"$log" 2>&1 &
  echo "$!" >>"$work/pids"
  for _ in $(seq 100); do
    url=$(sed -n 's/^vectorizer listening on //p' "$log")
    [ -n "$url" ] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "the server did not start:" >&2; cat "$log" >&2; exit 1
}

run() {
  local url=$1; shift
  timeout 900 "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$url/openapi.json" \
    --url "$url" --checks all --max-examples "$examples" --seed 1 --request-timeout 30 "$@"
}

echo "== standalone"
url=$(start --data-dir "$work/standalone")
run "$url"

echo "== with the local Hub and an access key"
data="$work/hub"
mkdir -p "$data"
hub() { "$bin" hub-dev --data "$data/hub.json" "$@"; }
hub plan free --max-collections 1000 --max-vectors 100000000 --max-storage-bytes 100000000000 >/dev/null
user=$(hub user conformance@example.com --plan free)
key=$(hub key --user "$user" --permissions admin | sed -n 's/^access key (shown once): //p')
unset HIVEHUB_SERVICE_API_KEY
url=$(start --local-hub --data-dir "$data")
run "$url" -H "Authorization: Bearer $key"
