#!/usr/bin/env bash
# The main job on a fresh machine: build cairn, back up this source tree into a new local
# repository, restore it, and prove the restore is byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
bin=target/release/cairn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD="demo-password" CAIRN_CACHE_DIR="$work/cache"
src="$PWD/src"
$bin init
$bin backup "$src" docs README.md --tag demo
$bin backup "$src" docs README.md --tag demo   # unchanged: adds almost nothing
$bin snapshots
$bin restore latest --target "$work/restore"
diff -r "$src" "$work/restore$src"
echo "demo: restore of $src is byte-identical"
