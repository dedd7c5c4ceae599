#!/usr/bin/env bash
# Side-by-side comparison of cairn with restic, Borg, rustic and bupstash on the same
# generated ops corpus, in one run, on this machine.
#
#   benches/compare/run.sh [--scale S] [--tools "cairn restic borg rustic bupstash"] [--out FILE]
#
# Steps per tool: first backup (day 1), days 2-5, an unchanged re-backup, a restore of
# the last snapshot into tmpfs, then CHECK_RUNS (default 1) full data checks per tool
# (cairn/restic/rustic `check --read-data`, borg `check --verify-data`), interleaved,
# then forget of the three oldest snapshots with a prune that repacks (not bupstash,
# which has no keep policy). Each step: wall time, CPU time, peak RSS (GNU time), and
# the repository size after it. All tools encrypt and use zstd level 3 (restic: its
# "auto" = zstd default level; Borg 1.2: zstd,3). Page cache is warm for every tool alike
# (the corpus is read once before the first tool runs), and dirty pages are flushed
# before every step. Restores, checks and prunes read the repositories cold: the page
# cache is dropped before each (when run as root), as after a disaster, and so that no
# tool reads from memory what another reads from disk (cairn writes its packs past the
# page cache).
#
# CAIRN_INIT_ARGS adds arguments to `cairn init` (e.g. chunk sizes). RESTORE_DIR restores
# somewhere else than tmpfs (benches/compare/restore_ext4.sh: a journaled ext4).
# Tools not installed are skipped with a note. Install: restic and borgbackup from
# Debian; `cargo install rustic-rs`; `cargo install bupstash` (needs libsodium-dev).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=1
tools="cairn restic borg rustic bupstash"
out=/dev/stdout
while [ $# -gt 0 ]; do
  case $1 in
    --scale) scale=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cairn=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$cairn" ] || (cd "$root" && cargo build --release --locked)

work=${WORK:-$(mktemp -d /var/tmp/cairn-compare.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work" /dev/shm/cairn-compare-restore' EXIT
corpus=$work/corpus
results=$work/results.csv
echo "tool,step,wall_s,cpu_s,peak_rss_mib,repo_bytes" > "$results"
export PW=bench-password

have() { command -v "$1" >/dev/null 2>&1; }

# --- per-tool commands -----------------------------------------------------------
t_init() {
  local t=$1
  local r=$work/repo-$t
  case $t in
    cairn) CAIRN_PASSWORD=$PW "$cairn" -q init --repo "$r" --cache-dir "$work/cache-$t" ${CAIRN_INIT_ARGS:-} ;;
    restic) RESTIC_PASSWORD=$PW restic -q init --repository-version 2 -r "$r" ;;
    borg) BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg init -e repokey-blake2 "$r" ;;
    rustic) RUSTIC_PASSWORD=$PW rustic -r "$r" --cache-dir "$work/cache-$t" init --set-compression 3 >/dev/null ;;
    bupstash) bupstash init -r "$r" && bupstash new-key -o "$work/bupstash.key" ;;
  esac
}
t_backup() {
  local t=$1 tag=$2
  local r=$work/repo-$t
  case $t in
    cairn) CAIRN_PASSWORD=$PW "$cairn" -q backup --repo "$r" --cache-dir "$work/cache-$t" "$corpus" ;;
    restic) RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$work/cache-$t restic -q backup --compression auto -r "$r" "$corpus" ;;
    borg) BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg create --compression zstd,3 "$r::$tag" "$corpus" ;;
    rustic) RUSTIC_PASSWORD=$PW rustic -r "$r" --cache-dir "$work/cache-$t" backup "$corpus" >/dev/null 2>&1 ;;
    bupstash) BUPSTASH_REPOSITORY=$r BUPSTASH_KEY=$work/bupstash.key bupstash put --compression zstd:3 name=$tag "$corpus" >/dev/null ;;
  esac
}
t_restore() {
  local t=$1 dest=$2
  local r=$work/repo-$t
  case $t in
    cairn) CAIRN_PASSWORD=$PW "$cairn" -q restore --repo "$r" --cache-dir "$work/cache-$t" latest --target "$dest" ;;
    restic) RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$work/cache-$t restic -q restore -r "$r" latest --target "$dest" ;;
    borg) (cd "$dest" && BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg extract "$r::$(BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg list --last 1 --short "$r")") ;;
    rustic) RUSTIC_PASSWORD=$PW rustic -r "$r" --cache-dir "$work/cache-$t" restore latest "$dest" >/dev/null 2>&1 ;;
    bupstash) BUPSTASH_REPOSITORY=$r BUPSTASH_KEY=$work/bupstash.key bupstash restore --into "$dest" name=day5b ;;
  esac
}

