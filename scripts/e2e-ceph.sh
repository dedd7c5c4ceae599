#!/usr/bin/env bash
# End-to-end suite against a one-node Ceph radosgw on 127.0.0.1 (scripts/ceph-rgw.sh):
# init with bucket creation, backup of a generated ops tree and of a stream, byte-identical
# restores, then radosgw killed by PID in the middle of a backup (of a stream that pauses,
# so the kill cannot race the end): the backup fails with a clear error naming the
# endpoint, the rerun completes reusing what was uploaded and restores identically, and
# every snapshot's trees are readable.
#
#   scripts/e2e-ceph.sh            (CAIRN_BIN overrides the binary; default: debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/cairn}
[ -x "$bin" ] || cargo build --locked
work=$(mktemp -d /var/tmp/cairn-e2e-ceph.XXXXXX)
port=${CEPH_RGW_PORT:-17480}
cleanup() { scripts/ceph-rgw.sh stop "$work/ceph" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
started=$(date +%s)
say() { echo "e2e-ceph [$(( $(date +%s) - started ))s]: $*"; }
fail() { echo "e2e-ceph: FAILED: $*" >&2; exit 1; }

start_ceph() { scripts/ceph-rgw.sh start "$work/ceph" "$port" 2>"$work/ceph-start.log" | grep '^export'; }
# The memstore OSD sometimes comes up without its cluster id on the first try ("wrong
# fsid" from the mon); a cluster that did not come up is started again from scratch.
for attempt in 1 2 3; do
  env_line=$(start_ceph) && break
  echo "e2e-ceph: ceph did not start (attempt $attempt): $(grep -m1 'failed at line' "$work/ceph-start.log")" >&2
  scripts/ceph-rgw.sh stop "$work/ceph" >/dev/null 2>&1 || true
  [ $attempt -lt 3 ] || fail "ceph did not start: $(tail -n 15 "$work/ceph-start.log")"
done
eval "$env_line"
say "ceph up in $(( $(date +%s) - started ))s"
export CAIRN_REPOSITORY="s3:$CAIRN_CEPH_ENDPOINT/cairn-e2e/nexus" CAIRN_PASSWORD=e2e CAIRN_CACHE_DIR="$work/cache"
c() { "$bin" --retries 2 --retry-timeout 5s --timeout 30s "$@"; }

c init --create-bucket --pack-size-mib 4 -q
python3 benches/compare/gen_corpus.py "$work/ops" 1 --scale 0.05
c backup -q "$work/ops"
head -c 20000000 /dev/urandom > "$work/stream.bin"
c backup -q --stdin --stdin-name harbor/registry.sql < "$work/stream.bin"
c restore -q "$(c snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')" --target "$work/out1"
diff -r "$work/ops" "$work/out1$work/ops" || fail "restore of the ops tree differs"
c restore -q latest:/harbor/registry.sql --target "$work/out2"
cmp "$work/stream.bin" "$work/out2/registry.sql" || fail "restore of the stream differs"
say "round trip of tree and stream: identical"

# Kill radosgw in the middle of a backup. The producer sends 100 MB, pauses (the backup
# is then certainly running, with those packs uploaded), and radosgw is killed before it
# sends the rest, so the failure cannot race the end of the backup.
head -c 200000000 /dev/urandom > "$work/big.bin"
c backup --stdin-from-command --stdin-name etcd/big.db -- \
  sh -c "head -c 100000000 '$work/big.bin'; sleep 10; tail -c +100000001 '$work/big.bin'" \
  > "$work/backup1.out" 2> "$work/backup1.err" &
pid=$!
sleep 7
scripts/ceph-rgw.sh kill-rgw "$work/ceph"
set +e; wait $pid; rc=$?; set -e
[ $rc -eq 1 ] || fail "backup with radosgw killed exited $rc, expected 1: $(tail -3 "$work/backup1.err")"
grep -q "127.0.0.1:$port" "$work/backup1.err" || fail "the error does not name the endpoint: $(cat "$work/backup1.err")"
say "killed radosgw: backup failed cleanly: $(grep -m1 "^error" "$work/backup1.err" | cut -c1-200)"
scripts/ceph-rgw.sh start-rgw "$work/ceph"
c backup --json --stdin-from-command --stdin-name etcd/big.db -- cat "$work/big.bin" > "$work/backup2.json"
added=$(tail -n1 "$work/backup2.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["bytes_added"])')
say "rerun added $added of 200000000 bytes"
[ "$added" -lt 110000000 ] || fail "rerun uploaded $added bytes: what was uploaded before the kill was not reused"
c restore -q latest:/etcd/big.db --target "$work/out3"
cmp "$work/big.bin" "$work/out3/big.db" || fail "restore after the rerun differs"
# Every snapshot's trees are reachable (the data of each was restored above).
for id in $(c snapshots --json | python3 -c 'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)]'); do
  c ls "$id" > /dev/null || fail "snapshot $id has unreadable trees"
done
# The killed backup left packs in no index: check lists them as unreferenced (not
# damage) and reads every pack; prune removes them and the forgotten data; everything
# kept still restores and checks clean.
c check --read-data -q || fail "check --read-data found damage after the killed backup"
c forget -q --keep-last 1 --group-by paths --prune --max-unused 0%
c check --read-data -q || fail "check --read-data found damage after forget --prune"
c restore -q latest:/etcd/big.db --target "$work/out4"
cmp "$work/big.bin" "$work/out4/big.db" || fail "restore after prune differs"
say "check --read-data, forget --prune, check again: clean"
say "passed in $(( $(date +%s) - started ))s"
