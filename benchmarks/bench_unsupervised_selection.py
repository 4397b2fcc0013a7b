"""Label-free model selection for cluster and detect, on data it was not designed on.

Sets are built from classification tables of ../shared/corpus/ that bench_model_selection.py does
not use (it takes the smallest ones; here the next --datasets by size), rows capped at --rows
(seeded):

- detect: the majority class is normal; rows of the other classes, drawn (seeded) to --share of
  the normal rows, are the anomalies (the ODDS recipe). The labels only score.
- cluster: the classes are the clusters to find, with k given (the number of classes). The
  labels only score.

Per set: (a) the untuned default job, (b) tuned: ``tune: {num_samples: --trials}`` without a
space (the task's default space), each trial a whole fit selected by the task's label-free
criterion (silhouette on the inputs for cluster, agreement with a classic-detector consensus for
detect), knowledge base and portfolio off; each next to its baseline (k-means, IsolationForest)
on the same rows. Printed: per set ROC-AUC / average precision (detect) or NMI (cluster), then per
task the median of tuned minus untuned, and how often each deep model reaches its baseline.

    python benchmarks/bench_unsupervised_selection.py --json out.json
    python benchmarks/bench_unsupervised_selection.py --smoke    # one tiny made-up set per task (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
#: bench_model_selection.py's default run takes the 10 smallest classification tables
SKIP_SMALLEST = 10
SMOKE = {"datasets": 1, "rows": 300, "epochs": 2, "trials": 2, "cpus": 1}
METRICS = {"detect": ("roc_auc", "average_precision"), "cluster": ("nmi",)}


def pick(n: int) -> list[dict]:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    tables = sorted([m for m in manifest if m["task"] == "classify"], key=lambda m: (m["rows"], m["name"]))
    return tables[SKIP_SMALLEST:SKIP_SMALLEST + n]


def made_up(folder: Path) -> list[dict]:
    """One small classification table in the corpus's format (smoke runs without the corpus)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=0)
    pd.DataFrame(x, columns=[f"x{j}" for j in range(6)]).assign(y=y).to_parquet(folder / "made.parquet")
    return [{"name": "made", "target": "y", "folder": str(folder)}]


def build(entry: dict, task: str, args, folder: Path) -> Path:
    """The detect or cluster set of one table (see the module's docstring), as one Parquet file."""
    df = pd.read_parquet(Path(entry.get("folder", CORPUS)) / f"{entry['name']}.parquet")
    target = entry["target"]
    rng = np.random.default_rng(0)
    if task == "detect":
        major = df[target].value_counts().index[0]
        normal, other = df[df[target] == major], df[df[target] != major]
        n_out = max(5, int(round(args.share * min(len(normal), args.rows))))
        normal = normal.sample(min(len(normal), args.rows - n_out), random_state=0)
        other = other.iloc[rng.choice(len(other), min(n_out, len(other)), replace=False)]
        out = pd.concat([normal, other]).assign(truth=lambda d: (d[target] != major).astype(int))
        out = out.drop(columns=[target])
    else:
        out = df.sample(min(len(df), args.rows), random_state=0).rename(columns={target: "truth"})
        out["truth"] = out["truth"].astype(str)
    out = out.sample(frac=1.0, random_state=1).reset_index(drop=True)
    path = folder / f"{entry['name']}-{task}.parquet"
    out.to_parquet(path, index=False)
    return path


def job(task: str, path: Path, args, k: int, tuned: bool) -> dict:
    spec = {"name": f"{path.stem}", "task": task, "data": {"path": str(path), "labels": "truth"},
            "train": {"epochs": args.epochs}, "knowledge": "off", "compare_baselines": True}
    if task == "cluster":
        spec["cluster"] = {"k": k, "distill_epochs": args.epochs, "refine_epochs": args.epochs}
    else:
        spec["detect"] = {"svdd_epochs": args.epochs}
    if tuned:
        spec["tune"] = {"num_samples": args.trials, "scheduler": "fifo", "warm_start": False}
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=8)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of each stage")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--share", type=float, default=0.05, help="detect: anomalies per normal row")
    ap.add_argument("--tasks", nargs="+", default=["detect", "cluster"], choices=["detect", "cluster"])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--smoke", action="store_true", help=f"a check that the script runs (CI): defaults {SMOKE}")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    if not (CORPUS / "manifest.json").is_file() and not args.smoke:
        sys.exit(f"the corpus is not at {CORPUS}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["DLMINE_PORTFOLIO"] = "off"
    import dlmine_ray
    from dlmine_ray.runtime.session import ray_session

    work = Path(tempfile.mkdtemp(prefix="dlmine_bench_us_"))
    rows, t_start = [], time.perf_counter()
    try:
        entries = made_up(work) if args.smoke else pick(args.datasets)
        with ray_session(num_cpus=args.cpus):
            for e in entries:
                for task in args.tasks:
                    path = build(e, task, args, work)
                    k = int(pd.read_parquet(path, columns=["truth"])["truth"].nunique())
                    row = {"dataset": e["name"], "task": task, "rows": int(len(pd.read_parquet(path))), "k": k}
                    for tuned in (False, True):
                        out = work / f"run-{time.time_ns()}"
                        t0 = time.perf_counter()
                        res = dlmine_ray.run_job(job(task, path, args, k, tuned), out, quiet=True)
                        which = "tuned" if tuned else "untuned"
                        for m in METRICS[task]:
                            row[f"{which}_{m}"] = res.metrics.get(m)
                            row[f"baseline_{m}"] = res.metrics.get(f"baseline_{m}")
                        row[f"{which}_seconds"] = round(time.perf_counter() - t0, 1)
                        shutil.rmtree(out, ignore_errors=True)
                    rows.append(row)
                    print(f"{e['name']} {task} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    print(df.round(4).to_string(index=False))
    print("\nper task and metric: median [q25, q75] of tuned - untuned; share of sets where each reaches the baseline")
    for task in args.tasks:
        for m in METRICS[task]:
            d = df[df["task"] == task]
            gain = (d[f"tuned_{m}"] - d[f"untuned_{m}"]).to_numpy(dtype=float)
            print(f"{task:8s} {m:18s} gain {np.median(gain):+.3f} [{np.quantile(gain, 0.25):+.3f}, "
                  f"{np.quantile(gain, 0.75):+.3f}]  tuned > untuned {np.mean(gain > 0):.0%}  "
                  f"untuned >= baseline {np.mean(d[f'untuned_{m}'] >= d[f'baseline_{m}']):.0%}  "
                  f"tuned >= baseline {np.mean(d[f'tuned_{m}'] >= d[f'baseline_{m}']):.0%}  ({len(d)} sets)")
    print(f"\n{len(entries)} tables, rows <= {args.rows}, epochs <= {args.epochs} per stage, {args.trials} trials, "
          f"{time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
