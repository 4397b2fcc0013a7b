"""augment side by side: the same classify/regress job with and without ``augment: [clusters,
anomaly, rules]``, paired by seed, on datasets of ../shared/corpus/.

For each (dataset, seed) every run shares the split seed and the training seed, so that the paired
difference (with - without) of the test metric (accuracy for classify, r2 for regress) isolates the
mined features. Prints one row per (dataset, seed), then per miner (``augment_models``) and dataset
the mean difference, its range over seeds and a bootstrap 95% interval over seeds, pooled intervals
over (dataset, seed) pairs, and with both miners their own paired difference. The default miners
were chosen on four of the eight datasets (CHOSEN_ON); the pooled figures are shown for those and
for the four held out apart. With 3 seeds an interval over seeds is coarse: read the range too.

    python benchmarks/bench_augment.py [--seeds 3] [--epochs 40] [--models tasks classic] [--corpus ../shared/corpus] [--json PATH]
    python benchmarks/bench_augment.py --smoke    # builtin breast_cancer, 1 seed, 2 epochs

``tasks`` mines clusters and anomaly with the cluster and detect tasks' own models; ``classic``
with k-means memberships and an IsolationForest score. Rules come from the project's exact miner
either way. Each run's own ``augment_gain`` is off: this script pairs them."""

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
#: small classification and regression sets of mixed column types from the corpus: the default
#: miners (augment_models) were chosen on the first four, CHOSEN_ON; the other four are held out
CHOSEN_ON = ["credit_card_acceptance", "olive_oil_area", "concrete_strength", "college_graduation_rate"]
DATASETS = [*CHOSEN_ON, "hawk_species", "orange_juice_purchase", "biomass_heating_value", "body_weight_from_girths"]
METRIC = {"classify": "accuracy", "regress": "r2"}


def run_pair(path: str, task: str, target: str, seed: int, epochs: int, out_root: str, name: str,
             models: list[str]) -> dict:
    """Test metric of the job without augment and with it for each of ``models`` (same split and
    training seed): ``plain``, and per model ``augment_<model>`` and ``diff_<model>``."""
    import dlmine_ray

    out = {}
    for label, augment, miners in [("plain", [], "tasks"), *((f"augment_{m}", KINDS, m) for m in models)]:
        job = {"name": f"augment-{name}-{seed}-{label}", "task": task,
               "data": {"path": path, "target": target, "split": {"valid": 0.15, "test": 0.2, "seed": seed}},
               "model": {"hidden": [128, 64], "dropout": 0.1},
               "train": {"epochs": epochs, "batch_size": 64, "seed": seed},
               "augment": augment, "augment_models": miners, "augment_gain": 0,  # the pairing is this script's
               "compare_baselines": False, "knowledge": "off"}
        t0 = time.perf_counter()
        res = dlmine_ray.run_job(job, os.path.join(out_root, job["name"]), quiet=True)
        out[label] = float(res.metrics[METRIC[task]])
        out[f"{label}_seconds"] = time.perf_counter() - t0
        if augment:
            out[f"added_{label[len('augment_'):]}"] = res.metrics.get("augment", {})
    for m in models:
        out[f"diff_{m}"] = out[f"augment_{m}"] - out["plain"]
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
    ap.add_argument("--models", nargs="+", choices=["tasks", "classic"], default=["tasks", "classic"],
                    help="what mines clusters and anomaly: the cluster/detect tasks' models, k-means/IsolationForest, "
                         "or both (default; then also tasks - classic, on the datasets the default was chosen on "
                         "and on the others)")
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
                print(f"{name} seed={seed}: {r['metric']} plain {r['plain']:.4f}; "
                      + "; ".join(f"{m} {r[f'augment_{m}']:.4f} ({r[f'diff_{m}']:+.4f}, added {r[f'added_{m}']})"
                                  for m in args.models), flush=True)
    assert not ray.is_initialized()
    summary = {}
    for m in args.models:
        print(f"\naugment_models: {m}: paired difference of the test metric, augment - plain (same split and "
              "training seed)")
        print("| dataset | metric | plain (mean) | augment (mean) | diff mean | diff range | 95% CI over seeds |")
        print("|---|---|---|---|---|---|---|")
        summary[m] = []
        for name, _, task, _ in cases:
            rs = [r for r in rows if r["dataset"] == name]
            d = [r[f"diff_{m}"] for r in rs]
            lo, hi = bootstrap(d)
            sm = {"dataset": name, "metric": METRIC[task], "plain": float(np.mean([r["plain"] for r in rs])),
                  "augment": float(np.mean([r[f"augment_{m}"] for r in rs])), "diff_mean": float(np.mean(d)),
                  "diff_min": float(np.min(d)), "diff_max": float(np.max(d)), "diff_ci": [lo, hi]}
            summary[m].append(sm)
            print(f"| {name} | {sm['metric']} | {sm['plain']:.4f} | {sm['augment']:.4f} | {sm['diff_mean']:+.4f} | "
                  f"[{sm['diff_min']:+.4f}, {sm['diff_max']:+.4f}] | [{lo:+.4f}, {hi:+.4f}] |")
        for group, members in _groups(cases):
            pooled(f"{m}, {group}", [r[f"diff_{m}"] for r in rows if r["dataset"] in members])
    if len(args.models) == 2:
        a, b = args.models
        print(f"\n{a} - {b} (augmented test metric, paired by dataset and seed; the plain runs are shared):")
        for group, members in _groups(cases):
            pooled(group, [r[f"augment_{a}"] - r[f"augment_{b}"] for r in rows if r["dataset"] in members])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pairs": rows, "summary": summary, "argv": sys.argv[1:]}, f, indent=1)
    return 0


def _groups(cases) -> list[tuple[str, set]]:
    """The datasets the default miners were chosen on, the others, and all of them."""
    names = {c[0] for c in cases}
    chosen_on, others = names & set(CHOSEN_ON), names - set(CHOSEN_ON)
    groups = [(f"the {len(chosen_on)} datasets augment_models' default was chosen on", chosen_on),
              (f"the {len(others)} held-out datasets", others)]
    return [g for g in groups if g[1]] + ([("all", names)] if chosen_on and others else [])


def pooled(label: str, values: list[float]) -> None:
    lo, hi = bootstrap(values)
    print(f"  {label}: {len(values)} (dataset, seed) pairs, mean {np.mean(values):+.4f}, median "
          f"{np.median(values):+.4f}, bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}]; positive on "
          f"{sum(x > 0 for x in values)}, negative on {sum(x < 0 for x in values)}")


if __name__ == "__main__":
    sys.exit(main())
