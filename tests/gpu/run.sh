#!/usr/bin/env bash
# tests/gpu/run.sh [DIR]
#
# berth with a real NVIDIA GPU: run as root on the GPU machine, from DIR as tests/gpu/prepare.sh
# made it (default: this script's directory). CI machines have no GPU, so this runs by hand
# wherever one is lent. It checks, as root and as an unprivileged user: nvidia-smi from the host
# driver inside a glibc image, CUDA through the driver API with a kernel the driver compiles
# from PTX (cudaprobe), what the container sees (devices, CUDA_VISIBLE_DEVICES, no GPU without
# --gpus), refusals, a batch job and a job step given a GPU on the all-in-one cluster, and that
# no mount or cgroup is left; then it times the start with and without --gpus. Each check's
# output is printed; the exit status is the number of failed checks.
set -uo pipefail
dir=$(cd "${1:-$(dirname "$0")}" && pwd)
[[ $(id -u) == 0 ]] || { echo "run.sh: run as root" >&2; exit 125; }
[[ -e /dev/nvidia0 ]] || { echo "run.sh: no /dev/nvidia0: this is no NVIDIA GPU machine" >&2; exit 125; }
gpus=$(find /dev -maxdepth 1 -name 'nvidia[0-9]*' | wc -l)

work=$(mktemp -d /var/tmp/berth-gpu.XXXXXX)
chmod 755 "$work"
user=berthgpu
made_user=
controller=
cleanup() {
  [[ -n $controller ]] && kill "$controller" 2>/dev/null && wait "$controller" 2>/dev/null
  rm -rf "$work"
  [[ -n $made_user ]] && userdel -r "$user" 2>/dev/null
}
trap cleanup EXIT
id "$user" >/dev/null 2>&1 || { useradd -m -s /bin/sh "$user" && made_user=1; }
home=$(getent passwd "$user" | cut -d: -f6)

# squashfs-tools-ng from DIR's packages where the machine lacks it, through wrappers that give
# only these programs their libraries.
if ! command -v tar2sqfs >/dev/null; then
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$work/sq"; done
  mkdir -p "$work/bin"
  for tool in tar2sqfs sqfs2tar rdsquashfs; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' \
      "$work/sq/usr/lib/x86_64-linux-gnu:$work/sq/lib/x86_64-linux-gnu" \
      "$work/sq/usr/bin/$tool" >"$work/bin/$tool"
    chmod 755 "$work/bin/$tool"
  done
  export PATH=$PATH:$work/bin
fi
install -m 755 "$dir/berth" "$work/berth"
berth=$work/berth
export BERTH_STORE=$work/store BERTH_SOCKET=$work/berth.sock
as_user() { setpriv --reuid="$user" --regid="$user" --init-groups env -u BERTH_STORE HOME="$home" USER="$user" "$@"; }

failures=0
# expect STATUS NAME WANT COMMAND...: COMMAND must exit with STATUS and print a line matching
# the regex WANT.
expect() {
  local status=$1 name=$2 want=$3 out rc
  shift 3
  echo "=== $name"
  out=$("$@" 2>&1)
  rc=$?
  echo "$out"
  if ((rc == status)) && grep -Eq -- "$want" <<<"$out"; then
    echo "--- ok"
  else
    echo "--- FAILED (exit $rc, not $status, or no line matching /$want/)"
    failures=$((failures + 1))
  fi
}
check() { expect 0 "$@"; }
# refused NAME WANT COMMAND...: COMMAND must fail with berth's 125 and say WANT.
refused() { expect 125 "$@"; }

echo "GPU machine: $(uname -r), $gpus GPU(s), $(grep -m1 'NVRM version' /proc/driver/nvidia/version 2>/dev/null)"
check "import the glibc image (root)" "Imported glibc:1" "$berth" image import "$dir/glibc.tar" --name glibc:1
check "import the glibc image ($user)" "Imported glibc:1" as_user "$berth" image import "$dir/glibc.tar" --name glibc:1

check "nvidia-smi in a glibc image (root)" "NVIDIA-SMI .*Driver Version" \
  "$berth" exec --gpus all glibc:1 nvidia-smi
check "nvidia-smi queries (root)" "^NVIDIA .*MiB" \
  "$berth" exec --gpus all glibc:1 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
check "CUDA: a kernel from PTX (root, --gpus 1)" "kernel from PTX ran .*: all correct" \
  "$berth" exec --gpus 1 glibc:1 cudaprobe
check "what --gpus device=0 shows" "^CVD=0 /dev/nvidia0 /dev/nvidiactl$" \
  "$berth" exec --gpus device=0 glibc:1 sh -c 'echo CVD=$CUDA_VISIBLE_DEVICES $(ls /dev/nvidia[0-9]* /dev/nvidiactl)'
check "no GPU without --gpus" "^no GPU$" \
  "$berth" exec glibc:1 sh -c '! ls /dev/nvidia0 2>/dev/null && ! cudaprobe 2>/dev/null && echo no GPU'
refused "more GPUs than the machine has" "requested but this host has $gpus NVIDIA GPU" \
  "$berth" exec --gpus $((gpus + 1)) glibc:1 true
