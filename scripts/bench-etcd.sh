#!/usr/bin/env bash
# RPO/RTO figures for the etcd recipe (docs/guides/etcd.md): a throwaway etcd on
# 127.0.0.1 loaded with Kubernetes-like keys, `etcdctl snapshot save`, a first backup, a
# "day" of changes (10% of the keys rewritten, 1% added, 1% deleted, then compacted as
# kube-apiserver does), `snapshot save` and the second backup, then the restore:
# `cairn dump`, `etcdctl snapshot restore` into a new data directory, and etcd started on
# it until healthy. Every measured step runs RUNS times (default 3) on a fresh repository;
# the medians are printed.
#
#   scripts/bench-etcd.sh [KEYS]     (default 50000; CAIRN_BIN picks the binary)
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
keys=${1:-50000}
command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
  echo "needs etcd and etcdctl (scripts/install-deps.sh)" >&2
  exit 1
}
export ETCDCTL_API=3
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work" /dev/shm/cairn-bench-etcd.$$' EXIT

# start_etcd NAME DATA_DIR: an etcd on free ports; sets `endpoint`.
start_etcd() {
  local c p
  c=$(free_port)
  p=$(free_port)
  endpoint=http://127.0.0.1:$c
  etcd --name "$1" --data-dir "$2" --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$1=http://127.0.0.1:$p" --quota-backend-bytes 8589934592 >"$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    etcdctl --endpoints "$endpoint" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "etcd did not start; see $2.log" >&2
  exit 1
}

# load DAY: day 1 puts KEYS keys; day 2 rewrites 10%, adds 1%, deletes 1%, then compacts.
load() {
  python3 - "$endpoint" "$1" "$keys" <<'PY'
import base64, http.client, json, random, sys, threading
endpoint, day, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = endpoint.split("//")[1].split(":")
kinds = ["pods", "configmaps", "secrets", "events", "deployments", "services", "endpointslices", "leases"]
def key(i):
    return "/registry/%s/ns-%03d/obj-%07d" % (kinds[i % 8], i % 211, i)
def value(i, version):
    r = random.Random("%d/%d" % (i, version))
    size = min(int(r.paretovariate(1.6) * 900), 200_000)
    head = ('{"kind":"%s","metadata":{"name":"obj-%07d","namespace":"ns-%03d","resourceVersion":"%d",'
            '"labels":{"app":"app-%d","tier":"%s"}},"data":"' % (kinds[i % 8], i, i % 211, version, i % 97, ["web", "db", "cache"][i % 3]))
    return head.encode() + base64.b64encode(r.randbytes(size)) + b'"}'
ops = []
if day == 1:
    ops = [("put", i, 1) for i in range(n)]
else:
    r = random.Random("day%d" % day)
    ops = [("put", i, day) for i in r.sample(range(n), n // 10)]
    ops += [("put", i, day) for i in range(n + (day - 2) * (n // 100), n + (day - 1) * (n // 100))]
    ops += [("del", i, 0) for i in r.sample(range(n), n // 100)]
def work(part):
    c = http.client.HTTPConnection(host, int(port))
    for op, i, v in part:
        k = base64.b64encode(key(i).encode()).decode()
        if op == "put":
            body = {"key": k, "value": base64.b64encode(value(i, v)).decode()}
            path = "/v3/kv/put"
        else:
            body, path = {"key": k}, "/v3/kv/deleterange"
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = c.getresponse()
        data = resp.read()
        if resp.status != 200:
            sys.exit("etcd answered %d: %s" % (resp.status, data[:200]))
threads = [threading.Thread(target=work, args=(ops[t::8],)) for t in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
  if [ "$1" -gt 1 ]; then
    local rev
    rev=$(etcdctl --endpoints "$endpoint" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
    etcdctl --endpoints "$endpoint" compact "$rev" >/dev/null
  fi
}

backup() {
  "$cairn" backup --json --stdin --stdin-name etcd/snapshot.db --stdin-check etcd-snapshot <"$1" >"$work/out.json"
}

src=/dev/shm/cairn-bench-etcd.$$
mkdir -p "$src"
start_etcd src "$src/data"
src_endpoint=$endpoint
echo "loading $keys keys..."
load 1
etcdctl --endpoints "$src_endpoint" snapshot save "$work/day1.db" >/dev/null 2>&1
load 2
want=$(etcdctl --endpoints "$src_endpoint" get "" --prefix --keys-only | grep -c .)
save1=() save2=() b1=() b2=() added=() dump=() rest=() start=() rto=()
for run in $(seq "$runs"); do
  rm -f "$work/day2.db"
  timed etcdctl --endpoints "$src_endpoint" snapshot save "$work/day2.db" >/dev/null 2>&1
  save2+=("$T")
  repo_init "$work/repo"
  timed backup "$work/day1.db"
  b1+=("$T")
  timed backup "$work/day2.db"
  b2+=("$T")
  added+=("$(mb "$(summary_field "$(cat "$work/out.json")" bytes_added)")")
  # Restore: the file, etcd's restore into a new data directory, etcd serving it.
  rm -rf "$work/restored.db" "$work/new"
  sync
  timed sh -c "'$cairn' dump latest:/etcd/snapshot.db > '$work/restored.db'"
  dump+=("$T")
  p=$(free_port)
  timed etcdctl snapshot restore "$work/restored.db" --data-dir "$work/new" --name new \
    --initial-cluster "new=http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" >/dev/null 2>&1
  rest+=("$T")
  c=$(free_port)
  s=$(date +%s.%N)
  etcd --name new --data-dir "$work/new" --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "new=http://127.0.0.1:$p" >"$work/new.log" 2>&1 &
  new_pid=$!
  until etcdctl --endpoints "http://127.0.0.1:$c" endpoint health >/dev/null 2>&1; do sleep 0.05; done
  T=$(echo "$(date +%s.%N) - $s" | bc)
  start+=("$T")
  rto+=("$(echo "${dump[-1]} + ${rest[-1]} + ${start[-1]}" | bc)")
  got=$(etcdctl --endpoints "http://127.0.0.1:$c" get "" --prefix --keys-only | grep -c .)
  kill "$new_pid"
  wait "$new_pid" 2>/dev/null || true
  [ "$got" -eq "$want" ] || { echo "restored etcd has $got keys, the source $want" >&2; exit 1; }
  printf "run %d: backup day 1 %.2f s, day 2 %.2f s (%s MB added), restore %.2f s; %d keys served\n" "$run" "${b1[-1]}" "${b2[-1]}" "${added[-1]}" "${rto[-1]}" "$got"
done
echo
echo "etcd, $keys keys: snapshot $(mb "$(stat -c %s "$work/day1.db")") MB on day 1, $(mb "$(stat -c %s "$work/day2.db")") MB on day 2; $runs runs"
report "etcdctl snapshot save (day 2), s" "${save2[@]}"
report "first backup (day 1 snapshot), s" "${b1[@]}"
report "backup after a day of changes, s" "${b2[@]}"
report "  stored by it, MB" "${added[@]}"
report "restore: cairn dump, s" "${dump[@]}"
report "restore: etcdctl snapshot restore, s" "${rest[@]}"
report "restore: etcd started and healthy, s" "${start[@]}"
report "restore, all three, s" "${rto[@]}"
