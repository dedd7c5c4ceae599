# Shared by the recipe benchmarks (bench-etcd.sh, bench-nexus.sh, bench-deis.sh): the
# binary, a work directory, wall-clock timing, and medians of RUNS runs (default 3).
# Source it; it sets `root`, `cairn`, `runs` and `work`.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cairn=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$cairn" ] || (cd "$root" && cargo build --release --locked)
runs=${RUNS:-3}
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cairn-bench.XXXXXX")
chmod 755 "$work"

# timed CMD...: run CMD; its wall time in seconds is left in $T.
timed() {
  local s
  s=$(date +%s.%N)
  "$@"
  T=$(echo "$(date +%s.%N) - $s" | bc)
}

# median X...: the middle value (the lower middle for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]}'; }

# mb BYTES: megabytes with one decimal.
mb() { echo "scale=1; $1 / 1000000" | bc; }

# summary_field JSON_LINES FIELD: a field of `backup --json`'s summary (its last line).
summary_field() { tail -n1 <<<"$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"][sys.argv[1]])' "$2"; }

# repo_init DIR: a fresh repository in DIR, used by the cairn commands after it.
repo_init() {
  export CAIRN_REPOSITORY=$1 CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$1.cache
  rm -rf "$1" "$1.cache"
  "$cairn" -q init
}

# report NAME VALUE...: one line with the median and every run.
report() {
  local name=$1
  shift
  printf '%-52s median %8s   runs: %s\n' "$name" "$(median "$@")" "$*"
}