t_forget_prune() { # forget all but the 3 newest snapshots, then prune (repacking at 5% unused)
  local t=$1
  local r=$work/repo-$t
  case $t in
    cairn) CAIRN_PASSWORD=$PW "$cairn" -q forget --repo "$r" --cache-dir "$work/cache-$t" --keep-last 3 --prune ;;
    restic) RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$work/cache-$t restic -q forget -r "$r" --keep-last 3 --prune ;;
    borg) BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg prune --keep-last 3 "$r" &&
          BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg compact "$r" ;;
    # rustic by default only marks packs and removes them in a prune 23 hours later:
    # --instant-delete removes them now, as the others do.
    rustic) RUSTIC_PASSWORD=$PW rustic -r "$r" --cache-dir "$work/cache-$t" forget --keep-last 3 --prune --instant-delete >/dev/null 2>&1 ;;
    bupstash) echo "bupstash: no forget-by-policy step" >&2 ;;
  esac
}

t_check() { # full data check: every pack downloaded and every blob verified
  local t=$1
  local r=$work/repo-$t
  case $t in
    cairn) CAIRN_PASSWORD=$PW "$cairn" -q check --read-data --repo "$r" --cache-dir "$work/cache-$t" >/dev/null ;;
    restic) RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$work/cache-$t restic -q check --read-data -r "$r" >/dev/null ;;
    borg) BORG_PASSPHRASE=$PW BORG_BASE_DIR=$work/borgbase borg check --verify-data "$r" ;;
    rustic) RUSTIC_PASSWORD=$PW rustic -r "$r" --cache-dir "$work/cache-$t" check --read-data >/dev/null 2>&1 ;;
    bupstash) echo "note: bupstash has no data check step here" >&2 ;;
  esac
}

measure() { # tool step command...
  local t=$1 step=$2; shift 2
  local tf=$work/time.txt
  sync  # no tool pays for another's dirty pages being written back
  /usr/bin/time -o "$tf" -f "%e %U %S %M" "$@"
  read -r wall user sys rss < "$tf"
  local size
  size=$(du -sb "$work/repo-$t" | cut -f1)
  printf '%s,%s,%s,%.2f,%d,%s\n' "$t" "$step" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024)) "$size" >> "$results"
  printf '%-9s %-10s wall %6ss  cpu %6ss  rss %5d MiB  repo %.1f MB\n' "$t" "$step" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024)) "$(echo "scale=1; $size / 1000000" | bc)" >&2
}

cold() { # drop the page cache (root only; otherwise say so once)
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 > /proc/sys/vm/drop_caches
  elif [ -z "${warned_cold:-}" ]; then
    warned_cold=1
    echo "note: not root, restores, checks and prunes may read from the page cache" >&2
  fi
}

active=()
for t in $tools; do
  case $t in
    cairn) active+=(cairn) ;;
    *) if have "$t"; then active+=("$t"); else echo "note: $t not installed, skipped" >&2; fi ;;
  esac
done
export -f t_backup t_restore t_check t_forget_prune
export cairn work corpus

for t in "${active[@]}"; do t_init "$t" >/dev/null 2>&1; done
for day in 1 2 3 4 5; do
  python3 "$here/gen_corpus.py" "$corpus" "$day" --scale "$scale"
  find "$corpus" -type f -exec cat {} + > /dev/null  # warm the page cache for every tool alike
  [ "$day" = 1 ] && echo "corpus day 1: $(du -sh "$corpus" | cut -f1), $(find "$corpus" -type f | wc -l) files" >&2
  for t in "${active[@]}"; do measure "$t" "day$day" bash -c "t_backup $t day$day"; done
done
for t in "${active[@]}"; do measure "$t" "unchanged" bash -c "t_backup $t day5b"; done
for t in "${active[@]}"; do
  dest=${RESTORE_DIR:-/dev/shm/cairn-compare-restore}
  rm -rf "$dest"; mkdir -p "$dest"
  cold
  measure "$t" "restore" bash -c "t_restore $t $dest"
  rm -rf "$dest"
done
# Full data checks, CHECK_RUNS times each, tools interleaved (median in the table).
for run in $(seq 1 "${CHECK_RUNS:-1}"); do
  for t in "${active[@]}"; do
    [ "$t" = bupstash ] && continue
    cold
    measure "$t" "check$run" bash -c "t_check $t"
  done
done
# Six snapshots (days 1-5 and the unchanged one): forget the three oldest and prune.
for t in "${active[@]}"; do
  [ "$t" = bupstash ] && continue
  cold
  measure "$t" "forget-prune" bash -c "t_forget_prune $t"
done

{
  echo "| tool | step | wall s | CPU s | peak RSS MiB | repository after the step |"
  echo "| --- | --- | ---: | ---: | ---: | ---: |"
  tail -n +2 "$results" | while IFS=, read -r t step wall cpu rss size; do
    echo "| $t | $step | $wall | $cpu | $rss | $(echo "scale=1; $size / 1000000" | bc) MB |"
  done
} > "$out"
