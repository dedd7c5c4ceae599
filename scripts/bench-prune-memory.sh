#!/usr/bin/env bash
# Peak RSS of `cairn prune` as the repository grows. A tree of FILES files of about 20
# bytes each (one blob each) is backed up, then ROUNDS times half of the files get new
# contents and are backed up again, so each round adds FILES/2 blobs; after each round
# `prune --dry-run` is measured. At the end all snapshots but the last are forgotten and
# a real prune is measured. Usage: scripts/bench-prune-memory.sh [FILES] [ROUNDS]
# (defaults 300000 and 3). Binaries to compare: CAIRN_BINS="a=path b=path" (the last
# one prunes the repository for real at the end, and checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-300000}
rounds=${2:-3}
bins=${CAIRN_BINS:-now=target/release/cairn}
[ -x target/release/cairn ] || cargo build --release --locked
work=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-prunemem.XXXXXX")
[ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$work"' EXIT
export CAIRN_PASSWORD=bench
gen() { # gen ROUND: file k holds "file k k*7919", with the round appended when k is even
  python3 - "$work/src" "$files" "$1" <<'PY'
import os, sys
root, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range((n + 999) // 1000):
    p = os.path.join(root, f"d{d:05}")
    os.makedirs(p, exist_ok=True)
    for i in range(min(1000, n - d * 1000)):
        k = d * 1000 + i
        if r > 0 and k % 2:
            continue
        with open(os.path.join(p, f"f{i}"), "w") as f:
            f.write(f"file {k} {k * 7919}{' r' + str(r) if r else ''}\n")
PY
}
measure() { /usr/bin/time -f "%M %e" "$@" 2>&1 >/dev/null | tail -1; }
first=${bins%% *}
first=${first#*=}
last=${bins##* }
last=${last#*=}
export CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"
"$first" init -q --kdf-memory-kib 64
echo "blobs | binary | prune --dry-run peak RSS (MiB) | seconds"
for r in $(seq 0 "$rounds"); do
  gen "$r"
  "$first" backup -q "$work/src"
  blobs=$((files + r * files / 2))
  for b in $bins; do
    read -r rss secs < <(measure "${b#*=}" prune --dry-run)
    echo "$blobs | ${b%%=*} | $((rss / 1024)) | $secs"
  done
done
"$first" forget -q --keep-last 1
cp -a "$work/repo" "$work/repo.before"
echo "blobs | binary | prune (forgot all but the last snapshot) peak RSS (MiB) | seconds"
for b in $bins; do
  rm -rf "$work/repo" "$work/cache"
  cp -a "$work/repo.before" "$work/repo"
  read -r rss secs < <(measure "${b#*=}" prune)
  echo "$((files + rounds * files / 2)) | ${b%%=*} | $((rss / 1024)) | $secs"
done
rm -rf "$work/repo" "$work/cache"
cp -a "$work/repo.before" "$work/repo"
"$last" prune -q
"$last" check -q --read-data
echo "check --read-data after a prune by $last: no damage found"
