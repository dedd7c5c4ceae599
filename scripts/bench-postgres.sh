#!/usr/bin/env bash
# RPO/RTO figures for the Harbor/PostgreSQL recipe: a pgbench database on a throwaway
# PostgreSQL on 127.0.0.1, a first backup of `pg_dump`, a "day" of pgbench changes, the
# second backup, and a restore with `cairn dump | psql` into a fresh database.
#
#   scripts/bench-postgres.sh [SCALE]     (pgbench scale, default 20: 2 million accounts)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scale=${1:-20}
cairn=${CAIRN_BIN:-$root/target/release/cairn}
[ -x "$cairn" ] || (cd "$root" && cargo build --release --locked)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /var/tmp/cairn-pg.XXXXXX)
chmod 755 "$work"
mkdir "$work/data"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$work/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$bin/initdb" -A trust -U postgres --no-sync -D "$work/data" >/dev/null
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/data/log" -w \
  -o "-p $port -k $work/data -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1; rm -rf "$work"' EXIT
conn=(-h 127.0.0.1 -p "$port" -U postgres)
"$bin/createdb" "${conn[@]}" registry
"$bin/pgbench" "${conn[@]}" -q -i -s "$scale" registry 2>/dev/null
export CAIRN_REPOSITORY=$work/repo CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$work/cache
"$cairn" -q init
t() { local s; s=$(date +%s.%N); "$@"; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
backup() {
  "$cairn" backup --json --stdin-from-command --stdin-name harbor/registry.sql -- \
    "$bin/pg_dump" "${conn[@]}" -d registry | tail -n1
}
s=$(date +%s.%N); first=$(backup); t1=$(echo "$(date +%s.%N) - $s" | bc)
"$bin/pgbench" "${conn[@]}" -n -c 2 -T 30 registry >/dev/null 2>&1
s=$(date +%s.%N); second=$(backup); t2=$(echo "$(date +%s.%N) - $s" | bc)
"$bin/createdb" "${conn[@]}" restored
s=$(date +%s.%N)
"$cairn" dump latest:/harbor/registry.sql | "$bin/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d restored >/dev/null
t3=$(echo "$(date +%s.%N) - $s" | bc)
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['summary'][sys.argv[2]])" "$1" "$2"; }
echo "dump size: $(field "$first" bytes_read) bytes"
echo "first backup: ${t1} s, $(field "$first" bytes_added) bytes stored"
echo "after 30 s of pgbench: backup ${t2} s, $(field "$second" bytes_added) bytes added"
echo "restore with dump | psql into a fresh database: ${t3} s"
