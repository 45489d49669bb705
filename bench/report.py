"""Time to write the HTML report of a run, in a fresh process (imports included).

    python bench/report.py runs/demo             # after `unlearn demo`
    python bench/report.py runs/demo --repeat 5

Prints, per repeat, the wall and CPU seconds of importing `unlearnkit.report` plus `write_html`
(each repeat in a new process, as `unlearn report` runs), and the file's size. CPU seconds are what
the wall time is on an idle machine; on a shared one the wall time is longer by the load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
t0, c0 = time.perf_counter(), time.process_time()
from unlearnkit.report import write_html
p = write_html([sys.argv[1]], sys.argv[2])
print(time.perf_counter() - t0, time.process_time() - c0, p.stat().st_size)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run directory or metrics JSON")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.run.exists():
        ap.error(f"{args.run}: no such file or directory")
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: must be >= 1")
    src = Path(__file__).resolve().parents[1] / "src"
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.run), str(Path(tmp) / "report.html")],
                                 capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"})
            if out.returncode:  # the report's own one-line error, not the child's traceback
                last = (out.stderr.strip().splitlines() or ["the report failed"])[-1]
                kind, _, message = last.partition(": ")
                sys.exit(f"error: {message if message and ' ' not in kind else last}")
            wall, cpu, size = out.stdout.split()
            walls.append(float(wall))
            cpus.append(float(cpu))
            print(f"run {i + 1}: wall {float(wall):.2f} s, cpu {float(cpu):.2f} s, {int(size) / 1e6:.3f} MB")
    print(f"median: wall {statistics.median(walls):.2f} s, cpu {statistics.median(cpus):.2f} s")


if __name__ == "__main__":
    main()
