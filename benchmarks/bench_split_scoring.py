#!/usr/bin/env python
"""A run's scoring of its encoded test split, in the driver and through Ray Data, against a bare
forward pass of the same model over the same rows in memory, at split sizes either side of
``scaling.driver_max_mb``.

    python benchmarks/bench_split_scoring.py [--rows 300000 1000000 3000000] [--features 32]
                                             [--blocks 8] [--repeats 2] [--cpus 2] [--json PATH]

Untimed set-up: ``run_job`` trains a classify model (the default MLP, 1 epoch) on a small
``make_data("classification")`` table of ``--features`` columns. Then, for each ``--rows`` n, an
encoded split as a run holds it: ``n`` rows of standard-normal float32 features (the encoded
columns are standardised; the forward pass costs the same whatever the values) in ``--blocks``
blocks of a materialized Ray Dataset with a ``features`` column. On those rows, each ``--repeats``
times (the two ways in alternating order, so neither always runs second on a warmer cache):

- bare: the model's own ``forward`` over the rows as one in-memory tensor, batches of 8,192,
  ``--cpus`` torch threads (after a warm-up);
- here: ``infer.score_here`` (what a run does for a split of at most ``scaling.driver_max_mb``):
  the blocks fetched from the object store, scored in this process, prediction columns built;
- ray: ``infer.score_encoded`` (what a run does above it), consumed as pipelines/tabular.py
  consumes it (numpy batches of 65,536 rows), each Ray task with one torch thread.

Printed: seconds (best and median) and the ratio bare / ours of the best runs (rows/s ours over
rows/s bare; 1.00 = as fast as the bare forward, which builds no prediction columns), and which
way a run picks for that split by default. Cores used by other processes during each
measurement are reported; a WARNING there means the ratios are not trustworthy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_pipeline import TreeSampler, _bare_forward, _json_default, wait_quiet  # noqa: E402

WAYS = ("bare", "here", "ray")


def train_model(work: Path, features: int, rows: int) -> str:
    """A classify model folder trained on a small synthetic table (untimed)."""
    from dlmine_ray import run_job
    from dlmine_ray.data.synthetic import make_data

    make_data("classification", rows, features, 2, str(work / "train"), seed=1)
    job = {"name": "split-scoring", "task": "classify",
           "data": {"path": str(work / "train"), "target": "label", "id": "row_id"},
           "train": {"epochs": 1}, "compare_baselines": False, "knowledge": "off"}
    return str(Path(run_job(job, str(work / "run"), quiet=True).output) / "model")


def measure(n: int, args, model_dir: str, sampler: TreeSampler) -> dict[str, Any]:
    import ray

    from dlmine_ray.infer import LoadedModel, score_encoded, score_here, scores_in_driver
    from dlmine_ray.spec import DRIVER_MAX_MB

    model = LoadedModel(model_dir).model.eval()
    x = np.random.default_rng(n).normal(size=(n, args.features)).astype(np.float32)
    split = ray.data.from_numpy(np.array_split(x, args.blocks)).rename_columns({"data": "features"}).materialize()
    xt = torch.from_numpy(x)
    runs: dict[str, list[float]] = {w: [] for w in WAYS}
    windows: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
    ways = {"here": lambda: score_here(split, model_dir, threads=args.cpus),
            "ray": lambda: score_encoded(split, model_dir).iter_batches(batch_format="numpy", batch_size=65536)}
    for r in range(args.repeats):
        scratch: dict = {}
        runs["bare"].append(_bare_forward(model, xt, 8192, args.cpus, scratch, "bare"))
        windows["bare"].append(scratch["bare"])
        for way in (("ray", "here") if r % 2 == 0 else ("here", "ray")):
            sampler.sample()
            w0, t0 = time.monotonic(), time.perf_counter()
            got = sum(len(next(iter(b.values()))) for b in ways[way]())
            runs[way].append(time.perf_counter() - t0)
            sampler.sample()
            windows[way].append((w0, time.monotonic()))
            if got != n:
                raise RuntimeError(f"{way} scored {got:,} rows of {n:,}")
    size = int(split.size_bytes())
    others = {w: max(sampler.cpu_between(a, b).get("foreign_cores", 0.0) for a, b in windows[w]) for w in WAYS}
    return {"rows": n, "split_mib": round(size / 2**20, 1), "default": "here" if scores_in_driver(size, DRIVER_MAX_MB) else "ray",
            "runs": runs, "best": {w: min(v) for w, v in runs.items()},
            "median": {w: statistics.median(v) for w, v in runs.items()},
            "ratio": {w: min(runs["bare"]) / min(runs[w]) for w in ("here", "ray")}, "other_cores": others}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[300_000, 1_000_000, 3_000_000])
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--train-rows", type=int, default=20_000)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for the machine's CPU to be < 15%% busy")
    p.add_argument("--json", help="write all results as JSON to this path")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one CPU: checks that the script runs (CI)")
    if p.parse_known_args(argv)[0].smoke:
        p.set_defaults(rows=[3000], features=4, blocks=2, repeats=1, cpus=1, train_rows=1000)
    args = p.parse_args(argv)
    from dlmine_ray.runtime.session import ray_session

    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    results = []
    with tempfile.TemporaryDirectory(prefix="dlmine_bench_split_") as work, ray_session(num_cpus=args.cpus):
        model_dir = train_model(Path(work), args.features, args.train_rows)
        sampler = TreeSampler().start()
        try:
            for n in args.rows:
                print(f"[bench] {n:,} rows ...", file=sys.stderr, flush=True)
                results.append(measure(n, args, model_dir, sampler))
        finally:
            sampler.stop()
    print(f"{'rows':>11} {'MiB':>7} {'default':>8} {'bare s':>8} {'here s':>8} {'ray s':>8} "
          f"{'here/bare':>10} {'ray/bare':>9}   other cores (max per window)")
    for r in results:
        b, m = r["best"], r["median"]
        print(f"{r['rows']:>11,} {r['split_mib']:>7} {r['default']:>8} {b['bare']:>8.2f} {b['here']:>8.2f} {b['ray']:>8.2f} "
              f"{r['ratio']['here']:>10.2f} {r['ratio']['ray']:>9.2f}   "
              + " ".join(f"{w} {v:.2f}" for w, v in r["other_cores"].items()))
        if m != b:
            print(f"{'':>28}median {m['bare']:>8.2f} {m['here']:>8.2f} {m['ray']:>8.2f}")
    busy = [f"{r['rows']:,} rows {w}" for r in results for w, v in r["other_cores"].items() if v > 0.2]
    if busy:
        print("WARNING: other processes used > 0.2 cores during: " + "; ".join(busy)
              + " -- the ratios are not trustworthy; rerun on a quiet machine (--wait-quiet 600)")
    print("ratio: rows/s of ours over rows/s of a bare forward pass over the same rows in memory (best runs)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1,
                                              default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
