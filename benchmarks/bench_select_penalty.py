"""select.penalty chosen leave-one-dataset-out on corpus classification tables, and what the
choice does on the table it was not chosen on.

For each dataset of ../shared/corpus/ (classification, at least 8 feature columns) and each
penalty of a grid, one `dlmine run` of `task: select` per seed, with k fixed at a quarter of the
columns (at least 2): the test accuracy of HistGradientBoosting on the gates' k columns (and of
the network refitted on them). For each held-out dataset, the penalty with the least mean regret
(best accuracy of that dataset over the grid minus the penalty's) on the OTHER datasets is chosen,
and the held-out dataset's accuracy with it is reported beside the default's and mutual
information's k columns (the same runs' HGB on MI's top k).

    python benchmarks/bench_select_penalty.py [--seeds 2] [--epochs 30] [--penalties 0.001 0.01 0.1] [--json PATH]
    python benchmarks/bench_select_penalty.py --smoke   # two builtin tables, one seed, 2 epochs

Accuracy does not depend on timing: the figures hold on a busy machine; the seconds do not."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
#: the corpus's classification tables with at least 8 feature columns and at most 8,000 rows
DATASETS = ["hmda_mortgage_denial", "credit_card_acceptance", "british_election_vote", "ibm_hr_attrition",
            "telecom_churn_mlc", "cell_segmentation_quality", "email_spam", "hawk_species", "kershaw_pitch_type",
            "bfi_gender", "fishing_mode_choice", "resume_callback", "orange_juice_purchase"]


def run_one(path: str, target: str, n_cols: int, penalty: float, seed: int, epochs: int, out_root: str,
            name: str) -> dict:
    import dlmine_ray

    k = max(2, round(n_cols / 4))
    job = {"name": f"pen-{name}-{penalty:g}-{seed}", "task": "select",
           "data": {"path": path, "target": target, "split": {"valid": 0.15, "test": 0.2, "seed": seed}},
           "model": {"hidden": [128, 64], "dropout": 0.1},
           "train": {"epochs": epochs, "batch_size": 64, "seed": seed},
           "select": {"k": k, "penalty": penalty, "seeds": 0, "curve_points": 2},
           "compare_baselines": True, "knowledge": "off"}
    t0 = time.perf_counter()
    m = dlmine_ray.run_job(job, os.path.join(out_root, job["name"]), quiet=True).metrics
    return {"dataset": name, "penalty": penalty, "seed": seed, "k": k, "hgb_gates": m["hgb_gates_accuracy"],
            "mlp_gates": m["accuracy"], "hgb_mutual_info": m["hgb_mutual_info_accuracy"],
            "hgb_all": m["hgb_all_accuracy"], "seconds": time.perf_counter() - t0}


def leave_one_out(rows: list[dict], penalties: list[float], score: str) -> dict:
    """Per held-out dataset: the penalty of least mean regret on the others, and the held-out scores."""
    names = sorted({r["dataset"] for r in rows})
    mean = {(d, p): float(np.mean([r[score] for r in rows if r["dataset"] == d and r["penalty"] == p]))
            for d in names for p in penalties}
    regret = {(d, p): max(mean[d, q] for q in penalties) - mean[d, p] for d in names for p in penalties}
    out = {}
    for d in names:
        others = [o for o in names if o != d]
        chosen = min(penalties, key=lambda p: (np.mean([regret[o, p] for o in others]), p))
        out[d] = {"chosen": chosen, "score_chosen": mean[d, chosen], "regret_chosen": regret[d, chosen],
                  **{f"score_{p:g}": mean[d, p] for p in penalties}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    ap.add_argument("--default", type=float, default=0.01, help="the shipped select.penalty")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("--smoke", action="store_true", help="builtin breast_cancer and wine, one seed, 2 epochs")
    args = ap.parse_args(argv)
    if args.smoke:
        cases = [("breast_cancer", "builtin:breast_cancer", "label", 30), ("wine", "builtin:wine", "label", 13)]
        args.seeds, args.epochs, args.cpus, args.penalties = 1, 2, 1, [0.01, 0.1]
    else:
        manifest = {d["name"]: d for d in json.load(open(os.path.join(args.corpus, "manifest.json")))}
        cases = [(n, os.path.join(args.corpus, f"{n}.parquet"), manifest[n]["target"], manifest[n]["cols"])
                 for n in (args.datasets or DATASETS)]
    if args.default not in args.penalties:
        args.penalties = sorted([*args.penalties, args.default])
    import ray

    from dlmine_ray.runtime.session import ray_session

    rows = []
    with tempfile.TemporaryDirectory() as out_root, ray_session(num_cpus=args.cpus, object_store_mb=512):
        for name, path, target, n_cols in cases:
            for p in args.penalties:
                for seed in range(args.seeds):
                    r = run_one(path, target, n_cols, p, seed, args.epochs, out_root, name)
                    rows.append(r)
                    print(f"{name} penalty={p:g} seed={seed} k={r['k']}: HGB on gates' k {r['hgb_gates']:.4f}, "
                          f"network on them {r['mlp_gates']:.4f}, HGB on MI's k {r['hgb_mutual_info']:.4f} "
                          f"({r['seconds']:.0f}s)", flush=True)
    assert not ray.is_initialized()
    report = {}
    for score in ("hgb_gates", "mlp_gates"):
        loo = leave_one_out(rows, args.penalties, score)
        report[score] = loo
        mi = {d: float(np.mean([r["hgb_mutual_info"] for r in rows if r["dataset"] == d])) for d in loo}
        print(f"\n{score}: test accuracy, penalty chosen leave-one-dataset-out (least mean regret on the others)")
        hgb = score == "hgb_gates"  # mutual information's k columns are scored by HGB only (select.seeds 0)
        print("| held-out dataset | chosen | with chosen | with default " + f"{args.default:g} | "
              + " | ".join(f"{p:g}" for p in args.penalties) + (" | HGB on MI's k |" if hgb else " |"))
        print("|---|---|---|---|" + "---|" * len(args.penalties) + ("---|" if hgb else ""))
        for d, v in loo.items():
            print(f"| {d} | {v['chosen']:g} | {v['score_chosen']:.4f} | {v[f'score_{args.default:g}']:.4f} | "
                  + " | ".join(f"{v[f'score_{p:g}']:.4f}" for p in args.penalties) + (f" | {mi[d]:.4f} |" if hgb
                                                                                       else " |"))
        diff = [v["score_chosen"] - v[f"score_{args.default:g}"] for v in loo.values()]
        picks = {p: sum(v["chosen"] == p for v in loo.values()) for p in args.penalties}
        print(f"chosen: {picks}; held-out chosen - default: median {np.median(diff):+.4f} "
              f"[{min(diff):+.4f}, {max(diff):+.4f}]")
        if hgb:
            vs_mi = [v["score_chosen"] - mi[d] for d, v in loo.items()]
            print(f"held-out chosen - HGB on MI's k: median {np.median(vs_mi):+.4f} [{min(vs_mi):+.4f}, "
                  f"{max(vs_mi):+.4f}], ahead on {sum(x > 0 for x in vs_mi)}, behind on {sum(x < 0 for x in vs_mi)} "
                  f"of {len(vs_mi)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": rows, "leave_one_out": report, "argv": sys.argv[1:]}, f, indent=1)
    return 0 if all(math.isfinite(r["hgb_gates"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
