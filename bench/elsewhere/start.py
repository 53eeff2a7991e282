"""bench/run's container start benchmark (its Work, alternatives, interleaved measure and
table), for bench/elsewhere/run.sh: without the rows of crun, runc and podman, which are not
installed on such a machine. Prints the table; writes start.json into $OUT (or /tmp)."""
import importlib.machinery
import importlib.util
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(REPO, "bench", "run"))
spec = importlib.util.spec_from_loader("bench_run", loader)
bench = importlib.util.module_from_spec(spec)
loader.exec_module(bench)

runs = int(sys.argv[1])
print("machine:", json.dumps(bench.machine()))
w = bench.Work()
w.oci_bundle = lambda: None  # runc's bundle: runc is not there
try:
    alternatives = [a for a in bench.start_alternatives(w) if not a[0].startswith(("crun", "runc", "podman"))]
    results = bench.measure(alternatives, runs, timeout=60)
finally:
    w.cleanup()
md, data = bench.table("start: `true` in busybox, image cached", results, "berth exec (unprivileged, directory)")
print(md)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "start.json"), "w") as f:
    json.dump({"machine": bench.machine(), "runs": runs, "results": data}, f, indent=2)
