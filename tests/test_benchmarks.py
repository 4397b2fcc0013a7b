"""Every script in benchmarks/ runs once at tiny sizes (its smoke arguments) and exits 0.

Each runs in a fresh process that starts (and shuts down) a local Ray of its own, in a temporary
working directory, so nothing lands in the repository. The figures are not checked: at these sizes
they mean nothing; what is checked is that the scripts still run against the package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

#: script -> its smoke arguments (see benchmarks/README.md); each takes 5-30 s on 2 cores
SMOKE = {
    "bench_augment.py": ["--smoke"],
    "bench_detect_scoring.py": ["--smoke"],
    "bench_fixed_cost.py": ["--smoke"],
    "bench_intervals.py": ["--smoke"],
    "bench_model_selection.py": ["--smoke"],
    "bench_pipeline.py": ["--smoke"],
    "bench_rules.py": ["--smoke"],
    "bench_rules_small.py": ["--smoke"],
    "bench_scale.py": ["--smoke"],
    "bench_select.py": ["--smoke"],
    "bench_select_penalty.py": ["--smoke"],
    "bench_split_scoring.py": ["--smoke"],
    "bench_unsupervised_selection.py": ["--smoke"],
    "eval_split.py": ["--smoke"],
    "eval_unsupervised.py": ["--smoke"],
    "peak_memory.py": ["--smoke"],
}
#: further smoke runs of a script's other modes: (script, arguments)
MORE_SMOKE = [("bench_rules.py", ["--smoke", "--dense", "6"])]
TIMEOUT_S = 240


def test_every_benchmark_has_a_smoke_run():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(SMOKE)


@pytest.mark.parametrize("script,args", [(s, SMOKE[s]) for s in sorted(SMOKE)] + MORE_SMOKE,
                         ids=[s for s in sorted(SMOKE)] + [f"{s} {' '.join(a)}" for s, a in MORE_SMOKE])
def test_benchmark_smoke(script, args, tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.pop("RAY_ADDRESS", None)  # a Ray of its own, never a running cluster (the tests' Ray included)
    cmd = [sys.executable, str(BENCH / script), *args]
    t0 = time.perf_counter()
    # a session of its own, so that a run past the timeout is stopped with the Ray it started
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} ran past {TIMEOUT_S} s\n"
                    f"--- stdout (tail) ---\n{out[-3000:]}\n--- stderr (tail) ---\n{err[-3000:]}")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, (f"{script} {' '.join(args)} exited {proc.returncode} after {wall:.0f} s\n"
                                  f"--- stdout (tail) ---\n{out[-3000:]}\n--- stderr (tail) ---\n{err[-3000:]}")
