"""augment side by side: the same classify/regress job with and without ``augment: [clusters,
anomaly, rules]``, paired by seed, on datasets of ../shared/corpus/.

For each (dataset, seed) both runs share the split seed and the training seed, so that the paired
difference (with - without) of the test metric (accuracy for classify, r2 for regress) isolates the
mined features. Prints one row per (dataset, seed), then per dataset the mean difference, its
range over seeds and a bootstrap 95% interval over seeds, and a pooled bootstrap interval over
all (dataset, seed) pairs. With 3 seeds an interval over seeds is coarse: read the range too.

    python benchmarks/bench_augment.py [--seeds 3] [--epochs 40] [--corpus ../shared/corpus] [--json PATH]
    python benchmarks/bench_augment.py --smoke    # builtin breast_cancer, 1 seed, 2 epochs

``--models tasks`` (default) mines clusters and anomaly with the cluster and detect tasks' own models;
``--models classic`` with k-means memberships and an IsolationForest score. Rules come from the
project's exact miner either way. Each run's own ``augment_gain`` is off: this script pairs them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
KINDS = ["clusters", "anomaly", "rules"]
#: (corpus dataset, task): small classification and regression sets of mixed column types
DATASETS = ["credit_card_acceptance", "olive_oil_area", "concrete_strength", "college_graduation_rate"]
METRIC = {"classify": "accuracy", "regress": "r2"}


def run_pair(path: str, task: str, target: str, seed: int, epochs: int, out_root: str, name: str,
             models: str = "tasks") -> dict:
    """Test metric of the job without and with augment (same split and training seed)."""
    import dlmine_ray

    out = {}
    for label, augment in (("plain", []), ("augment", KINDS)):
        job = {"name": f"augment-{name}-{seed}-{label}", "task": task,
               "data": {"path": path, "target": target, "split": {"valid": 0.15, "test": 0.2, "seed": seed}},
               "model": {"hidden": [128, 64], "dropout": 0.1},
               "train": {"epochs": epochs, "batch_size": 64, "seed": seed},
               "augment": augment, "augment_models": models, "augment_gain": 0,  # the pairing is this script's
               "compare_baselines": False, "knowledge": "off"}
        t0 = time.perf_counter()
        res = dlmine_ray.run_job(job, os.path.join(out_root, job["name"]), quiet=True)
        out[label] = float(res.metrics[METRIC[task]])
        out[f"{label}_seconds"] = time.perf_counter() - t0
        if augment:
            out["added"] = res.metrics.get("augment", {})
    out["diff"] = out["augment"] - out["plain"]
    return out


def bootstrap(values: list[float], seed: int = 0, reps: int = 10_000) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``values`` over resamples."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
    ap.add_argument("--datasets", nargs="*", default=None, help=f"corpus names (default: {' '.join(DATASETS)})")
    ap.add_argument("--models", choices=["tasks", "classic"], default="tasks",
                    help="what mines clusters and anomaly: the cluster/detect tasks' models (default) or "
                         "k-means/IsolationForest")
    ap.add_argument("--json", help="write every pair's figures here")
    ap.add_argument("--smoke", action="store_true", help="builtin breast_cancer, 1 seed, 2 epochs: checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        cases = [("breast_cancer", "builtin:breast_cancer", "classify", "label")]
        args.seeds, args.epochs, args.cpus = 1, 2, 1
    else:
        manifest = {d["name"]: d for d in json.load(open(os.path.join(args.corpus, "manifest.json")))}
        cases = [(n, os.path.join(args.corpus, f"{n}.parquet"), manifest[n]["task"], manifest[n]["target"])
                 for n in (args.datasets or DATASETS)]
    import ray

    from dlmine_ray.runtime.session import ray_session

    rows = []
    with tempfile.TemporaryDirectory() as out_root, ray_session(num_cpus=args.cpus, object_store_mb=512):
        for name, path, task, target in cases:
            for seed in range(args.seeds):
                r = run_pair(path, task, target, seed, args.epochs, out_root, name, args.models)
                r.update({"dataset": name, "task": task, "metric": METRIC[task], "seed": seed})
                rows.append(r)
                print(f"{name} seed={seed}: {r['metric']} plain {r['plain']:.4f}, augment {r['augment']:.4f}, "
                      f"diff {r['diff']:+.4f}; added {r['added']} ({r['plain_seconds']:.0f}s / "
                      f"{r['augment_seconds']:.0f}s)", flush=True)
    assert not ray.is_initialized()
    print("\npaired difference of the test metric, augment - plain (same split and training seed)")
    print("| dataset | metric | plain (mean) | augment (mean) | diff mean | diff range | 95% CI over seeds |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for name, _, task, _ in cases:
        rs = [r for r in rows if r["dataset"] == name]
        d = [r["diff"] for r in rs]
        lo, hi = bootstrap(d)
        s = {"dataset": name, "metric": METRIC[task], "plain": float(np.mean([r["plain"] for r in rs])),
             "augment": float(np.mean([r["augment"] for r in rs])), "diff_mean": float(np.mean(d)),
             "diff_min": float(np.min(d)), "diff_max": float(np.max(d)), "diff_ci": [lo, hi]}
        summary.append(s)
        print(f"| {name} | {s['metric']} | {s['plain']:.4f} | {s['augment']:.4f} | {s['diff_mean']:+.4f} | "
              f"[{s['diff_min']:+.4f}, {s['diff_max']:+.4f}] | [{lo:+.4f}, {hi:+.4f}] |")
    d_all = [r["diff"] for r in rows]
    lo, hi = bootstrap(d_all)
    print(f"\npooled over {len(d_all)} (dataset, seed) pairs: mean diff {np.mean(d_all):+.4f}, "
          f"bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}]; positive on {sum(x > 0 for x in d_all)}, "
          f"negative on {sum(x < 0 for x in d_all)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pairs": rows, "summary": summary, "argv": sys.argv[1:]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
