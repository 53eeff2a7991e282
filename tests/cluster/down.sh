#!/usr/bin/env bash
# tests/cluster/down.sh [CLUSTER]: removes what up.sh made for CLUSTER (default 0): stops the
# processes still running on its hosts (by the pids the kernel lists for each namespace),
# then deletes the namespaces, links, bridge and files. Safe to run when nothing is there.
set -uo pipefail
c=${1:-0}
for nsfile in /run/netns/bt$c-h*; do
  [[ -e $nsfile ]] || continue
  ns=${nsfile##*/}
  [[ $ns =~ ^bt$c-h[0-9]+$ ]] || continue
  for sig in TERM KILL; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n $pids ]] || break
    kill -s "$sig" $pids 2>/dev/null
    for _ in $(seq 1 20); do
      [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
      sleep 0.1
    done
  done
  ip netns del "$ns"
  rm -rf "/etc/netns/$ns"
  for kind in uts ipc; do
    mountpoint -q "/run/berth-test/$kind/$ns" && umount "/run/berth-test/$kind/$ns"
    rm -f "/run/berth-test/$kind/$ns"
  done
done
for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^bt$c-v[0-9]+$"); do
  ip link del "$link" 2>/dev/null
done
ip link show "bt$c-br" >/dev/null 2>&1 && ip link del "bt$c-br"
exit 0
