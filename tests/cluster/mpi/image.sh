#!/usr/bin/env bash
# tests/cluster/mpi/image.sh ROOTFS: a root filesystem for MPI tests, built from the files
# of installed Debian packages (Open MPI, MPICH and everything they depend on, a shell and
# coreutils) and of MPICH 5 from PyPI (at /opt/berth-test/mpich5, the same path as on the
# host), plus check.c compiled against each MPI at /opt/berth-test/check.{openmpi,mpich,mpich5}.
# Needs openmpi-bin, libopenmpi-dev, mpich, libmpich-dev and /opt/berth-test/mpich5
# installed (scripts/setup).
set -euo pipefail
# More installed packages (and their dependencies) may be named after ROOTFS (bench/run hpcc
# adds hpcc).
root=${1:?usage: image.sh ROOTFS [PACKAGE...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$root"
# Debian 12 is merged-/usr: the top-level directories are links into /usr.
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{etc,tmp,opt/berth-test}
for d in bin sbin lib lib64; do
  [[ -e $root/$d ]] || ln -s "usr/$d" "$root/$d"
done
packages=$(apt-cache depends --recurse --installed --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances \
  openmpi-bin mpich dash coreutils hostname "$@" 2>/dev/null | grep -v '^[ <]' | sort -u)
# Their files, without documentation; through the links above (tar keeps them links).
for p in $packages; do dpkg -L "$p"; done | sort -u |
  grep -Ev '^/usr/share/(doc|man|info|locale|lintian)/' |
  while read -r f; do if [[ -f $f || -L $f ]]; then printf '%s\n' "${f#/}"; fi; done >"$root.files"
tar -C / --no-recursion -cf - -T "$root.files" | tar -C "$root" --keep-directory-symlink -xf -
rm "$root.files"
ln -sf dash "$root/usr/bin/sh"
# The alternatives the packages chose (libblas.so.3, libpsm_infinipath, mpicc, ...), as
# installed: /etc/alternatives and the links that point into it (update-alternatives made
# them, so dpkg -L does not list them; /var/lib/dpkg/alternatives/NAME does: the master link
# on its second line, then slave name and link pairs until an empty line).
cp -a /etc/alternatives "$root/etc/"
for alt in /var/lib/dpkg/alternatives/*; do
  awk 'NR == 2 { print; next } NR >= 3 { if ($0 == "") exit; if (NR % 2 == 0) print }' "$alt"
done | while read -r link; do
  if [[ -L $link && ! -e $root$link && ! -L $root$link ]]; then
    mkdir -p "$root$(dirname "$link")"
    cp -P "$link" "$root$link"
  fi
done
mpicc.openmpi -O2 -o "$root/opt/berth-test/check.openmpi" "$here/check.c"
mpicc.mpich -O2 -o "$root/opt/berth-test/check.mpich" "$here/check.c"
mpich5=/opt/berth-test/mpich5
mkdir -p "$root$mpich5"
cp -a "$mpich5/bin" "$mpich5/lib" "$root$mpich5/"
rm -rf "$root$mpich5"/lib/python3*
"$mpich5/bin/mpicc" -O2 -o "$root/opt/berth-test/check.mpich5" "$here/check.c"
