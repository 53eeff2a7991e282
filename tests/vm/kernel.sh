#!/usr/bin/env bash
# tests/vm/kernel.sh DIR: Debian's current kernel for amd64 (the linux-image-amd64 package's)
# and the modules tests/vm/run.sh loads, into DIR: vmlinuz, the modules' .ko files and
# `modules`, their load order. Idempotent: nothing is fetched when DIR holds a kernel with
# the modules wanted below.
#
# Why a kernel of our own: this machine's cgroup layout is v1 (hybrid), and berth must also
# work on pure cgroup v2, as current distributions have it. The tests boot this kernel under
# qemu with nothing but cgroup2 mounted and run berth's cgroup tests there.
set -euo pipefail
dir=${1:?usage: kernel.sh DIR}

# The guest needs: 9p over virtio (this machine's root filesystem is its root), loop and
# squashfs (images as root), overlay (every container's writable layer), bridge and veth
# (the multi-node tests' hosts).
wanted=(9p 9pnet_virtio virtio_pci loop squashfs overlay bridge veth)
[[ -f $dir/vmlinuz && $(cat "$dir/wanted" 2>/dev/null) == "${wanted[*]}" ]] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(package)
[[ -n $pkg ]] || { apt-get update -qq && pkg=$(package); }
[[ -n $pkg ]] || { echo "kernel.sh: apt knows no linux-image-amd64 package" >&2; exit 1; }
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) ||
  { echo "kernel.sh: could not download $pkg from Debian's mirror" >&2; exit 1; }
dpkg-deb -x "$work"/*.deb "$work/root"
version=$(ls "$work/root/lib/modules")
depmod -b "$work/root" "$version"

# Each wanted module after its dependencies (modules.dep lists them for each module).
staging=$dir.tmp.$$
rm -rf "$staging"
mkdir -p "$staging"
declare -A seen=()
order=()
add() {
  local path=$1 dep
  [[ -n ${seen[$path]:-} ]] && return
  seen[$path]=1
  for dep in $(awk -v m="$path:" '$1 == m { $1 = ""; print }' "$work/root/lib/modules/$version/modules.dep"); do
    add "$dep"
  done
  order+=("$path")
}
for m in "${wanted[@]}"; do
  path=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m {print $1; exit}' \
    "$work/root/lib/modules/$version/modules.dep")
  [[ -n $path ]] || { echo "kernel.sh: $pkg has no module $m" >&2; exit 1; }
  add "$path"
done
for path in "${order[@]}"; do
  cp "$work/root/lib/modules/$version/$path" "$staging/"
  basename "$path" >> "$staging/modules"
done
cp "$work/root/boot/vmlinuz-$version" "$staging/vmlinuz"
echo "$pkg" > "$staging/package"
echo "${wanted[*]}" > "$staging/wanted"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$staging" "$dir"
