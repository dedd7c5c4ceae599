#!/usr/bin/env bash
# Structure check of a repository with many snapshots of a large tree (docs/benchmarks.md,
# "Verification"): FILES files in 100-file directories, one real backup, then SNAPSHOTS-1
# more snapshots written by examples/many_snapshots.rs, each changing 3 files (trees
# along the changed paths are new, everything else is shared). Times `cairn check`.
#
#   scripts/bench-check-structure.sh [SNAPSHOTS] [FILES]     (defaults 1000 20000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
snapshots=${1:-1000}
files=${2:-20000}
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release --locked --bin cairn --example many_snapshots)
cairn=$target/release/cairn
work=$(mktemp -d /var/tmp/cairn-check-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$work/cache
python3 - "$work/src" "$files" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:02d}", f"s{(i // 100) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(rng.randbytes(rng.randint(100, 4000)))
PY
"$cairn" -q init --repo "$work/repo" --kdf-memory-kib 1024
"$cairn" -q backup --repo "$work/repo" "$work/src"
"$target/release/examples/many_snapshots" "$work/repo" $((snapshots - 1)) 3
echo "repository: $(du -sh "$work/repo" | cut -f1), $(ls "$work/repo/snapshots" | wc -l) snapshots, $(find "$work/repo/data" -type f | wc -l) packs" >&2
for run in 1 2 3; do
  /usr/bin/time -f "check run $run: %e s wall, %U+%S s CPU, %M KiB peak RSS" \
    "$cairn" -q check --repo "$work/repo" >/dev/null
done
