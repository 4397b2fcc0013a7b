"""Feature selection side by side: each selector's top k columns, scored downstream on the test split.

One `dlmine run` of `task: select` per (dataset, k, seed) with `select.k` fixed; every run ranks
the columns five ways (stochastic gates, the gated model's permutation importance, mutual
information, an L1 logistic model, HistGradientBoosting permutation importance) and fits
HistGradientBoosting on each ranking's top k and on all columns, scored on the same test split.
The deep model refitted on the gates' k columns is scored too ("deep on gates").

Prints, per (dataset, k), the median test accuracy over seeds of each, the stability of each
selector's chosen set (mean Jaccard over pairs of seeds: the seed moves the split, the training
and the selectors' own randomness), and the head-to-head the issue asks for: gates against mutual
information.

    python benchmarks/bench_select.py [--seeds 3] [--epochs 40] [--json PATH]
    python benchmarks/bench_select.py --smoke

Defaults (select.penalty, the gates' speed) were chosen on synthetic tables
(data.synthetic.make_informative_columns, seeds 1 and 2), not on these datasets."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from dlmine_ray.tasks.select import SELECTORS  # noqa: E402  (after the environment is set)

#: (builtin dataset, k): the cases the issue names
CASES = [("digits", 10), ("digits", 20), ("breast_cancer", 5)]


def run_case(name: str, k: int, seed: int, epochs: int, out_root: str) -> dict:
    import pandas as pd

    import dlmine_ray

    job = {"name": f"select-{name}-{k}-{seed}", "task": "select",
           "data": {"path": f"builtin:{name}", "target": "label", "id": "row_id",
                    "split": {"valid": 0.15, "test": 0.2, "seed": seed}},
           "model": {"hidden": [256, 128], "dropout": 0.1},
           "train": {"epochs": epochs, "batch_size": 64, "seed": seed, "early_stopping": 0},
           "select": {"k": k}, "compare_baselines": True, "knowledge": "off"}
    t0 = time.perf_counter()
    res = dlmine_ray.run_job(job, os.path.join(out_root, job["name"]), quiet=True)
    m = res.metrics
    table = pd.read_parquet(os.path.join(res.output, "features.parquet"))
    chosen = {s: set(table.sort_values(f"{s}_rank")["feature"][:k]) for s in SELECTORS}
    acc = {s: m[f"hgb_{s}_accuracy"] for s in SELECTORS}
    acc["all"] = m["hgb_all_accuracy"]
    acc["deep on gates"] = m["accuracy"]
    return {"dataset": name, "k": k, "seed": seed, "accuracy": acc, "chosen": {s: sorted(v) for s, v in chosen.items()},
            "seconds": time.perf_counter() - t0}


def jaccard(sets: list[set]) -> float:
    pairs = list(itertools.combinations(sets, 2))
    return float(np.mean([len(a & b) / max(len(a | b), 1) for a, b in pairs])) if pairs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("--smoke", action="store_true", help="one case, one seed, 2 epochs: checks that it runs")
    args = ap.parse_args(argv)
    cases = CASES
    if args.smoke:
        cases, args.seeds, args.epochs, args.cpus = [("breast_cancer", 5)], 1, 2, 1
    import ray

    from dlmine_ray.runtime.session import ray_session

    runs = []
    with tempfile.TemporaryDirectory() as out_root, ray_session(num_cpus=args.cpus, object_store_mb=512):
        for name, k in cases:
            for seed in range(args.seeds):
                r = run_case(name, k, seed, args.epochs, out_root)
                runs.append(r)
                print(f"{name} k={k} seed={seed}: " + ", ".join(f"{s} {v:.3f}" for s, v in r["accuracy"].items())
                      + f" ({r['seconds']:.0f}s)", flush=True)
    assert not ray.is_initialized()
    columns = ["deep on gates", *SELECTORS, "all"]
    print("\nmedian test accuracy over seeds (HGB on each selector's top k; 'deep on gates': the refitted MLP)")
    print("| dataset | k | " + " | ".join(columns) + " | gates - MI (per seed) |")
    print("|---" * (len(columns) + 3) + "|")
    summary = []
    for name, k in cases:
        rs = [r for r in runs if r["dataset"] == name and r["k"] == k]
        med = {c: float(np.median([r["accuracy"][c] for r in rs])) for c in columns}
        diffs = [r["accuracy"]["gates"] - r["accuracy"]["mutual_info"] for r in rs]
        stab = {s: jaccard([set(r["chosen"][s]) for r in rs]) for s in SELECTORS}
        summary.append({"dataset": name, "k": k, "median_accuracy": med, "gates_minus_mi": diffs, "stability": stab})
        print(f"| {name} | {k} | " + " | ".join(f"{med[c]:.3f}" for c in columns)
              + " | " + ", ".join(f"{d:+.3f}" for d in diffs) + " |")
    print("\nstability: mean Jaccard of the chosen sets over pairs of seeds")
    print("| dataset | k | " + " | ".join(SELECTORS) + " |")
    print("|---" * (len(SELECTORS) + 2) + "|")
    for s in summary:
        print(f"| {s['dataset']} | {s['k']} | " + " | ".join(f"{s['stability'][x]:.2f}" for x in SELECTORS) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "summary": summary, "argv": sys.argv[1:]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
