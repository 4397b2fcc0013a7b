"""Run a command and report its wall time and the peak memory of its whole process tree.

  python benchmarks/peak_memory.py -- dlmine run jobs/synthetic_2m.yaml --output runs/s2m --overwrite
  python benchmarks/peak_memory.py --smoke   # a few seconds: a child that starts a 1-CPU local Ray (CI)

A local Ray started by the command (GCS, raylet, workers) runs as its descendants, so the tree
covers everything the job uses. Two figures: the peak of summed RSS (counts pages shared between
processes, such as the object store, once per process: an upper bound) and the peak of summed
PSS (shared pages split between the processes that map them: closer to the real footprint).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import os


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (Linux)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def rss_pss(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


class TreePeak:
    """Peak summed PSS of a process tree (default: this process and its descendants, which
    include a local Ray it started) while the ``with`` body runs, above the value at entry."""

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        self.pid, self.interval = pid or os.getpid(), interval
        self.base = self.peak = 0

    def _pss(self) -> int:
        return sum(rss_pss(p)[1] for p in process_tree(self.pid))

    def __enter__(self):
        self.base = self.peak = self._pss()
        self._done = threading.Event()

        def sample():
            while not self._done.is_set():
                self.peak = max(self.peak, self._pss())
                self._done.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._pss())

    @property
    def extra(self) -> int:
        """Bytes above the value at entry, at the peak."""
        return self.peak - self.base


#: --smoke: the command measured (a local Ray with one CPU, one task, shut down)
SMOKE = [sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False); "
         "print(ray.get(ray.remote(lambda: 'smoke ok').remote())); ray.shutdown()"]


def run_measured(argv: list[str], interval: float = 2.0, on_sample=None, **popen) -> tuple[int, float, dict]:
    """Run ``argv`` (``popen``: Popen's keyword arguments) and sample its process tree every
    ``interval`` s (reading smaps of ~40 processes costs CPU itself); returns its exit code, wall
    seconds and peak {"rss", "pss", "procs"}. ``on_sample(pids)`` is called at each sample."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, **popen)
    peak = {"rss": 0, "pss": 0, "procs": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = pss = 0
            procs = process_tree(proc.pid)
            for p in procs:
                r, q = rss_pss(p)
                rss += r
                pss += q
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            peak["procs"] = max(peak["procs"], len(procs))
            if on_sample is not None:
                on_sample(procs)
            done.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    code = proc.wait()
    done.set()
    th.join()
    return code, time.perf_counter() - t0, peak


def main(argv: list[str]) -> int:
    if argv == ["--smoke"]:
        argv = SMOKE
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print(__doc__)
        return 2
    code, wall, peak = run_measured(argv)
    print(f"\nexit {code}; wall {wall:.1f} s; peak process-tree memory: PSS {peak['pss'] / 2**30:.2f} GiB, "
          f"RSS {peak['rss'] / 2**30:.2f} GiB (up to {peak['procs']} processes)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
