#!/usr/bin/env bash
# Peak RSS of `cairn backup` of one large file (default 4 GiB of incompressible data),
# and of its restore. Usage: scripts/bench-memory.sh [SIZE_GIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_gib=${1:-4}
bin=${CAIRN_BIN:-target/release/cairn}
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-mem.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$work/cache"
mkdir "$work/src"
# Incompressible, non-repeating input: AES-CTR keystream via openssl when present, else urandom.
if command -v openssl >/dev/null; then
  head -c $((size_gib << 30)) < /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:cairn 2>/dev/null > "$work/src/big.bin"
else
  head -c $((size_gib << 30)) /dev/urandom > "$work/src/big.bin"
fi
$bin init -q
measure() { /usr/bin/time -f "%M %e" "$@" 2>&1 >/dev/null | tail -1; }
read -r rss secs < <(measure $bin backup -q "$work/src")
echo "backup of ${size_gib} GiB file: peak RSS $((rss / 1024)) MiB, ${secs} s, $(echo "scale=1; $size_gib * 1024 / $secs" | bc) MiB/s"
rm -rf "$work/out"
read -r rss secs < <(measure $bin restore -q latest --target "$work/out")
echo "restore of ${size_gib} GiB file: peak RSS $((rss / 1024)) MiB, ${secs} s"
cmp "$work/src/big.bin" "$work/out$work/src/big.bin" && echo "restore is byte-identical"
