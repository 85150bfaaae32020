#!/usr/bin/env bash
# Runs schemathesis (pinned, in its own virtual environment) against the
# API document of a server it starts: once standalone, once with the local
# Hub and an access key, the two side by side. Exits non-zero on any
# failure.
#   scripts/api_conformance.sh [path to the vectorizer binary]
#   scripts/api_conformance.sh --install   (only sets up the environment)
# SCHEMATHESIS_EXAMPLES (default 40) sets the examples per operation of the
# standalone run; the run with the Hub, whose cases mostly repeat those
# behind a key, takes SCHEMATHESIS_HUB_EXAMPLES (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/vectorizer}
venv=${VENV:-target/venv-schemathesis}
examples=${SCHEMATHESIS_EXAMPLES:-40}
hub_examples=${SCHEMATHESIS_HUB_EXAMPLES:-15}

if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis==4.32.5
fi
[ "$bin" = --install ] && exit 0

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

# run URL EXAMPLES [schemathesis options]. Found examples are kept in
# memory only: each run generates from its seed alone.
run() {
  local url=$1 n=$2; shift 2
  timeout 900 "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$url/openapi.json" \
    --url "$url" --checks all --max-examples "$n" --seed 1 --request-timeout 30 \
    --generation-database :memory: "$@"
}

standalone=$(start --data-dir "$work/standalone")
data="$work/hub"
mkdir -p "$data"
hub() { "$bin" hub-dev --data "$data/hub.json" "$@"; }
hub plan free --max-collections 1000 --max-vectors 100000000 --max-storage-bytes 100000000000 >/dev/null
user=$(hub user conformance@example.com --plan free)
key=$(hub key --user "$user" --permissions admin | sed -n 's/^access key (shown once): //p')
unset HIVEHUB_SERVICE_API_KEY
with_hub=$(start --local-hub --data-dir "$data")

# Each run is mostly one Python process: on two cores they overlap.
run "$standalone" "$examples" >"$work/standalone.out" 2>&1 &
first=$!
run "$with_hub" "$hub_examples" -H "Authorization: Bearer $key" >"$work/hub.out" 2>&1 &
second=$!
status=0
wait "$first" || status=1
echo "== standalone"
cat "$work/standalone.out"
wait "$second" || status=1
echo "== with the local Hub and an access key"
cat "$work/hub.out"
exit "$status"
