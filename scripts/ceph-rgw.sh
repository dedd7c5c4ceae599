#!/usr/bin/env bash
# A one-node Ceph (one mon, one memstore OSD, radosgw) on 127.0.0.1 for end-to-end tests.
#
#   scripts/ceph-rgw.sh start DIR [PORT]   install if needed, start, print env to source
#   scripts/ceph-rgw.sh stop DIR
#   scripts/ceph-rgw.sh kill-rgw DIR       kill radosgw by PID (fault injection)
#   scripts/ceph-rgw.sh start-rgw DIR      start radosgw again
#
# memstore keeps objects in the OSD's memory: restart radosgw (stateless), never the OSD.
# Authentication inside the cluster is off; radosgw still checks S3 SigV4 signatures.
set -euo pipefail
cmd=${1:?usage: ceph-rgw.sh start|stop|kill-rgw|start-rgw DIR [PORT]}
dir=${2:?directory}
port=${3:-$(cat "$dir/port" 2>/dev/null || echo 7480)}
mon_port=$((port + 1))
conf=$dir/ceph.conf
export CEPH_CONF=$conf
access=cairnceph
secret=cairncephsecretkey0123456789

install() {
  command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null && return
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ceph-mon ceph-osd radosgw >/dev/null
}

wait_for() { # seconds command...
  local n=$1; shift
  for _ in $(seq $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

start_rgw() {
  radosgw -c "$conf" -n client.rgw.gw --pid-file "$dir/run/rgw.pid" >/dev/null 2>&1
  wait_for 30 curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "radosgw did not start; see $dir/log" >&2; exit 1; }
}

case $cmd in
start)
  trap 'echo "ceph-rgw.sh: failed at line $LINENO: $BASH_COMMAND" >&2; tail -n 5 "$dir"/log/*.log >&2 2>/dev/null' ERR
  install
  rm -rf "$dir"; mkdir -p "$dir"/{run,log,mon,osd/ceph-0,rgw}
  echo "$port" > "$dir/port"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat > "$conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 4294967296
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
keyring = /dev/null
[client.rgw.gw]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $dir/rgw
CONF
  monmaptool --create --add a v1:127.0.0.1:$mon_port --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" -i a
  wait_for 20 ceph -c "$conf" --connect-timeout 2 mon stat
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd=$(ceph -c "$conf" osd create "$osd_uuid")
  ceph-osd -c "$conf" -i "$osd" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
  ceph-osd -c "$conf" -i "$osd"
  wait_for 30 sh -c "ceph -c '$conf' osd stat | grep -q '1 up'"
  start_rgw
  radosgw-admin -c "$conf" user create --uid=cairn --display-name=cairn \
    --access-key="$access" --secret="$secret" >/dev/null
  echo "export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret CAIRN_CEPH_ENDPOINT=http://127.0.0.1:$port"
  ;;
stop)
  for p in "$dir"/run/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  pkill -f -- "-c $conf" 2>/dev/null || true
  wait_for 10 sh -c "! pgrep -f -- '-c $conf' >/dev/null" || pkill -9 -f -- "-c $conf" 2>/dev/null || true
  ;;
kill-rgw)
  kill -9 "$(cat "$dir/run/rgw.pid")"
  ;;
start-rgw)
  start_rgw
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
