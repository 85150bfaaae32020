#!/usr/bin/env bash
# Checks the server's API document with openapi-spec-validator, generates
# a Python client from it with openapi-python-client (both pinned, in a
# virtual environment of their own), and has that client create a
# collection, upsert points and run a filtered search against a server it
# starts. Exits non-zero on any failure.
#   scripts/openapi_client_check.sh [path to the vectorizer binary]
#   scripts/openapi_client_check.sh --install   (only sets up the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
install_only= bin=
if [ "${1:-}" = --install ]; then
  install_only=1 # only sets up the environment
else
  bin=$(realpath "${1:-target/debug/vectorizer}")
fi
venv=${OPENAPI_VENV:-target/venv-openapi}

if [ ! -x "$venv/bin/openapi-python-client" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openapi-spec-validator==0.9.0 openapi-python-client==0.29.1
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

VECTORIZER_LOGGING__LEVEL=warn "$bin" serve --port 0 --data-dir "$work/data" >"$work/server.log" 2>&1 &
pid=$!
url=
for _ in $(seq 100); do
  url=$(sed -n 's/^vectorizer listening on //p' "$work/server.log")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

curl -sf "$url/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
# A warning is a part of the document the client leaves out: none allowed.
"$venv/bin/openapi-python-client" generate --path "$work/openapi.json" \
  --output-path "$work/client" --config scripts/openapi-python-client.yml --overwrite \
  >"$work/generate.log" 2>&1 || { cat "$work/generate.log" >&2; exit 1; }
if grep -qi "warning\|unable\|error" "$work/generate.log"; then
  cat "$work/generate.log" >&2
  echo "openapi-python-client could not read all of the document" >&2
  exit 1
fi
"$venv/bin/python" scripts/openapi_client_check.py "$url" "$work/client"
echo "ok: the API document is valid, and the generated Python client works"
