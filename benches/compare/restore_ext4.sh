#!/usr/bin/env bash
# The side-by-side comparison with restores into a freshly made, journaled ext4 on a
# loop device instead of tmpfs (the machine's root ext4 has no journal, where creating
# many files soon after deleting many is slow and erratic).
#
#   benches/compare/restore_ext4.sh [run.sh arguments]     (needs root for mount)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
img=$(mktemp /var/tmp/cairn-ext4.XXXXXX.img)
mnt=$(mktemp -d /var/tmp/cairn-ext4-mnt.XXXXXX)
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$img" "$mnt"; }
trap cleanup EXIT
truncate -s 6G "$img"
mkfs.ext4 -q -F -O has_journal "$img"
mount -o loop "$img" "$mnt"
RESTORE_DIR="$mnt/restore" "$here/run.sh" "$@"
