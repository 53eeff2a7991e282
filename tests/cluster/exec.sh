#!/usr/bin/env bash
# tests/cluster/exec.sh HOST CMD...: runs CMD "on" test host HOST (bt<C>-h<i>, made by up.sh):
# in its network, UTS and IPC namespaces, and a mount namespace of its own where the host's
# hosts file is /etc/hosts. (Not `ip netns exec`: it mounts a new /sys, which hides the
# cgroup file systems that berth's jobs need.) CMD is exec'd: its pid is this script's.
set -e
ns=${1:?usage: exec.sh HOST CMD...}
shift
exec nsenter --net="/run/netns/$ns" --uts="/run/berth-test/uts/$ns" --ipc="/run/berth-test/ipc/$ns" -- \
  unshare --mount --propagation slave -- \
  sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "/etc/netns/$ns/hosts" "$@"
