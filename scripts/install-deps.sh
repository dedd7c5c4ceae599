#!/usr/bin/env bash
# Installs the Debian packages cairn's build and tests need, where they are missing.
# libclang-dev + clang: RocksDB's bindings (bindgen). fuse3: mount tests. postgresql:
# the Harbor recipe's test starts its own server on 127.0.0.1 (tests/postgres.rs).
# etcd-server + etcd-client: the etcd recipe's test (tests/etcd.rs), likewise. jq: the
# Deis recipe's test runs the guide's jq filter (tests/deis.rs).
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s clang >/dev/null 2>&1 || need+=(clang)
dpkg -s fuse3 >/dev/null 2>&1 || need+=(fuse3)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
