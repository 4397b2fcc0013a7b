"""Run a command and report its wall time and the peak memory of its whole process tree.

  python benchmarks/peak_memory.py -- dlmine run jobs/synthetic_2m.yaml --output runs/s2m --overwrite

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

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print(__doc__)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    peak = {"rss": 0, "pss": 0, "procs": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = pss = 0
            procs = _tree(proc.pid)
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            peak["procs"] = max(peak["procs"], len(procs))
            done.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    code = proc.wait()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    print(f"\nexit {code}; wall {wall:.1f} s; peak process-tree memory: PSS {peak['pss'] / 2**30:.2f} GiB, "
          f"RSS {peak['rss'] / 2**30:.2f} GiB (up to {peak['procs']} processes)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
