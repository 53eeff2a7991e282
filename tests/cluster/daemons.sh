#!/usr/bin/env bash
# tests/cluster/daemons.sh start N [CLUSTER] [--etcd 1|3] DIR | stop [CLUSTER]
#
# A whole berth cluster on the test hosts that up.sh made (for trying things by hand; the
# tests start their own daemons): etcd (one member on host 1, or three, one per host; TLS
# between its members and to its clients, with certificates from etcd-certs.sh in DIR/etcd-certs),
# a `berth controller` on the bridge (10.213.C.1:6817) with its state in etcd (etcds://,
# its client certificate named in DIR/berth.toml's [etcd]), and a `berth
# agent` on each of the N hosts, each serving the API to its host's users. Logs, state and
# the image store live in DIR; berth is the one on PATH (or $BERTH). Then, for example:
#
#   export BERTH_SOCKET=DIR/berth.sock BERTH_STORE=DIR/store
#   berth image import ./rootfs --name busybox
#   berth submit -N 3 job.sh; berth step --job 1 -N 3 hostname
#
# `stop` ends the controller (by the pid it wrote) and down.sh ends everything on the hosts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
berth=${BERTH:-$(command -v berth || true)}
case ${1:-} in
start)
  [[ -x $berth ]] || { echo "daemons.sh: no berth on PATH: set BERTH to the binary" >&2; exit 2; }
  n=${2:?usage: daemons.sh start N [CLUSTER] [--etcd 1|3] DIR}
  shift 2
  c=0
  [[ ${1:-} =~ ^[0-9]+$ ]] && { c=$1; shift; }
  members=1
  [[ ${1:-} == --etcd ]] && { members=$2; shift 2; }
  dir=$(realpath -m "${1:?usage: daemons.sh start N [CLUSTER] [--etcd 1|3] DIR}")
  (( members <= n )) || { echo "daemons.sh: $members etcd members need $members hosts" >&2; exit 2; }
  mkdir -p "$dir/store"
  "$here/up.sh" "$n" "$c"
  net=10.213.$c
  certs=$dir/etcd-certs
  "$here/etcd-certs.sh" "$certs" $(for i in $(seq 1 "$members"); do echo "$net.$((10 + i))"; done)
  tls=()
  for peer in "" peer-; do
    tls+=(--${peer}cert-file "$certs/etcd.pem" --${peer}key-file "$certs/etcd.key"
      --${peer}trusted-ca-file "$certs/ca.pem" --${peer}client-cert-auth)
  done
  printf '[etcd]\nca_certs = ["%s"]\ncert = "%s"\nkey = "%s"\n' \
    "$certs/ca.pem" "$certs/client.pem" "$certs/client.key" >"$dir/berth.toml"
  initial=$(for i in $(seq 1 "$members"); do printf 'm%s=https://%s.%s:2380,' "$i" "$net" $((10 + i)); done)
  for i in $(seq 1 "$members"); do
    ip=$net.$((10 + i))
    "$here/exec.sh" "bt$c-h$i" etcd --name "m$i" --data-dir "$dir/etcd-m$i" "${tls[@]}" \
      --listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
      --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
      --initial-cluster "${initial%,}" --initial-cluster-token berth --pre-vote \
      >"$dir/etcd-m$i.log" 2>&1 &
  done
  store=etcds://$(for i in $(seq 1 "$members"); do printf '%s.%s:2379,' "$net" $((10 + i)); done)
  BERTH_STORE=$dir/store BERTH_CONFIG=$dir/berth.toml "$berth" controller --store "${store%,}" --listen "$net.1:6817" \
    --state-dir "$dir/controller" --socket "$dir/berth.sock" >"$dir/controller.log" 2>&1 &
  echo $! >"$dir/controller.pid"
  mkdir -p /run/berth-test
  echo "$dir" >"/run/berth-test/daemons-$c"
  for _ in $(seq 1 200); do [[ -S $dir/berth.sock ]] && break; sleep 0.1; done
  [[ -S $dir/berth.sock ]] || { echo "daemons.sh: the controller did not start: $dir/controller.log" >&2; exit 1; }
  for i in $(seq 1 "$n"); do
    BERTH_STORE=$dir/store "$here/exec.sh" "bt$c-h$i" "$berth" agent --controller "https://$net.1:6817" \
      --key-file "$dir/controller/cluster.key" --listen "$net.$((10 + i)):6818" \
      --state-dir "$dir/agent-h$i" --socket "$dir/agent-h$i/berth.sock" >"$dir/agent-h$i.log" 2>&1 &
  done
  for _ in $(seq 1 200); do
    (( $(BERTH_SOCKET=$dir/berth.sock "$berth" nodes --json | grep -o '"name"' | wc -l) >= n )) && break
    sleep 0.1
  done
  echo "berth cluster $c: controller $net.1:6817 (state in ${store%,}), agents on bt$c-h1..$n"
  echo "  export BERTH_SOCKET=$dir/berth.sock BERTH_STORE=$dir/store"
  ;;
stop)
  c=${2:-0}
  if [[ -f /run/berth-test/daemons-$c ]]; then
    dir=$(cat "/run/berth-test/daemons-$c")
    [[ -f $dir/controller.pid ]] && kill "$(cat "$dir/controller.pid")" 2>/dev/null || true
    rm -f "/run/berth-test/daemons-$c"
  fi
  "$here/down.sh" "$c"
  ;;
*)
  echo "usage: daemons.sh start N [CLUSTER] [--etcd 1|3] DIR | stop [CLUSTER]" >&2
  exit 2
  ;;
esac