refused "a GPU the machine lacks" "no NVIDIA GPU device \(/dev/nvidia$gpus\)" \
  "$berth" exec --gpus device=$gpus glibc:1 true
check "nvidia-smi and CUDA unprivileged ($user)" "kernel from PTX ran .*: all correct" \
  as_user "$berth" exec --gpus all glibc:1 sh -c 'id -un; nvidia-smi -L && cudaprobe'

"$berth" up --state-dir "$work/state" >"$work/controller.log" 2>&1 &
controller=$!
for _ in $(seq 100); do [[ -S $BERTH_SOCKET ]] && break; sleep 0.1; done
check "the node offers its GPUs" "^$(hostname) .* $gpus " "$berth" nodes
jobs=$work/jobs
install -d -o "$user" "$jobs"
cat >"$jobs/gpu.sh" <<'SCRIPT'
#!/bin/sh
#SBATCH --gres=gpu:1 -J gpujob
#BERTH --image glibc:1
nvidia-smi -L
cudaprobe
echo "CVD=$CUDA_VISIBLE_DEVICES GPUS_ON_NODE=$SLURM_GPUS_ON_NODE"
berth step -n 1 --gpus-per-task=1 sh -c 'echo step CVD=$CUDA_VISIBLE_DEVICES; nvidia-smi -L'
SCRIPT
chown "$user" "$jobs/gpu.sh"
job=$(cd "$jobs" && as_user "$berth" submit --parsable -o gpu-%j.out gpu.sh)
for _ in $(seq 600); do
  state=$("$berth" show "$job" --json 2>/dev/null | sed -n 's/.*"state": "\(.*\)".*/\1/p')
  [[ $state == PENDING || $state == RUNNING ]] || break
  sleep 0.1
done
check "a batch job with --gres=gpu:1 (job $job: $state)" "^CVD=0 GPUS_ON_NODE=1$" \
  sh -c "[ '$state' = COMPLETED ] && cat '$jobs/gpu-$job.out'"
check "its step with --gpus-per-task=1" "^step CVD=0$" cat "$jobs/gpu-$job.out"
refused "a job asking for more GPUs than a node has" "can never run here" \
  as_user "$berth" submit --gpus-per-node=$((gpus + 1)) "$jobs/gpu.sh"
kill "$controller" && wait "$controller"
controller=

# Limits: the machines with GPUs lent here boot with pure cgroup v2, which CI's does not.
hog='v=$(yes | head -c 200000000); echo survived'
expect 137 "--memory 32m: a hog is OOM-killed and berth says so" "ran out of memory \(limit 32.0 MiB\)" \
  "$berth" exec --memory 32m glibc:1 sh -c "$hog"
expect 2 "--pids-limit 12 holds a fork bomb (the shell's fork fails: 2)" "can't fork" \
  "$berth" exec --pids-limit 12 glibc:1 sh -c 'for i in $(seq 40); do sleep 1 & done; wait'
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
  # A user's own limits in a cgroup delegated to them, as systemd's Delegate=yes makes one.
  scope=/sys/fs/cgroup/berth-gpu-test.scope
  mkdir "$scope"
  chown "$user:" "$scope" "$scope"/cgroup.{procs,subtree_control,threads}
  expect 137 "--memory 32m unprivileged, in a delegated cgroup" "ran out of memory \(limit 32.0 MiB\)" \
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$scope" \
    setpriv --reuid="$user" --regid="$user" --init-groups env -u BERTH_STORE HOME="$home" \
    "$berth" exec --memory 32m glibc:1 sh -c "$hog"
  rmdir "$scope" || echo "run.sh: $scope stays: $(ls "$scope")"
fi

check "nothing left behind" "^none$" sh -c \
  "! grep -E 'berth' /proc/self/mountinfo && [ -z \"\$(find /sys/fs/cgroup -path '*/berth/*' -type d)\" ] && echo none"

echo "=== start: mean of 200 runs (not a check)"
loop() {
  local label=$1 start end
  shift
  start=$(date +%s%N)
  for _ in $(seq 200); do "$@"; done >/dev/null 2>&1
  end=$(date +%s%N)
  echo "$label: $(((end - start) / 200000)) us"
}
mkdir "$work/rootfs" && tar -xf "$dir/glibc.tar" -C "$work/rootfs"
loop "host: true" /bin/true
loop "unshare --mount --pid --fork chroot" unshare --mount --pid --fork chroot "$work/rootfs" /bin/true
loop "berth exec (root)" "$berth" exec glibc:1 true
loop "berth exec --gpus all (root)" "$berth" exec --gpus all glibc:1 true
loop "berth exec (unprivileged)" as_user "$berth" exec glibc:1 true
loop "setpriv to the user: true" as_user true
loop "nvidia-smi -L on the host" nvidia-smi -L
loop "berth exec --gpus all nvidia-smi -L (root)" "$berth" exec --gpus all glibc:1 nvidia-smi -L

echo
((failures == 0)) && echo "all checks passed" || echo "$failures check(s) FAILED"
exit "$failures"
