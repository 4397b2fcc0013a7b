"""The default split on a table of repeated rows: the old split (a hash of every column, target
included, so copies of one (features, label) pair go to one split) against the new one (a hash of
the row's file and position), next to a scikit-learn reference (a seeded random 70/30
``train_test_split`` and HistGradientBoosting), over several data seeds.

    python benchmarks/eval_split.py [--rows 40000] [--seeds 0 1 2]
    python benchmarks/eval_split.py --smoke   # seconds: 2,000 rows, one seed, one epoch

The old split is reproduced with today's code by keying the split on a column that holds a hash
of the whole row (``data.id: row_content``), which is what the old default did.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pandas as pd


def reference(df: pd.DataFrame, seed: int) -> dict:
    """HGB on a random stratified 70/30 split: test ROC-AUC and accuracy."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    x = df.drop(columns="label").assign(cat=df["cat"].map({"a": 0, "b": 1, "c": 2}))
    tr, te = train_test_split(np.arange(len(df)), test_size=0.3, random_state=seed, stratify=df["label"])
    m = HistGradientBoostingClassifier(random_state=0).fit(x.iloc[tr], df["label"].iloc[tr])
    p = m.predict_proba(x.iloc[te])[:, 1]
    return {"roc_auc": roc_auc_score(df["label"].iloc[te], p), "accuracy": accuracy_score(df["label"].iloc[te], p > 0.5)}


#: --smoke: a small table, one seed, one epoch, one CPU
SMOKE = {"rows": 2000, "seeds": [0], "epochs": 1, "cpus": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of each deep model")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--smoke", action="store_true",
                    help=f"a short run that only checks the script works (CI): defaults become {SMOKE}, "
                         "explicit options still win; its figures mean nothing")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()

    import dlmine_ray
    from dlmine_ray.data.synthetic import make_repeated_rows
    from dlmine_ray.runtime.session import ray_session

    rows = []
    with ray_session(num_cpus=args.cpus), tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            df = make_repeated_rows(args.rows, seed)
            path = os.path.join(tmp, f"survey-{seed}.parquet")
            df.assign(row_content=pd.util.hash_pandas_object(df, index=False).to_numpy()).to_parquet(path, index=False)
            ref = reference(df, seed)
            rows.append({"seed": seed, "split": "sklearn train_test_split (reference, HGB)",
                         "deep roc_auc": None, "baseline roc_auc": ref["roc_auc"],
                         "deep accuracy": None, "baseline accuracy": ref["accuracy"]})
            for name, data in (("old: hash of every column", {"id": "row_content"}),
                               ("new: file and position", {"ignore": ["row_content"]})):
                job = {"name": f"split-{seed}", "task": "classify",
                       "data": {"path": path, "target": "label", **data, "split": {"seed": seed}},
                       "model": {"hidden": [32]}, "train": {"epochs": args.epochs, "batch_size": 512, "seed": seed}}
                m = dlmine_ray.run_job(job, os.path.join(tmp, f"run-{seed}-{len(rows)}"), quiet=True).metrics
                rows.append({"seed": seed, "split": name, "deep roc_auc": m["roc_auc"],
                             "baseline roc_auc": m["baseline_roc_auc"], "deep accuracy": m["accuracy"],
                             "baseline accuracy": m["baseline_accuracy"]})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmedian over seeds (min-max):")
    for name, part in table.groupby("split", sort=False):
        cells = []
        for col in ("deep roc_auc", "baseline roc_auc"):
            v = part[col].dropna().tolist()
            if v:
                cells.append(f"{col} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        print(f"  {name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
