#!/usr/bin/env bash
# cairn and restic backing up to and restoring from the same S3 server on loopback, and
# cairn backing up to a local repository, in one run, RUNS times (fresh repositories each
# run, the tools interleaved); medians at the end.
#
#   benches/compare/s3.sh [--scale S] [--server s3s-fs|garage] [--runs N]
#
# Servers: s3s-fs (examples/s3_server.rs, file-backed, one process) or a three-node
# Garage cluster with replication 3 (scripts/garage.sh; built once, about 25 minutes).
# Either shares the 2 cores with the client. Reports wall time, CPU time of the client,
# peak RSS, and for cairn the requests made: objects written per GiB stored and GET
# requests per GiB restored.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=1
server=s3s-fs
runs=1
while [ $# -gt 0 ]; do
  case $1 in
    --scale) scale=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$root"
bin=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d /var/tmp/cairn-s3bench.XXXXXX)
out=/dev/shm/cairn-s3bench-out
case $server in
  s3s-fs)
    cargo build --release --locked --example s3_server
    port=19000
    "$root/target/release/examples/s3_server" "$work/s3" $port benchkey benchsecret 2>/dev/null &
    pid=$!
    trap 'kill $pid; rm -rf "$work" $out' EXIT
    sleep 1
    bucket=cairn-bench
    mkdir -p "$work/s3/$bucket"
    export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
    endpoint=http://127.0.0.1:$port
    ;;
  garage)
    trap '"$root/scripts/garage.sh" stop "$work/garage"; rm -rf "$work" $out' EXIT
    eval "$("$root/scripts/garage.sh" start "$work/garage" 19100)"
    bucket=cairn-e2e
    endpoint=$CAIRN_GARAGE_ENDPOINT
    export AWS_DEFAULT_REGION=garage
    ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
esac
export CAIRN_PASSWORD=pw RESTIC_PASSWORD=pw
python3 "$here/gen_corpus.py" "$work/corpus" 1 --scale "$scale"
find "$work/corpus" -type f -exec cat {} + > /dev/null
size=$(du -sb "$work/corpus" | cut -f1)
echo "server: $server; corpus: $((size / 1000000)) MB; runs: $runs"
results=$work/results.txt
: > "$results"
m() { # label command...
  sync
  /usr/bin/time -o "$work/t" -f "%e %U %S %M" "$@"
  read -r wall user sys rss < "$work/t"
  printf '%-32s wall %6ss  cpu %6.2fs  rss %4d MiB\n' "$label" "$wall" "$(awk "BEGIN{print $user + $sys}")" $((rss / 1024))
  echo "$label|$wall|$rss" >> "$results"
}
c() { "$bin" --s3-region "$AWS_DEFAULT_REGION" "$@"; }

for run in $(seq "$runs"); do
  echo "--- run $run"
  c -q init --repo "$work/local$run" --cache-dir "$work/c-local$run"
  label="cairn backup, local"; m "$bin" -q backup --repo "$work/local$run" --cache-dir "$work/c-local$run" "$work/corpus"
  R=s3:$endpoint/$bucket/cairn$run
  c -q init --repo "$R" --cache-dir "$work/c-s3$run" 2>/dev/null
  label="cairn backup, S3"; m sh -c "'$bin' --s3-region $AWS_DEFAULT_REGION --json backup --repo $R --cache-dir '$work/c-s3$run' '$work/corpus' | tail -n1 > '$work/b.json'"
  RR=s3:$endpoint/$bucket/restic$run
  restic -q init --repository-version 2 -r "$RR" >/dev/null
  label="restic backup, S3"; m restic -q backup --compression auto -r "$RR" "$work/corpus"
  python3 - "$work/b.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); r = d["requests"]; stored = d["summary"]["bytes_added"]
print(f"  cairn backup: {r['puts']} PUT/POSTs, {r['gets']} GETs, {r['other']} other; {stored/1e6:.1f} MB of blobs stored; {r['puts']/(stored/2**30):.1f} objects written per GiB")
PY
  rm -rf $out
  label="cairn restore, S3"; m sh -c "'$bin' --s3-region $AWS_DEFAULT_REGION --json restore --repo $R --cache-dir '$work/c-s3$run' latest --target $out > '$work/r.json'"
  python3 - "$work/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); gib = d["bytes_written"] / 2**30
print(f"  cairn restore: {d['requests']} range GETs for {d['bytes_written']/1e6:.1f} MB restored; {d['requests']/gib:.1f} GETs per GiB")
PY
  rm -rf $out
  label="restic restore, S3"; m restic -q restore -r "$RR" latest --target $out
  rm -rf $out
done

echo "--- medians over $runs run(s)"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, wall, rss = line.strip().split("|")
    rows.setdefault(label, []).append((float(wall), int(rss) // 1024))
med = {k: statistics.median(w for w, _ in v) for k, v in rows.items()}
for k, v in rows.items():
    print(f"{k:32s} median {med[k]:6.2f}s  runs {' '.join(f'{w:.2f}' for w, _ in v)}  rss {'/'.join(str(r) for _, r in v)} MiB")
local, s3, rs3 = med["cairn backup, local"], med["cairn backup, S3"], med["restic backup, S3"]
print(f"backup to S3 / local throughput: {local / s3:.2f}; cairn vs restic backup to S3: {rs3 / s3:.2f}x")
print(f"cairn vs restic restore from S3: {med['restic restore, S3'] / med['cairn restore, S3']:.2f}x")
PY
