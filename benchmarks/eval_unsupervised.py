"""The quality figures of the unsupervised tasks, each measured side by side with its baseline
in the same run:

- cluster on scikit-learn's digits (labels used only for scoring): NMI / ARI / accuracy of the
  deep model and of k-means on the same preprocessed features, with 1 and 2 Ray Train workers;
- detect on ODDS-style 'wdbc' sets (every benign row + 10 malignant rows drawn with seed s),
  s = 0..4: ROC-AUC / average precision of the deep model and of IsolationForest, with 1 and
  2 workers; the mean over the seeds.

The jobs are the demo's (dlmine_ray/demo_jobs/04_*.yaml, 05_*.yaml); a 2-worker run trains
with a TorchTrainer (scaling.num_workers=2), a 1-worker run in one Ray task.

    python benchmarks/eval_unsupervised.py [--seeds 5] [--workers 1 2] [--json out.json]
    python benchmarks/eval_unsupervised.py --smoke   # seconds: one set, one worker, ``dlmine demo --quick``'s epochs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _job(name: str) -> Path:
    root = resources.files("dlmine_ray") / "demo_jobs"
    return next(Path(str(p)) for p in root.iterdir() if p.name.endswith(name))


#: --smoke: one wdbc set, one worker (a Ray task), one CPU, two epochs per stage
SMOKE = {"seeds": 1, "workers": [1], "cpus": 1, "quick": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="wdbc sets (and training seeds) 0..N-1")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--skip", choices=["cluster", "detect"], nargs="*", default=[])
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--quick", action="store_true",
                    help="the epochs of `dlmine demo --quick` (two per stage): checks, not figures")
    ap.add_argument("--smoke", action="store_true",
                    help=f"a short run that only checks the script works (CI): defaults become {SMOKE}, "
                         "explicit options still win; its figures mean nothing")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()

    from dlmine_ray.app.jobfile import load_job
    from dlmine_ray.app.run import run_job
    from dlmine_ray.runtime.session import ray_session
    from dlmine_ray.tasks import get_task

    def job(name: str, overrides: list):
        spec = load_job(_job(name), overrides)
        if args.quick:  # as `dlmine demo --quick` does
            spec = load_job(_job(name), overrides + get_task(spec.task).quick_overrides(spec))
        return spec

    rows = []
    # the run folders are removed at the end (the figures are printed, and written to --json)
    with tempfile.TemporaryDirectory(prefix="dlmine_eval_") as out, ray_session(None, False, args.cpus):
        for workers in args.workers:
            scale = [("scaling.num_workers", workers)]
            if "cluster" not in args.skip:
                t = time.perf_counter()
                r = run_job(job("04_digits_cluster.yaml", scale), f"{out}/digits-{workers}", quiet=True)
                m = r.metrics
                rows.append({"task": "cluster", "data": "digits", "workers": workers, "seed": 0,
                             **{k: m.get(k) for k in ("nmi", "ari", "acc", "silhouette", "baseline_nmi", "baseline_ari",
                                                      "baseline_acc", "baseline_silhouette", "trainer")},
                             "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(rows[-1]), flush=True)
            if "detect" not in args.skip:
                for seed in range(args.seeds):
                    t = time.perf_counter()
                    spec = job("05_wdbc_detect.yaml",
                               scale + [("data.path", f"builtin:wdbc:{seed}"), ("train.seed", seed)])
                    r = run_job(spec, f"{out}/wdbc-{workers}-{seed}", quiet=True)
                    m = r.metrics
                    rows.append({"task": "detect", "data": f"wdbc:{seed}", "workers": workers, "seed": seed,
                                 **{k: m.get(k) for k in ("roc_auc", "average_precision", "precision_at_n",
                                                          "baseline_roc_auc", "baseline_average_precision",
                                                          "baseline_precision_at_n", "trainer")},
                                 "seconds": round(time.perf_counter() - t, 1)})
                    print(json.dumps(rows[-1]), flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    print()
    for task, metric in (("cluster", "nmi"), ("detect", "roc_auc")):
        part = df[df["task"] == task]
        for workers, g in part.groupby("workers"):
            ours, base = g[metric].mean(), g[f"baseline_{metric}"].mean()
            print(f"{task:8s} workers={workers}  mean {metric} {ours:.4f}  baseline {base:.4f}  "
                  f"difference {ours - base:+.4f}  over {len(g)} run(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
