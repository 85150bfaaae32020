#!/usr/bin/env bash
# Runs the official Python MCP client (pinned, in its own virtual
# environment) against a server it starts with the local Hub, and against
# `vectorizer mcp --stdio`. Exits non-zero on any failure.
#   scripts/mcp_client_check.sh [path to the vectorizer binary]
#   scripts/mcp_client_check.sh --install   (only sets up the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
install_only= bin=
if [ "${1:-}" = --install ]; then
  install_only=1 # only sets up the environment
else
  bin=$(realpath "${1:-target/debug/vectorizer}")
fi
venv=${MCP_VENV:-target/venv-mcp}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q mcp==2.3.0
fi
[ -n "$install_only" ] && exit 0

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

data="$work/hub"
mkdir -p "$data"
hub() { "$bin" hub-dev --data "$data/hub.json" "$@"; }
hub plan free --max-collections 10 --max-vectors 1000 --max-storage-bytes 100000000 >/dev/null
alice=$(hub user alice@example.com --plan free)
bob=$(hub user bob@example.com --plan free)
keyof() { sed -n 's/^access key (shown once): //p'; }
key_a=$(hub key --user "$alice" --permissions read,write,delete | keyof)
key_r=$(hub key --user "$alice" --permissions read | keyof)
key_b=$(hub key --user "$bob" --permissions read,write,delete | keyof)
unset HIVEHUB_SERVICE_API_KEY

VECTORIZER_LOGGING__LEVEL=warn "$bin" serve --port 0 --local-hub --data-dir "$data" >"$work/server.log" 2>&1 &
pid=$!
url=
for _ in $(seq 100); do
  url=$(sed -n 's/^vectorizer listening on //p' "$work/server.log")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

timeout 300 "$venv/bin/python" scripts/mcp_client_check.py "$url/mcp" "$key_a" "$key_r" "$key_b" "$bin" "$work/stdio"
