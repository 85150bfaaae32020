#!/usr/bin/env bash
# Runs Qdrant's own clients against the Qdrant dialect of servers it
# starts: the official Python `qdrant-client` (REST), LangChain's and
# LlamaIndex's Qdrant vector stores (in a virtual environment under
# target/, every package pinned in scripts/qdrant_clients_requirements.txt),
# and `@qdrant/js-client-rest` (pinned, installed with npm under target/).
# Three setups: a single node with the Hub off; a single node with the
# local Hub and two tenants' keys; a three-node cluster, through every node
# (two of which are followers of the shard the data lives on).
# Exits non-zero on any failure.
#   scripts/qdrant_clients_check.sh [path to the vectorizer binary]
#   scripts/qdrant_clients_check.sh --install   (only sets up the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
install_only= bin=
if [ "${1:-}" = --install ]; then
  install_only=1 # only sets up the environment
else
  bin=$(realpath "${1:-target/debug/vectorizer}")
fi
venv=${QDRANT_VENV:-target/venv-qdrant}
js=target/qdrant-js

# Every package pinned, dependencies included; reinstalled when the list
# changes.
reqs=scripts/qdrant_clients_requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$reqs" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are required for the JS client check" >&2
  exit 1
fi
if [ ! -f "$js/node_modules/@qdrant/js-client-rest/package.json" ]; then
  mkdir -p "$js"
  [ -f "$js/package.json" ] || echo '{"private": true}' >"$js/package.json"
  (cd "$js" && npm install --silent --no-audit --no-fund @qdrant/js-client-rest@1.20.0)
fi
[ -n "$install_only" ] && exit 0
py=("$venv/bin/python")
export NODE_PATH="$PWD/$js/node_modules"

work=$(mktemp -d)
touch "$work/pids"
cleanup() {
  while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
  sleep 0.5
  while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a server with the given arguments (and environment from the
# caller); prints the URL of its Qdrant listener.
start() {
  local log=$1; shift
  VECTORIZER_LOGGING__LEVEL=warn VECTORIZER_QDRANT__PORT=0 "$bin" serve --port 0 --qdrant "$@" >"$log" 2>&1 &
  echo "$!" >>"$work/pids"
  for _ in $(seq 200); do
    url=$(sed -n 's/^qdrant-compatible API listening on //p' "$log")
    [ -n "$url" ] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "the server did not start:" >&2; cat "$log" >&2; exit 1
}

# The three clients against one URL: url, key (or ""), a name prefix, and
# "cluster" where aliases are refused.
clients() {
  local url=$1 key=$2 prefix=$3 mode=${4:-}
  local keyarg=() flag=()
  [ -n "$key" ] && keyarg=("$key")
  [ "$mode" = cluster ] && flag=(--cluster)
  timeout 600 "${py[@]}" scripts/qdrant_client_check.py "$url" "${keyarg[@]}" --prefix "$prefix" "${flag[@]}"
  timeout 600 "${py[@]}" scripts/qdrant_frameworks_check.py "$url" "${keyarg[@]}" --prefix "$prefix"
  timeout 300 node scripts/qdrant_js_check.mjs "$url" "$key" "$prefix" "$mode"
}

echo "== a single node, Hub off"
url=$(start "$work/alone.log" --data-dir "$work/alone")
clients "$url" "" alone

echo "== a single node, the local Hub, two tenants"
data="$work/hub"
mkdir -p "$data"
hub() { "$bin" hub-dev --data "$data/hub.json" "$@"; }
hub plan free --max-collections 20 --max-vectors 5000 --max-storage-bytes 100000000 >/dev/null
hub plan tiny --max-collections 2 --max-vectors 10 --max-storage-bytes 1000000 >/dev/null
keyof() { sed -n 's/^access key (shown once): //p'; }
key_a=$(hub key --user "$(hub user alice@example.com --plan free)" --permissions admin | keyof)
key_b=$(hub key --user "$(hub user bob@example.com --plan free)" --permissions admin | keyof)
key_t=$(hub key --user "$(hub user tiny@example.com --plan tiny)" --permissions admin | keyof)
unset HIVEHUB_SERVICE_API_KEY
url=$(start "$work/hub.log" --local-hub --data-dir "$data")
clients "$url" "$key_a" a
clients "$url" "$key_b" b
timeout 300 "${py[@]}" scripts/qdrant_tenants_check.py "$url" "$key_a" "$key_b" "$key_t"

echo "== a three-node cluster, through every node"
ports=$("${py[@]}" -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r p1 p2 p3 <<<"$ports"
VECTORIZER_CLUSTER_SECRET=$(head -c 24 /dev/urandom | base64)
export VECTORIZER_CLUSTER_SECRET
urls=()
for n in 1 2 3; do
  cat >"$work/node$n.yml" <<EOF
storage: {data_dir: "$work/node$n"}
cluster:
  node_id: $n
  shards: 4
  replication_factor: 3
  nodes:
    - {id: 1, addr: "127.0.0.1:$p1"}
    - {id: 2, addr: "127.0.0.1:$p2"}
    - {id: 3, addr: "127.0.0.1:$p3"}
EOF
  urls+=("$(start "$work/node$n.log" --config "$work/node$n.yml")")
done
# Every node answers once the cluster has formed and elected its leaders.
for u in "${urls[@]}"; do
  for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$u/collections/probe-$RANDOM" \
      -H 'content-type: application/json' -d '{"vectors": {"size": 2, "distance": "Dot"}}' || true)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { echo "the cluster did not form:" >&2; cat "$work"/node*.log >&2; exit 1; }
done
for i in 0 1 2; do
  clients "${urls[$i]}" "" "node$((i + 1))" cluster
done
echo "qdrant clients check passed"
