"""Paired bootstrap intervals of a classify job's test metrics at a large test split: ours (weighted
draws, vectorised; dlmine_ray.tasks.bootstrap) against scikit-learn's metrics on each resample, side
by side in one run.

The test split is synthetic: ``--rows`` rows, ``--classes`` classes, a "deep" model and a "baseline"
whose probabilities are noisy views of the truth (continuous, so ROC-AUC sorts ``--rows`` distinct
scores). Ours computes accuracy, f1_macro, log_loss and roc_auc for both models on ``--replicates``
draws, as a classify run does after scoring (``Task.bootstrap_scorer`` + ``paired_intervals``).
scikit-learn computes the same four metrics on ``--sk-replicates`` resamples (the rows drawn, then
the metric functions: the usual way to bootstrap them), and its time is scaled to ``--replicates``.
Both use the same draws, and the values must agree (checked on those draws).

    python benchmarks/bench_intervals.py [--rows 500000] [--classes 2] [--replicates 1000] [--sk-replicates 20]
    python benchmarks/bench_intervals.py --smoke   # seconds, tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import psutil

SMOKE = {"rows": 2000, "replicates": 50, "sk_replicates": 3}


def _busy() -> float:
    """CPU seconds the whole machine has spent busy."""
    m = psutil.cpu_times()
    return m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0) + getattr(m, "steal", 0)


def _own() -> float:
    t = os.times()
    return t.user + t.system


def frames(n: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    classes = [f"c{j}" for j in range(n_classes)]
    y = rng.integers(0, n_classes, n)
    truth = np.asarray(classes, dtype=object)[y]

    def model(noise):
        logits = rng.normal(0, noise, (n, n_classes)) + 1.5 * np.eye(n_classes)[y]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return pd.DataFrame({"prediction": np.asarray(classes, dtype=object)[proba.argmax(axis=1)],
                             **{f"proba_{c}": proba[:, j] for j, c in enumerate(classes)}})

    return classes, y, truth, {"deep": model(1.0), "baseline": model(1.2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--sk-replicates", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help=f"tiny sizes that only check the script works: {SMOKE}")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    from sklearn import metrics as skm

    from dlmine_ray.tasks import bootstrap as bs
    from dlmine_ray.tasks import get_task

    classes, y, truth, preds = frames(args.rows, args.classes, args.seed)
    task, info = get_task("classify"), {"classes": classes}
    busy0, own0, wall0 = _busy(), _own(), time.perf_counter()

    t = time.perf_counter()
    scorers = {k: task.bootstrap_scorer(truth, p, info) for k, p in preds.items()}
    ours = bs.paired_intervals(lambda w, which: scorers[which](w), args.rows, True, args.seed, args.replicates)
    t_ours = time.perf_counter() - t

    # scikit-learn gets integer class codes (string labels make its f1 several times slower)
    codes = {k: np.searchsorted(classes, p["prediction"].to_numpy().astype(str)) for k, p in preds.items()}
    probas = {k: p[[f"proba_{c}" for c in classes]].to_numpy() for k, p in preds.items()}

    def sk_metrics(idx, k):
        proba = np.clip(probas[k][idx], 1e-12, 1.0)
        proba /= proba.sum(axis=1, keepdims=True)
        yi, guess = y[idx], codes[k][idx]
        auc = (skm.roc_auc_score(yi, proba[:, 1]) if len(classes) == 2
               else skm.roc_auc_score(yi, proba, multi_class="ovr", average="macro"))
        return {"accuracy": skm.accuracy_score(yi, guess), "f1_macro": skm.f1_score(yi, guess, average="macro"),
                "log_loss": skm.log_loss(yi, proba, labels=list(range(len(classes)))), "roc_auc": auc}

    # the first draws of the same stream ours used, as row indices
    rng = np.random.default_rng(args.seed)
    draws = [rng.integers(0, args.rows, size=args.rows) for _ in range(args.sk_replicates)]
    t = time.perf_counter()
    sk = [{k: sk_metrics(d, k) for k in preds} for d in draws]
    t_sk = (time.perf_counter() - t) * args.replicates / args.sk_replicates

    w = np.stack([np.bincount(d, minlength=args.rows) for d in draws]).astype(np.float64)
    worst = 0.0
    for k, p in preds.items():
        got = scorers[k](w)
        for i in range(len(draws)):
            for m, v in sk[i][k].items():
                worst = max(worst, abs(got[m][i] - v) / max(abs(v), 1e-12))
    others = max(0.0, (_busy() - busy0) - (_own() - own0)) / (time.perf_counter() - wall0)
    disturbed = others > 0.15
    print(f"{args.rows:,} test rows, {args.classes} classes, 2 models, {args.replicates:,} draws"
          f""
          f"; other processes used {others:.2f} cores{'  (DISTURBED: discard)' if disturbed else ''}")
    print(f"  ours (weighted draws)          {t_ours:8.2f} s")
    print(f"  scikit-learn per resample      {t_sk:8.2f} s  (timed on {args.sk_replicates} draws, scaled)")
    print(f"  ratio scikit-learn / ours      {t_sk / t_ours:8.2f}")
    print(f"  largest relative difference on the shared draws: {worst:.1e}")
    print(f"  roc_auc interval {ours.get('roc_auc_ci')}, diff {ours.get('diff_roc_auc_ci')}")
    if worst > 1e-6:
        raise SystemExit("ours and scikit-learn disagree on the same draws")


if __name__ == "__main__":
    main()
