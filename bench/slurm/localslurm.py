#!/usr/bin/python3
"""Slurm for one node on localhost, every file in one directory: munged, slurmctld and slurmd
started as root in the foreground (children of this process) and stopped by their PIDs.

    bench/slurm/localslurm.py DIR [CORES]   starts it (the node declared with CORES cores, if
                                            given), prints the SLURM_CONF to use, stops on Ctrl-C

Used by bench/run (import localslurm). Debian 12's packages: munge, slurmctld, slurmd,
slurm-client (Slurm 22.05). Nothing system-wide is read or written: munged gets its own key,
socket, pid, log and seed files, and slurm.conf points the daemons and clients at that socket
(AuthInfo=socket=...). The configuration suits a small VM or a sandbox without systemd or
cgroup v2: processes tracked through /proc, no task binding, no accounting.
"""

import os
import signal
import socket
import subprocess
import sys
import time


class SlurmError(Exception):
    """One line saying why Slurm cannot run here."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_line(path):
    """A log's last line that says "fatal", else its last "error", else its last line."""
    try:
        lines = [l.strip() for l in open(path, errors="replace") if l.strip()]
    except OSError:
        return None
    for word in ["fatal", "error"]:
        hits = [l for l in lines if word in l.lower()]
        if hits:
            return hits[-1]
    return lines[-1] if lines else None


