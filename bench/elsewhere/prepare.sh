#!/usr/bin/env bash
# bench/elsewhere/prepare.sh DIR
#
# Readies DIR for bench/elsewhere/run.sh on a machine without network (the GPU machine lent to
# some sessions): this tree's release berth (stripped), and Debian 12's packages of the
# container start benchmark's alternatives that can run there (bubblewrap, Charliecloud's
# ch-run and the libraries it needs), busybox-static and squashfs-tools-ng. Run on Debian 12.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(($# == 1)) || { echo "usage: prepare.sh DIR" >&2; exit 2; }
mkdir -p "$1/debs"
cargo build --release --quiet -p berth --manifest-path "$here/../../Cargo.toml"
objcopy --strip-all "$here/../../target/release/berth" "$1/berth"
cd "$1/debs"
apt-get download -qq bubblewrap charliecloud-runtime libsquashfuse0 libfuse3-3 busybox-static \
  squashfs-tools-ng libsquashfs1 liblzo2-2 2>/dev/null
du -sh "$1"
