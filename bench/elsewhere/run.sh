#!/usr/bin/env bash
# bench/elsewhere/run.sh DIR [RUNS]
#
# bench/run's container start benchmark on a machine without network, from the repository's
# root there, as root, with DIR from bench/elsewhere/prepare.sh: the packages are unpacked
# into /opt/berth-bench (their libraries registered with ldconfig, the programs that the
# unprivileged rows need copied into /usr/bin), busybox into /bin and the berthtest user made
# where missing, then start.py runs bench/run's own code for it. Meant for a machine that is
# thrown away after: it changes the system and undoes nothing. Results in $OUT (or /tmp).
set -euo pipefail
dir=$(cd "$1" && pwd)
opt=/opt/berth-bench
mkdir -p "$opt"
for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$opt"; done
printf '%s\n' "$opt/usr/lib/x86_64-linux-gnu" "$opt/lib/x86_64-linux-gnu" >/etc/ld.so.conf.d/zz-berth-bench.conf
ldconfig
[[ -e /bin/busybox ]] || cp "$opt/bin/busybox" /bin/busybox
# The unprivileged rows run with PATH=/usr/bin:/bin.
for tool in ch-run bwrap tar2sqfs sqfs2tar rdsquashfs; do
  [[ -e /usr/bin/$tool ]] || cp "$opt/usr/bin/$tool" /usr/bin/$tool
done
id berthtest >/dev/null 2>&1 || useradd -m -s /bin/sh berthtest
mkdir -p target/release
cp "$dir/berth" target/release/berth
PYTHONUNBUFFERED=1 /usr/bin/python3 "$(dirname "$0")/start.py" "${2:-200}"