class LocalSlurm:
    def __init__(self, dir, cores=None):
        """`cores`: declare the node with that many cores (one socket, one thread each) instead
        of what it has, and let slurmd run with it (SlurmdParameters=config_overrides), as
        throughput set-ups do: with more cores than jobs, each job is allocated as it is
        submitted instead of at slurmctld's next scheduling pass (about once a second here,
        two jobs at a time on two cores)."""
        self.dir = dir
        self.cores = cores
        os.makedirs(dir, mode=0o755, exist_ok=True)
        os.chmod(dir, 0o755)  # munged wants its socket's directories searchable by all
        self.conf = os.path.join(dir, "slurm.conf")
        self.munge_socket = os.path.join(dir, "munge", "munge.sock")
        self.node = socket.gethostname().split(".")[0]
        self.procs = []  # (name, Popen), in start order
        # Slurm's high-throughput setting (its guide's first knob): batch jobs are scheduled at
        # most every batch_sched_delay seconds, 3 by default, which on this one node starts
        # them in waves of two (two cores) every 3 s. With 0 they start on slurmctld's
        # background pass, once a second; a job's end does not start the next one sooner.
        self.scheduler_parameters = "batch_sched_delay=0"
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        for var in [v for v in self.env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_")) and v != "SLURM_CONF"]:
            del self.env[var]

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def cmd(self, *argv, timeout=30, check=True):
        """Runs a Slurm client command against this cluster; returns its stdout."""
        try:
            p = subprocess.run(argv, env=self.env, cwd=self.dir, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]} timed out after {timeout} s")
        except OSError as e:
            raise SlurmError(f"{argv[0]}: {e.strerror}")
        if check and p.returncode != 0:
            lines = (p.stderr or p.stdout).strip().splitlines()
            raise SlurmError(f"{' '.join(argv[:2])}: {lines[-1] if lines else f'exit {p.returncode}'}")
        return p.stdout

    def write_config(self):
        """The munge key and slurm.conf: one node (this host, as `slurmd -C` sees it), one
        partition, ports chosen free on 127.0.0.1."""
        d = self.path
        os.makedirs(d("munge"), mode=0o755, exist_ok=True)
        for sub in ["state", "spool", "log"]:
            os.makedirs(d(sub), mode=0o755, exist_ok=True)
        # A key of its own (mungekey writes it 0600, as munged requires), not /etc/munge's.
        key = subprocess.run(["mungekey", "--create", "--force", f"--keyfile={d('munge', 'munge.key')}"],
                             capture_output=True, text=True, timeout=30)
        if key.returncode != 0:
            raise SlurmError(f"mungekey: {(key.stderr.strip().splitlines() or [f'exit {key.returncode}'])[-1]}")
        probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
        line = next((l for l in probe.stdout.splitlines() if l.startswith("NodeName=")), None)
        if line is None:
            raise SlurmError(f"slurmd -C: {(probe.stderr.strip().splitlines() or ['no NodeName line'])[-1]}")
        hw = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if self.cores:
            hw.update(CPUs=self.cores, Boards=1, SocketsPerBoard=1, CoresPerSocket=self.cores, ThreadsPerCore=1)
        node = " ".join(f"{k}={hw[k]}" for k in ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"] if k in hw)
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        overrides = "SlurmdParameters=config_overrides\n" if self.cores else ""
        conf = f"""\
# Written by bench/slurm/localslurm.py: one node on localhost, files under {self.dir}.
ClusterName=berthbench
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d("state")}
SlurmdSpoolDir={d("spool")}
SlurmctldPidFile={d("slurmctld.pid")}
SlurmdPidFile={d("slurmd.pid")}
SlurmctldLogFile={d("log", "slurmctld.log")}
SlurmdLogFile={d("log", "slurmd.log")}
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d("plugstack.conf")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters={self.scheduler_parameters}
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MaxJobCount=100000
# Finished jobs stay in slurmctld's memory (scontrol show job) for the length of a benchmark.
MinJobAge=3600
{overrides}NodeName={self.node} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName=bench Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        open(d("plugstack.conf"), "w").close()  # none of /etc/slurm's SPANK plugins

    def spawn(self, name, argv):
        log = open(self.path("log", f"{name}.out"), "w")
        try:
            # A session of its own: a Ctrl-C at the terminal reaches this process, which
            # then stops the daemons in order (jobs first), not the daemons directly.
            p = subprocess.Popen(argv, env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise SlurmError(f"{argv[0]}: {e.strerror}")
        finally:
            log.close()
        self.procs.append((name, p))
        return p

    def why(self, name):
        """Why daemon `name` is not up: its log's last error."""
        for log in [self.path("log", f"{name}.log"), self.path("munge", f"{name}.log"), self.path("log", f"{name}.out")]:
            line = last_line(log)
            if line:
                return line if line.startswith(f"{name}:") else f"{name}: {line}"
        return f"{name} did not start"

    def wait_for(self, what, ready, timeout, daemon):
        deadline = time.time() + timeout
        while not ready():
            p = dict(self.procs).get(daemon)
            if p is not None and p.poll() is not None:
                raise SlurmError(f"{self.why(daemon)} (exit {p.returncode})")
            if time.time() > deadline:
                raise SlurmError(f"{what} not ready after {timeout} s; {self.why(daemon)}")
            time.sleep(0.05)

    def start(self, timeout=60):
        """Writes the configuration and starts munged, slurmctld and slurmd; returns once the
        node takes jobs. Raises SlurmError (the daemons started so far keep running until
        stop(), which the caller runs in any case)."""
        try:
            self._start(timeout)
        except OSError as e:
            raise SlurmError(f"{e.filename or 'start'}: {e.strerror}")
        except subprocess.TimeoutExpired as e:
            raise SlurmError(f"{e.cmd[0]} timed out")

    def _start(self, timeout):
        self.write_config()
        m = self.path("munge")
        self.spawn("munged", ["munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={m}/munge.key",
                              f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
        self.wait_for("munged", lambda: os.path.exists(self.munge_socket), timeout, "munged")
        self.spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])

        def ctld_up():
            try:
                return "UP" in self.cmd("scontrol", "ping", timeout=10, check=False)
            except SlurmError:
                return False
        self.wait_for("slurmctld", ctld_up, timeout, "slurmctld")
        self.spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", self.conf])

        def node_idle():
            try:
                state = self.cmd("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False).strip()
            except SlurmError:
                return False
            return state == "idle"
        self.wait_for("slurmd (node idle)", node_idle, timeout, "slurmd")

    def jobs(self, states=None):
        """Job ids in squeue (pending, running, completing, ...), or only in `states`."""
        argv = ["squeue", "-h", "-o", "%i"] + ([f"--states={states}"] if states else [])
        return self.cmd(*argv).split()

    def job_states(self):
        """{job id: state} for every job slurmctld still holds (finished ones for MinJobAge)."""
        return {f["JobId"]: f.get("JobState") for f in self._jobs() if "JobId" in f}

    def array_states(self, array):
        """{task id: state} of array job `array`'s tasks that slurmctld still holds."""
        return {f.get("ArrayTaskId"): f.get("JobState") for f in self._jobs() if f.get("ArrayJobId") == array}

    def _jobs(self):
        """The fields of every job slurmctld still holds, one dict each."""
        out = self.cmd("scontrol", "show", "job", "-o", timeout=120)
        return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in out.splitlines()]

    def stop(self):
        """Cancels every job, waits (up to 30 s) for their processes to end, then stops slurmd,
        slurmctld and munged by the PIDs started here, and last any leftover process whose
        working directory or open files lie in this cluster's directory (a job step whose
        slurmd went away). Never raises."""
        names = dict(self.procs)
        if all(names.get(d) and names[d].poll() is None for d in ["munged", "slurmctld", "slurmd"]):
            try:
                self.cmd("scancel", "--full", "--partition=bench", timeout=10, check=False)
                deadline = time.time() + 30
                while time.time() < deadline and (self.jobs() or self.stray_pids()):
                    time.sleep(0.1)
            except SlurmError:
                pass
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        for sig in [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]:
            pids = self.stray_pids()
            if not pids:
                break
            print(f"localslurm: stopping leftover processes {' '.join(map(str, pids))}", file=sys.stderr)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1)

    def stray_pids(self):
        """Processes working in or holding files under self.dir other than this one, the
        running daemons and their children (slurmctld's slurmscriptd): slurmstepd (which
        slurmd detaches) and the jobs it runs (whose working directory is self.dir)."""
        root = os.path.realpath(self.dir) + os.sep
        daemons = {p.pid for _, p in self.procs if p.poll() is None}
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid() or int(entry) in daemons:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) in daemons:
                        continue
                links = [os.readlink(f"/proc/{entry}/cwd")]
                links += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
            except (OSError, ValueError, IndexError):
                continue
            if any((l + os.sep).startswith(root) for l in links):
                pids.append(int(entry))
        return pids


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2) or not all(a.isdigit() for a in args[1:]) or os.geteuid() != 0:
        raise SystemExit("usage (as root): bench/slurm/localslurm.py DIR [CORES]")
    # Ctrl-C or a plain kill stops the cluster in order (also where the shell ignored SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    s = LocalSlurm(os.path.abspath(args[0]), int(args[1]) if args[1:] else None)
    try:
        s.start()
        print(f"Slurm is up: export SLURM_CONF={s.conf}; Ctrl-C stops it", flush=True)
        signal.pause()
    except SlurmError as e:
        print(f"localslurm: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()


if __name__ == "__main__":
    main()
