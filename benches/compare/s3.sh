#!/usr/bin/env bash
# cairn and restic backing up to and restoring from the same S3 server on loopback
# (s3s-fs, examples/s3_server.rs), and cairn backing up to a local repository, in one run.
#
#   benches/compare/s3.sh [--scale S]
#
# Reports wall time, peak RSS, and for cairn the requests made: objects written per GiB
# stored and GET requests per GiB restored.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=${2:-1}
cd "$root"
cargo build --release --locked --example s3_server
bin=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d /var/tmp/cairn-s3bench.XXXXXX)
port=19000
"$root/target/release/examples/s3_server" "$work/s3" $port benchkey benchsecret 2>/dev/null &
server=$!
trap 'kill $server; rm -rf "$work" /dev/shm/cairn-s3bench-out' EXIT
sleep 1
mkdir -p "$work/s3/cairn-bench" "$work/s3/restic-bench"
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret CAIRN_PASSWORD=pw RESTIC_PASSWORD=pw
python3 "$here/gen_corpus.py" "$work/corpus" 1 --scale "$scale"
find "$work/corpus" -type f -exec cat {} + > /dev/null
size=$(du -sb "$work/corpus" | cut -f1)
echo "corpus: $((size / 1000000)) MB"
m() { sync; /usr/bin/time -o "$work/t" -f "%e %M" "$@"; read -r wall rss < "$work/t"; printf '%-34s wall %6ss  rss %4d MiB\n' "$label" "$wall" $((rss / 1024)); }

"$bin" -q init --repo "$work/local" --cache-dir "$work/c-local"
label="cairn backup, local repository"; m "$bin" -q backup --repo "$work/local" --cache-dir "$work/c-local" "$work/corpus"
R=s3:http://127.0.0.1:$port/cairn-bench/repo
"$bin" -q init --repo $R --cache-dir "$work/c-s3"
label="cairn backup, S3"; m sh -c "'$bin' --json backup --repo $R --cache-dir '$work/c-s3' '$work/corpus' | tail -n1 > '$work/b.json'"
export AWS_DEFAULT_REGION=us-east-1
RR=s3:http://127.0.0.1:$port/restic-bench/repo
restic -q init --repository-version 2 -r $RR >/dev/null
label="restic backup, S3"; m restic -q backup --compression auto -r $RR "$work/corpus"
stored=$(du -sb "$work/s3/cairn-bench" | cut -f1)
python3 - "$work/b.json" "$stored" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); stored = int(sys.argv[2])
r = d["requests"]; gib = stored / 2**30
print(f"cairn backup to S3: {r['puts']} PUTs, {r['gets']} GETs, {r['other']} other; {stored/1e6:.1f} MB stored; {r['puts']/gib:.1f} objects written per GiB stored")
PY
rm -rf /dev/shm/cairn-s3bench-out
label="cairn restore, S3"; m sh -c "'$bin' --json restore --repo $R --cache-dir '$work/c-s3' latest --target /dev/shm/cairn-s3bench-out > '$work/r.json'"
python3 - "$work/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
gib = d["bytes_written"] / 2**30
print(f"cairn restore from S3: {d['requests']} range GETs for {d['bytes_written']/1e6:.1f} MB restored; {d['requests']/gib:.1f} GETs per GiB restored")
PY
rm -rf /dev/shm/cairn-s3bench-out
label="restic restore, S3"; m restic -q restore -r $RR latest --target /dev/shm/cairn-s3bench-out
