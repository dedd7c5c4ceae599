#!/usr/bin/env bash
# A three-node Garage cluster (replication factor 3) on 127.0.0.1 for end-to-end tests.
#
#   scripts/garage.sh install               build Garage once (cargo install, about 25
#                                           minutes on 2 cores) into ~/.cache/cairn-garage
#   scripts/garage.sh start DIR [PORT]      start three nodes, lay them out, make a key and
#                                           a bucket; print the env to source
#   scripts/garage.sh stop DIR
#   scripts/garage.sh kill-node DIR N       kill node N (1-3) by PID (fault injection)
#   scripts/garage.sh start-node DIR N      start node N again
#
# Node N serves S3 on PORT+10*(N-1) (default 3900, 3910, 3920) and RPC on the port after.
# GARAGE_BIN overrides the binary.
set -euo pipefail
cmd=${1:?usage: garage.sh install|start|stop|kill-node|start-node DIR [PORT|N]}
version=2.5.0
cache=${CAIRN_GARAGE_CACHE:-$HOME/.cache/cairn-garage}
garage=${GARAGE_BIN:-$cache/bin/garage}

install() {
  [ -x "$garage" ] && return
  echo "garage.sh: building Garage $version with cargo install (about 25 minutes on 2 cores)" >&2
  cargo install garage --version "$version" --locked --root "$cache" >&2
}

wait_for() { # seconds command...
  local n=$1; shift
  for _ in $(seq $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

node_conf() { echo "$dir/node$1/garage.toml"; }
g() { "$garage" -c "$(node_conf 1)" "$@"; }

start_node() {
  local n=$1
  "$garage" -c "$(node_conf "$n")" server >>"$dir/node$n/log" 2>&1 &
  echo $! >"$dir/node$n/pid"
  wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(cat "$dir/node$n/s3port")" ||
    { echo "garage node $n did not start; see $dir/node$n/log" >&2; exit 1; }
}

case $cmd in
install) install ;;
start)
  dir=${2:?directory}; base=${3:-3900}
  install
  mkdir -p "$dir"
  echo "$base" >"$dir/port"
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  for n in 1 2 3; do
    s3=$((base + 10 * (n - 1))); rpc=$((s3 + 1)); admin=$((s3 + 3))
    mkdir -p "$dir/node$n/meta" "$dir/node$n/data"
    echo "$s3" >"$dir/node$n/s3port"
    cat >"$(node_conf $n)" <<EOF
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    start_node $n
  done
  for n in 2 3; do
    id=$("$garage" -c "$(node_conf $n)" node id -q 2>/dev/null)
    g node connect "$id" >/dev/null
  done
  for n in 1 2 3; do
    id=$("$garage" -c "$(node_conf $n)" node id -q 2>/dev/null | cut -d@ -f1)
    g layout assign -z dc1 -c 1G "$id" >/dev/null
  done
  g layout apply --version 1 >/dev/null
  key=$(g key create cairn-e2e)
  access=$(echo "$key" | awk '/Key ID/ {print $NF}')
  secret_key=$(echo "$key" | awk '/Secret key/ {print $NF}')
  g bucket create cairn-e2e >/dev/null
  g bucket allow --read --write --owner cairn-e2e --key cairn-e2e >/dev/null
  echo "export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret_key AWS_REGION=garage CAIRN_GARAGE_ENDPOINT=http://127.0.0.1:$base"
  ;;
stop)
  dir=${2:?directory}
  for n in 1 2 3; do
    [ -f "$dir/node$n/pid" ] && kill "$(cat "$dir/node$n/pid")" 2>/dev/null || true
  done
  ;;
kill-node)
  dir=${2:?directory}; n=${3:?node 1-3}
  kill -9 "$(cat "$dir/node$n/pid")"
  ;;
start-node)
  dir=${2:?directory}; n=${3:?node 1-3}
  start_node "$n"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
