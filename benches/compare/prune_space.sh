#!/usr/bin/env bash
# Space after pruning: back up the five days of the comparison corpus, forget all but the
# last snapshot, prune with --max-unused 0%, and compare the repository's size with a
# fresh repository holding one backup of the last day.
#
#   benches/compare/prune_space.sh [--scale S]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=1
[ "${1:-}" = --scale ] && scale=$2
cairn=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$cairn" ] || (cd "$root" && cargo build --release --locked)
work=$(mktemp -d /var/tmp/cairn-prune-space.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CAIRN_PASSWORD=bench-password
c() { "$cairn" -q --cache-dir "$work/cache" "$@"; }
c init --repo "$work/repo"
for day in 1 2 3 4 5; do
  python3 "$here/gen_corpus.py" "$work/corpus" "$day" --scale "$scale"
  c backup --repo "$work/repo" "$work/corpus"
done
before=$(du -sb "$work/repo" | cut -f1)
/usr/bin/time -f "forget --keep-last 1 --prune --max-unused 0%%: %e s, peak RSS %M KiB" \
  "$cairn" -q --cache-dir "$work/cache" forget --repo "$work/repo" --keep-last 1 --prune --max-unused 0%
after=$(du -sb "$work/repo" | cut -f1)
c init --repo "$work/fresh"
c backup --repo "$work/fresh" "$work/corpus"
fresh=$(du -sb "$work/fresh" | cut -f1)
echo "five days: $before bytes; after forget + prune: $after bytes; fresh backup of day 5: $fresh bytes"
echo "after / fresh = $(echo "scale=4; $after / $fresh" | bc)"
