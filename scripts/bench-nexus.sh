#!/usr/bin/env bash
# RPO/RTO figures for the Nexus recipe (docs/guides/nexus.md): a generated nexus-data
# (the comparison corpus's blob store: 10,000 .bytes/.properties pairs at scale 1;
# OrientDB-like database files; the export task's .bak files; search index; logs), a
# first backup, a "day" of changes (400 artifacts added and 100 deleted; the databases
# grown by 4% and 1% of their pages rewritten in place; a new export; new search index
# segments; logs grown), the second backup (in
# the scale-down variant, Nexus is down this long), and a restore into an empty
# directory. Every step runs RUNS times (default 3), each on a fresh repository and a
# freshly generated tree; the medians are printed.
#
#   scripts/bench-nexus.sh [SCALE]     (default 1: about 0.7 GB; CAIRN_BIN picks the binary)
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
scale=${1:-1}
trap 'rm -rf "$work"' EXIT
data=$work/nexus-data

# generate DAY: day 1 creates nexus-data, day 2 changes it as a day of use would.
generate() {
  python3 - "$data" "$1" "$scale" "$root/benches/compare" <<'PY'
import os, random, sys
data, day, scale, corpus = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sys.path.insert(0, corpus)
import gen_corpus
PAGE = 4096
def write(path, b, mode="wb"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(b)
def page(r):
    body = r.randbytes(PAGE // 2)
    return body + bytes(PAGE - len(body))
gen_corpus.write_nexus(os.path.join(data, "blobs", "default"), day, scale)
gen_corpus.write_logs(os.path.join(data, "log"), day, scale)
dbs = {"component": int(51_200 * scale), "config": int(2048 * scale), "security": 512}
for db, pages in dbs.items():
    path = os.path.join(data, "db", db, "asset.pcl")
    if day == 1:
        r = random.Random("db/" + db)
        write(path, b"".join(page(r) for _ in range(pages)))
    else:
        # New records appended (as many as the new artifacts, 4%), and index and
        # metadata pages updated in place (1%).
        r = random.Random("db/%s/%d" % (db, day))
        with open(path, "r+b") as f:
            for _ in range(pages // 100):
                f.seek(r.randrange(pages) * PAGE)
                f.write(page(r))
            f.seek(0, 2)
            f.write(b"".join(page(r) for _ in range(pages * 4 // 100)))
# The export: one .bak per database, compressed (so new bytes each day); the old set goes.
exports = os.path.join(data, "backup")
if os.path.isdir(exports):
    for f in os.listdir(exports):
        os.remove(os.path.join(exports, f))
for db, pages in dbs.items():
    r = random.Random("bak/%s/%d" % (db, day))
    write(os.path.join(exports, "%s-2026-11-%02d-01-00-3.70.1-02.bak" % (db, day)), r.randbytes(pages * PAGE // 4))
r = random.Random("es/%d" % day)
for i in range(4 if day > 1 else 20):
    write(os.path.join(data, "elasticsearch", "nexus", "nodes", "0", "indices", "seg_%d_%d" % (day, i)),
          r.randbytes(int(1_500_000 * scale)))
if day == 1:
    write(os.path.join(data, "etc", "nexus.properties"), b"application-port=8081\n")
    write(os.path.join(data, "keystores", "node", "node.ks"), random.Random("ks").randbytes(2000))
    write(os.path.join(data, "tmp", "jetty.tmp"), b"scratch")
    write(os.path.join(data, "cache", "bundle.cache"), b"cached")
PY
}

backup() {
  "$cairn" backup --json --tag nexus --exclude nexus-data/tmp --exclude nexus-data/cache \
    --exclude content/tmp "$data" >"$work/out.json"
}

b1=() b2=() read2=() added=() rto=()
for run in $(seq "$runs"); do
  rm -rf "$data" "$work/restore"
  generate 1
  repo_init "$work/repo"
  sync
  timed backup
  b1+=("$T")
  size1=$(summary_field "$(cat "$work/out.json")" total_bytes)
  generate 2
  sync
  timed backup
  b2+=("$T")
  out=$(cat "$work/out.json")
  read2+=("$(mb "$(summary_field "$out" bytes_read)")")
  added+=("$(mb "$(summary_field "$out" bytes_added)")")
  files2=$(summary_field "$out" files_new)+$(summary_field "$out" files_changed)
  sync
  timed "$cairn" restore -q latest --target "$work/restore"
  rto+=("$T")
  diff -r --exclude tmp --exclude cache "$data" "$work/restore$data" >/dev/null ||
    { echo "the restore differs from nexus-data" >&2; exit 1; }
  printf "run %d: backup day 1 %.2f s, day 2 %.2f s (%s MB read, %s MB added), restore %.2f s\n" \
    "$run" "${b1[-1]}" "${b2[-1]}" "${read2[-1]}" "${added[-1]}" "${rto[-1]}"
done
echo
echo "nexus-data at scale $scale: $(mb "$size1") MB on day 1, $(find "$data" -type f | wc -l) files; day 2 new or changed files: $((files2)); $runs runs"
report "first backup, s" "${b1[@]}"
report "backup after a day of changes (downtime), s" "${b2[@]}"
report "  read by it, MB" "${read2[@]}"
report "  stored by it, MB" "${added[@]}"
report "restore into an empty directory, s" "${rto[@]}"
