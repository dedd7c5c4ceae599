#!/usr/bin/env bash
# Reading one large file through `cairn mount` (cat into tmpfs) against `cairn restore`
# of the same file (into tmpfs): the median of 3 runs of each, repository and cache on
# tmpfs too, so both measure cairn rather than a disk. Each mount run mounts afresh, so
# no run reads from the page cache. Needs /dev/fuse and fusermount3 (fuse3).
# Usage: scripts/bench-mount.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
bin=${CAIRN_BIN:-${CARGO_TARGET_DIR:-target}/release/cairn}
[ -x "$bin" ] || cargo build --release --locked
bin=$(realpath "$bin")
work=$(mktemp -d /dev/shm/cairn-mount.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
  mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -u -z "$work/mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$work/cache"
mkdir "$work/src" "$work/mnt"
# Incompressible, non-repeating input: AES-CTR keystream via openssl when present.
if command -v openssl >/dev/null; then
  head -c $((size_mib << 20)) < /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:cairn 2>/dev/null > "$work/src/big.bin"
else
  head -c $((size_mib << 20)) /dev/urandom > "$work/src/big.bin"
fi
"$bin" init -q
"$bin" backup -q "$work/src"
secs() { echo "scale=2; ($2 - $1) / 1000000000" | bc; }
median() { sort -n | sed -n 2p; }

restore_runs=()
for _ in 1 2 3; do
  rm -rf "$work/out"
  t0=$(date +%s%N)
  "$bin" restore -q latest:"$work/src/big.bin" --target "$work/out"
  t1=$(date +%s%N)
  restore_runs+=("$(secs "$t0" "$t1")")
done

mount_runs=()
for i in 1 2 3; do
  "$bin" mount -q "$work/mnt" > "$work/mount.log" &
  pid=$!
  for _ in $(seq 100); do mountpoint -q "$work/mnt" && [ -d "$work/mnt/latest/" ] && break; sleep 0.1; done
  rm -f "$work/cat.bin"
  t0=$(date +%s%N)
  cat "$work/mnt/latest$work/src/big.bin" > "$work/cat.bin"
  t1=$(date +%s%N)
  mount_runs+=("$(secs "$t0" "$t1")")
  [ "$i" = 1 ] && cmp "$work/src/big.bin" "$work/cat.bin"
  kill -TERM "$pid"
  wait "$pid"
  pid=""
done

r=$(printf '%s\n' "${restore_runs[@]}" | median)
m=$(printf '%s\n' "${mount_runs[@]}" | median)
echo "file: $size_mib MiB; runs (s): restore ${restore_runs[*]}; mount ${mount_runs[*]}"
echo "restore: $r s ($(echo "scale=0; $size_mib / $r" | bc) MiB/s)"
echo "cat through mount: $m s ($(echo "scale=0; $size_mib / $m" | bc) MiB/s)"
echo "mount / restore speed: $(echo "scale=2; $r / $m" | bc)"
