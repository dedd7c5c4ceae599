#!/usr/bin/env bash
# End-to-end suite against a three-node Garage cluster (replication 3) on 127.0.0.1
# (scripts/garage.sh): init detects that Garage ignores conditional writes; a backup of a
# generated ops tree and a stream; one node killed by PID in the middle of a backup (of a
# stream that pauses, so the kill cannot race the end), which completes on the two nodes
# left (or fails cleanly, and then a rerun completes); byte-identical restores;
# `check --read-data` clean; the node started again; check clean again.
#
# Not part of `.ci/run`: building Garage takes about 25 minutes here. The binary is
# cached in ~/.cache/cairn-garage (`scripts/garage.sh install`).
#
#   scripts/e2e-garage.sh         (CAIRN_BIN overrides the binary; default: debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/cairn}
[ -x "$bin" ] || cargo build --locked
scripts/garage.sh install
work=$(mktemp -d /var/tmp/cairn-e2e-garage.XXXXXX)
port=${GARAGE_PORT:-17900}
cleanup() { scripts/garage.sh stop "$work/garage" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
started=$(date +%s)
say() { echo "e2e-garage [$(( $(date +%s) - started ))s]: $*"; }
fail() { echo "e2e-garage: FAILED: $*" >&2; exit 1; }

eval "$(scripts/garage.sh start "$work/garage" "$port")"
say "three Garage nodes up, layout applied"
export CAIRN_REPOSITORY="s3:$CAIRN_GARAGE_ENDPOINT/cairn-e2e/repo" CAIRN_PASSWORD=e2e CAIRN_CACHE_DIR="$work/cache"
c() { "$bin" --s3-region garage --retries 3 --retry-timeout 10s --timeout 30s "$@"; }

c init --pack-size-mib 4 2>"$work/init.err" || fail "init: $(cat "$work/init.err")"
grep -q "conditional writes" "$work/init.err" ||
  fail "init did not notice that Garage ignores conditional writes: $(cat "$work/init.err")"
say "init: $(grep -m1 'conditional writes' "$work/init.err" | cut -c1-160)"

python3 benches/compare/gen_corpus.py "$work/ops" 1 --scale 0.05
c backup -q "$work/ops"
c restore -q latest --target "$work/out1"
diff -r "$work/ops" "$work/out1$work/ops" || fail "restore of the ops tree differs"
say "round trip of the ops tree: identical"

# Kill node 2 in the middle of a backup: 60 MB, a pause, 60 MB more.
head -c 120000000 /dev/urandom > "$work/big.bin"
set +e
c backup --json --stdin-from-command --stdin-name etcd/big.db -- \
  sh -c "head -c 60000000 '$work/big.bin'; sleep 6; tail -c +60000001 '$work/big.bin'" \
  > "$work/backup1.json" 2> "$work/backup1.err" &
pid=$!
sleep 4
scripts/garage.sh kill-node "$work/garage" 2
wait $pid; rc=$?
set -e
case $rc in
  0) say "node 2 killed mid-backup: the backup completed on the two nodes left" ;;
  1) grep -q "127.0.0.1" "$work/backup1.err" || fail "the error does not name the endpoint: $(cat "$work/backup1.err")"
     say "node 2 killed mid-backup: the backup failed cleanly: $(grep -m1 '^error' "$work/backup1.err" | cut -c1-200)"
     c backup -q --stdin-from-command --stdin-name etcd/big.db -- cat "$work/big.bin" ||
       fail "rerun with node 2 down failed"
     say "rerun with node 2 down completed" ;;
  *) fail "backup with node 2 killed exited $rc: $(tail -3 "$work/backup1.err")" ;;
esac
c restore -q latest:/etcd/big.db --target "$work/out2"
cmp "$work/big.bin" "$work/out2/big.db" || fail "restore with node 2 down differs"
c check --read-data -q || fail "check --read-data with node 2 down found damage"
say "with node 2 down: restore identical, check --read-data clean"

scripts/garage.sh start-node "$work/garage" 2
c restore -q latest:/etcd/big.db --target "$work/out3"
cmp "$work/big.bin" "$work/out3/big.db" || fail "restore after node 2 came back differs"
c backup -q "$work/ops"
c check --read-data -q || fail "check --read-data after node 2 came back found damage"
say "node 2 back: backup, check --read-data, restore: clean"
say "passed in $(( $(date +%s) - started ))s"
