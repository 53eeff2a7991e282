# The test machine's first process once its root is the host's (tests/vm/run.sh): mount what a
# pure cgroup v2 system has, run the command, record its status, power off. As process 1
# it reaps orphans while it waits for the command (busybox sh waits for any child).
out=$1
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mount -t devtmpfs dev /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
$bb ln -sf pts/ptmx /dev/ptmx
$bb mount -t tmpfs -o mode=1777 shm /dev/shm
$bb mount -t tmpfs -o mode=1777 tmp /tmp
$bb mount -t tmpfs -o mode=0755 run /run
$bb hostname berth-vm
$bb ip link set lo up
# The results' directory, where the host has it (under /tmp: after the tmpfs there).
$bb mkdir -p "$out"
if ! $bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "$out"; then
  echo "vm stage2: no 9p share for the results"
  $bb poweroff -f
fi
(. "$out/cmd") > "$out/stdout" 2> "$out/stderr" < /dev/null
echo $? > "$out/rc"
$bb sync
$bb poweroff -f
