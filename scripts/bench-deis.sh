#!/usr/bin/env bash
# RPO/RTO figures for the Deis recipe (docs/guides/deis-store.md): a generated store
# volume (34 component and application logs) and a mirrored view of the `db_wal` (WAL-E
# base backup and WAL segments) and `registry` buckets, each backed up as its own
# snapshot; then a "day": every log grows by 15%, 96 new WAL segments (one per quarter
# hour), 20 new image layers; both backed up again, and both restored into empty
# directories. The `s3cmd sync` that keeps the mirror is not measured (no Deis gateway
# here). Every step runs RUNS times (default 3) on a fresh repository and tree.
#
#   scripts/bench-deis.sh [SCALE]     (default 1: about 0.8 GB; CAIRN_BIN picks the binary)
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
scale=${1:-1}
trap 'rm -rf "$work"' EXIT
store=$work/var/lib/deis/store
views=$work/var/lib/cairn-views/deis

# generate DAY: day 1 creates both trees, day 2 changes them as a day of use would.
generate() {
  python3 - "$store" "$views" "$1" "$scale" <<'PY'
import os, random, sys
store, views, day, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def write(path, b, mode="wb"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(b)
logs = ["deis-registry", "deis-controller", "deis-builder", "deis-router"] + ["app-%02d" % i for i in range(30)]
for n, name in enumerate(logs):
    r = random.Random("%s/%d" % (name, day))
    full = int((40_000_000 if n < 4 else 1_400_000) * scale)
    size = full if day == 1 else full * 15 // 100
    lines, total, i = [], 0, r.randrange(10**6)
    while total < size:
        i += 1
        line = ("2026-11-%02dT%02d:%02d:%02dZ %s[%d]: 10.2.%d.%d - - \"GET /v1/images/%016x/layer HTTP/1.1\" %d %d %.3f\n"
                % (day, i // 3600 % 24, i // 60 % 60, i % 60, name, r.randrange(9), r.randrange(8), r.randrange(250),
                   r.getrandbits(64), r.choice((200, 200, 200, 304, 404)), r.randrange(10**6), r.random()))
        lines.append(line)
        total += len(line)
    write(os.path.join(store, "logs", name + ".log"), "".join(lines).encode(), "ab")
base = "db_wal/basebackups_005/base_000000010000000000000002_00000040"
if day == 1:
    r = random.Random("base")
    for p in range(4):
        write(os.path.join(views, base, "tar_partitions", "part_%08d.tar.lzo" % p), r.randbytes(int(25_000_000 * scale)))
    write(os.path.join(views, base, "extended_version.txt"), b"9.4.4\n")
    write(os.path.join(views, base + "_backup_stop_sentinel.json"), b'{"wal_segment_backup_stop": "000000010000000000000002"}')
r = random.Random("wal/%d" % day)
for s in range(2 + (day - 1) * 96, 2 + day * 96):
    write(os.path.join(views, "db_wal", "wal_005", "%024X.lzo" % s), r.randbytes(int(r.uniform(0.3, 1.7) * 1_000_000 * scale)))
r = random.Random("registry/%d" % day)
for i in range(300 if day == 1 else 20):
    image = "%064x" % r.getrandbits(256)
    write(os.path.join(views, "registry", "images", image, "layer"), r.randbytes(int(r.paretovariate(1.5) * 400_000 * scale)))
    write(os.path.join(views, "registry", "images", image, "json"), b'{"os":"linux","id":"%s"}' % image.encode())
    write(os.path.join(views, "registry", "repositories", "library", "app-%02d" % (i % 30), "tag_v%d_%d" % (day, i)), image.encode())
PY
}

backup() { # TAG PATH
  "$cairn" backup --json --tag "$1" "$2" >"$work/out-$1.json"
}
both() { backup deis-store "$store" && backup deis-buckets "$views"; }

b1=() b2=() added=() read2=() rto=() store_rto=() views_rto=()
for run in $(seq "$runs"); do
  rm -rf "$work/var" "$work/restore"
  generate 1
  repo_init "$work/repo"
  sync
  timed both
  b1+=("$T")
  day1=$(( $(summary_field "$(cat "$work/out-deis-store.json")" total_bytes) + $(summary_field "$(cat "$work/out-deis-buckets.json")" total_bytes) ))
  generate 2
  sync
  timed both
  b2+=("$T")
  s=$(cat "$work/out-deis-store.json")
  v=$(cat "$work/out-deis-buckets.json")
  read2+=("$(mb $(( $(summary_field "$s" bytes_read) + $(summary_field "$v" bytes_read) )))")
  added+=("$(mb $(( $(summary_field "$s" bytes_added) + $(summary_field "$v" bytes_added) )))")
  sync
  ids=$("$cairn" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(x["id"] for x in s[-2:]))')
  timed "$cairn" restore -q "${ids%% *}:$store" --target "$work/restore/store"
  store_rto+=("$T")
  timed "$cairn" restore -q "${ids##* }:$views" --target "$work/restore/views"
  views_rto+=("$T")
  rto+=("$(echo "${store_rto[-1]} + ${views_rto[-1]}" | bc)")
  diff -r "$store" "$work/restore/store" >/dev/null && diff -r "$views" "$work/restore/views" >/dev/null ||
    { echo "the restore differs" >&2; exit 1; }
  printf "run %d: backups day 1 %.2f s, day 2 %.2f s (%s MB read, %s MB added), restore %.2f s\n" \
    "$run" "${b1[-1]}" "${b2[-1]}" "${read2[-1]}" "${added[-1]}" "${rto[-1]}"
done
echo
echo "deis at scale $scale: $(mb "$day1") MB on day 1 (store volume and bucket views); $runs runs"
report "first backups (store volume, then buckets), s" "${b1[@]}"
report "backups after a day of changes, s" "${b2[@]}"
report "  read by them, MB" "${read2[@]}"
report "  stored by them, MB" "${added[@]}"
report "restore: store volume, s" "${store_rto[@]}"
report "restore: bucket views, s" "${views_rto[@]}"
report "restore, both, s" "${rto[@]}"
