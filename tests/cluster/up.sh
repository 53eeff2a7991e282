#!/usr/bin/env bash
# tests/cluster/up.sh N [CLUSTER]: N test hosts on this machine, for berth's multi-node tests.
#
# Each host is a network namespace with its own UTS namespace (its hostname, which is the
# node's name) and IPC namespace (so that MPI libraries that judge "same machine" by boot id
# cannot use shared memory between hosts), on a bridge in the root namespace:
#
#   bridge  bt<C>-br   10.213.<C>.1/24        (the controller listens here)
#   host i  bt<C>-h<i> 10.213.<C>.<10+i>/24   (eth0; its peer bt<C>-v<i> is on the bridge)
#
# CLUSTER (0-200, default 0) keeps clusters of tests that run at once apart. No physical
# interface, no NAT, no route out. Idempotent; tests/cluster/down.sh removes it all.
# Run a command on host i with tests/cluster/exec.sh bt<C>-h<i> CMD...
set -euo pipefail
n=${1:?usage: up.sh N [CLUSTER]}
c=${2:-0}
br=bt$c-br
net=10.213.$c

if ! ip link show "$br" >/dev/null 2>&1; then
  ip link add "$br" type bridge
  ip addr add "$net.1/24" dev "$br"
fi
ip link set "$br" up

hosts="127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$net.1 bt$c-gw"
for i in $(seq 1 "$n"); do
  hosts+=$'\n'"$net.$((10 + i)) bt$c-h$i"
done

mkdir -p /run/berth-test/uts /run/berth-test/ipc
for i in $(seq 1 "$n"); do
  ns=bt$c-h$i
  [[ -e /run/netns/$ns ]] || ip netns add "$ns"
  if ! ip link show "bt$c-v$i" >/dev/null 2>&1; then
    ip link add "bt$c-v$i" type veth peer name eth0 netns "$ns"
    ip link set "bt$c-v$i" master "$br"
    ip -n "$ns" addr add "$net.$((10 + i))/24" dev eth0
  fi
  ip link set "bt$c-v$i" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  # `ip netns exec` binds /etc/netns/NS/* over /etc/*: the hosts resolve each other by name.
  mkdir -p "/etc/netns/$ns"
  printf '%s\n' "$hosts" >"/etc/netns/$ns/hosts"
  echo "$ns" >"/etc/netns/$ns/hostname"
  # Persistent UTS and IPC namespaces, kept by bind mounts of their nsfs files.
  if ! mountpoint -q "/run/berth-test/uts/$ns"; then
    touch "/run/berth-test/uts/$ns"
    unshare --uts="/run/berth-test/uts/$ns" hostname "$ns"
  fi
  if ! mountpoint -q "/run/berth-test/ipc/$ns"; then
    touch "/run/berth-test/ipc/$ns"
    unshare --ipc="/run/berth-test/ipc/$ns" true
  fi
done
