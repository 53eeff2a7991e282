#!/usr/bin/env bash
# tests/vm/run.sh [--cpus N] [--mem MB] [--timeout S] -- CMD [ARGS...]
#
# Runs CMD as root in a virtual machine whose cgroup hierarchy is pure v2, and exits with its
# status (124 when the machine did not finish in S seconds or its kernel locked up twice,
# 125 when it did not start). CMD's output comes out on this script's stdout and stderr.
#
# The machine (qemu, software emulation: nested virtualisation is not dependable on CI
# machines) runs Debian's kernel (tests/vm/kernel.sh fetches it) and sees this machine's
# root filesystem, read-only over 9p, under a writable overlay held in its memory: the same
# programs, users and files, nothing written back. It mounts proc, sysfs, devtmpfs, devpts,
# cgroup2 (alone, at /sys/fs/cgroup, no controller enabled yet) and tmpfs on /tmp, /run and
# /dev/shm, brings up loopback, and runs CMD in the current directory with this
# environment's PATH, HOME and RUST_BACKTRACE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=${BERTH_VM_KERNEL:-/opt/berth-test/vm-kernel}
cpus=2 mem=2048 timeout=600
while [[ $# -gt 0 && $1 != -- ]]; do
  case $1 in
    --cpus) cpus=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ ${1:-} == -- ]] && shift
(($#)) || { echo "usage: run.sh [--cpus N] [--mem MB] [--timeout S] -- CMD [ARGS...]" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 is missing: run scripts/setup" >&2; exit 125; }
[[ -f $kernel/vmlinuz ]] || { echo "run.sh: no kernel in $kernel: run scripts/setup (tests/vm/kernel.sh $kernel)" >&2; exit 125; }

out=$(mktemp -d /tmp/berth-vm.XXXXXX)
qemu=
trap '[[ -n $qemu ]] && kill "$qemu" 2>/dev/null; rm -rf "$out"' EXIT
{
  printf 'cd %q\n' "$PWD"
  printf 'export PATH=%q HOME=%q RUST_BACKTRACE=%q\n' "$PATH" "${HOME:-/root}" "${RUST_BACKTRACE:-0}"
  printf '%q ' "$@"
  echo
} > "$out/cmd"

# The initramfs: busybox, the modules, and an init that builds the root and hands over.
initrd=$out/initrd
mkdir -p "$initrd/bin" "$initrd/modules"
cp /bin/busybox "$initrd/bin/busybox"
cp "$kernel"/*.ko "$kernel/modules" "$initrd/modules/"
cp "$here/init.sh" "$initrd/init"
cp "$here/stage2.sh" "$initrd/stage2"
(cd "$initrd" && find . | busybox cpio -o -H newc 2>/dev/null) > "$out/initrd.cpio"

# One try: qemu, stopped after $timeout seconds, or as soon as the machine's kernel reports
# a CPU stuck in it (a soft lockup): a fault of the emulated machine, not of CMD, which no
# longer makes progress. Sets status (qemu's, 124 for the time limit) and lockup.
boot() {
  rm -f "$out/stdout" "$out/stderr" "$out/rc" "$out/console"
  lockup=false
  timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
    -accel tcg -cpu max -smp "$cpus" -m "$mem" \
    -display none -monitor none -nic none -serial "file:$out/console" -no-reboot \
    -kernel "$kernel/vmlinuz" -initrd "$out/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 berth.out=$out" \
    -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs "local,path=$out,mount_tag=out,security_model=passthrough" &
  qemu=$!
  while kill -0 "$qemu" 2>/dev/null; do
    if grep -q 'soft lockup' "$out/console" 2>/dev/null; then
      lockup=true
      kill "$qemu"
      break
    fi
    sleep 2
  done
  status=0
  wait "$qemu" || status=$?
  qemu=
}

# The emulated machine's kernel has been seen (once, in CI) to lock up with both CPUs stuck
# in it for twenty minutes; then it is started once more, and its console of the first try
# is shown. (Emulating its CPUs in one thread instead of one each, which might avoid it,
# doubled the time of the longest test that runs in it: 233 -> 449 s.)
boot
if $lockup; then
  echo "run.sh: the machine's kernel locked up; starting it again. Its console:" >&2
  cat "$out/console" >&2
  boot
fi
if $lockup; then
  echo "run.sh: the machine's kernel locked up again; its console:" >&2
  cat "$out/console" >&2
  exit 124
fi
cat "$out/stdout" 2>/dev/null || true
cat "$out/stderr" >&2 2>/dev/null || true
if ((status == 124 || status == 137)); then
  echo "run.sh: the machine did not finish within ${timeout}s; its console:" >&2
  cat "$out/console" >&2
  exit 124
fi
if [[ ! -f $out/rc ]]; then
  echo "run.sh: the machine stopped before CMD ended (qemu exited $status); its console:" >&2
  cat "$out/console" >&2
  exit 125
fi
exit "$(cat "$out/rc")"
