#!/bin/busybox sh
# The test machine's first process (tests/vm/run.sh): load the modules, make the host's root
# filesystem (read-only, 9p) writable under an overlay held in memory, switch to it.
bb=/bin/busybox
fail() { echo "vm init: $*"; $bb poweroff -f; }
$bb mkdir -p /proc /dev /host /rw /root
$bb mount -t proc proc /proc
$bb mount -t devtmpfs dev /dev
for m in $($bb cat /modules/modules); do
  $bb insmod "/modules/$m" || fail "insmod $m"
done
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host ||
  fail "no 9p share of the host's root"
$bb mount -t tmpfs -o mode=0755 rw /rw
$bb mkdir -p /rw/upper /rw/work
$bb mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work root /root ||
  fail "no overlay over the host's root"
out=$($bb sed -n 's/.*berth\.out=\([^ ]*\).*/\1/p' /proc/cmdline)
$bb cp /stage2 /root/.berth-vm-stage2
$bb umount /proc
$bb umount /dev
exec $bb switch_root /root /bin/busybox sh /.berth-vm-stage2 "$out"
