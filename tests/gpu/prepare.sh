#!/usr/bin/env bash
# tests/gpu/prepare.sh DIR
#
# Readies DIR for tests/gpu/run.sh on a machine with an NVIDIA GPU (this CI machine has none):
# berth (this tree's release build, stripped), a glibc image (Debian's libc6 and busybox-static
# with tests/gpu/cudaprobe built in) as a root filesystem tarball, Debian 12's squashfs-tools-ng
# packages for a GPU machine without them, and run.sh. Run as root on Debian 12 after
# scripts/setup; DIR stays under 40 MB, small enough to copy to the GPU machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(($# == 1)) || { echo "usage: prepare.sh DIR" >&2; exit 2; }
dir=$(mkdir -p "$1" && cd "$1" && pwd)
cargo build --release --quiet -p berth --manifest-path "$here/../../Cargo.toml"
objcopy --strip-all "$here/../../target/release/berth" "$dir/berth"
cp "$here/run.sh" "$dir/run.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir/debs" "$work/debs" "$work/root/usr/local/bin" "$work/root/tmp" "$work/root/etc"
(cd "$work/debs" && apt-get download -qq libc6 busybox-static squashfs-tools-ng libsquashfs1 liblzo2-2 2>/dev/null)
mv "$work"/debs/{squashfs-tools-ng,libsquashfs1,liblzo2-2}_*.deb "$dir/debs/"
dpkg -x "$work"/debs/libc6_*.deb "$work/root"
dpkg -x "$work"/debs/busybox-static_*.deb "$work/root"
rm -rf "$work/root/usr/share"
for applet in $("$work/root/bin/busybox" --list); do
  [[ -e $work/root/bin/$applet ]] || ln -s busybox "$work/root/bin/$applet"
done
gcc -O2 -Wall -Werror -o "$work/root/usr/local/bin/cudaprobe" "$here/cudaprobe.c"
tar -C "$work/root" -cf "$dir/glibc.tar" .
du -sh "$dir"
