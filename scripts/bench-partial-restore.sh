#!/usr/bin/env bash
# How much a restore of one file reads: a snapshot of 2 GiB of incompressible files plus
# one 100 MiB file, then `restore SNAP:/path/to/that/file` with --json; compares the
# bytes fetched from the repository with the file's stored size.
#
#   scripts/bench-partial-restore.sh [TOTAL_MIB]   (default 2048)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
total=${1:-2048}
cairn=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$cairn" ] || (cd "$root" && cargo build --release --locked)
work=$(mktemp -d /var/tmp/cairn-partial.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY=$work/repo CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$work/cache
"$cairn" -q init
mkdir -p "$work/src/other" "$work/src/db"
for i in $(seq 1 $((total / 64))); do
  head -c $((64 << 20)) /dev/urandom > "$work/src/other/f$i"
done
head -c $((100 << 20)) /dev/urandom > "$work/src/db/dump.bin"
"$cairn" -q backup "$work/src"
stored=$(du -sb "$work/repo/data" | cut -f1)
out=$("$cairn" restore --json "latest:$work/src/db/dump.bin" --target "$work/out")
cmp "$work/src/db/dump.bin" "$work/out/dump.bin"
fetched=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_fetched"])')
echo "repository data: $stored bytes; file: $((100 << 20)) bytes; fetched for it: $fetched bytes"
echo "fetched / file size = $(echo "scale=3; $fetched / $((100 << 20))" | bc)"
