"""What ``augment`` gained: the run's model settings trained with and without the mined columns,
paired by training seed, and scored on the same test rows (``augment_gain`` seeds; 0 = off).

Both variants of a seed see the same sampled training and validation rows and train in this
process with the run's own loop (``train.stages``); the mined columns are the run's fitted ones
(the saved model's), so the comparison isolates what they add to the model, not the variance of
mining them again. The difference is the task's first headline metric (accuracy, r2), with - without,
per seed; its interval is a paired bootstrap over the test rows of the mean over seeds (each draw
scores every model on the same rows), and the spread over seeds is reported beside it."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from dlmine_ray.tasks.bootstrap import LEVEL, REPLICATES, weight_draws

#: at most this many sampled training / test rows train and score the paired models
TRAIN_ROWS = 50_000
TEST_ROWS = 50_000


def augment_gain(ctx, run_spec, sets: dict, counts: dict, test, n_test: int, n_encoded: int, info: dict,
                 sample: Callable) -> Optional[dict]:
    """The paired gain of the mined columns (see the module), or None when off or without test
    rows. ``sets``/``counts``: the run's "train" (and "valid") datasets and their row counts;
    ``test``: the test rows; ``n_encoded``: the columns before the mined ones; ``sample``: the
    pipeline's ``(ds, n, max_rows, seed, with_target) -> (x, y)``."""
    from dlmine_ray.tasks.unsupervised import model_outputs
    from dlmine_ray.train.stages import fit_rows

    spec, task, rep = ctx.spec, ctx.task, ctx.reporter
    n_seeds = spec.augment_gain
    if not n_seeds or n_test < 2:
        return None
    seed = spec.train.seed
    x_tr, y_tr = sample(sets["train"], counts["train"], TRAIN_ROWS, seed + 20, True)
    valid = sample(sets["valid"], counts["valid"], TRAIN_ROWS, seed + 21, True) if "valid" in sets else None
    x_te, y_te = sample(test, n_test, TEST_ROWS, seed + 22, True)
    rep.stage("augment gain", f"{n_seeds} seed(s) x with/without the mined columns, {len(x_tr):,} training and "
                              f"{len(x_te):,} test rows, in this process")
    variants = {"without": slice(0, n_encoded), "with": slice(None)}
    outputs: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    seeds = [seed + i for i in range(n_seeds)]
    for s in seeds:
        seeded = run_spec.model_copy(update={"train": run_spec.train.model_copy(update={"seed": s})})
        for variant, cols in variants.items():
            v = (valid[0][:, cols], valid[1]) if valid is not None else None
            model, out = fit_rows(task, seeded, x_tr[:, cols], y_tr, v, info=info, samples={})
            outputs[variant].append(model_outputs(model, x_te[:, cols]))
            rep.info(f"augment gain: seed {s} {variant} the mined columns trained {len(out.history)} epoch(s)")
    metric = task.headline[0]
    ones = np.ones((1, len(x_te)))
    per = {v: [float(task.weighted_score(ones, o, y_te)[0]) for o in outs] for v, outs in outputs.items()}
    diff = [a - b for a, b in zip(per["with"], per["without"])]
    draws = []
    for w in weight_draws(len(x_te), REPLICATES, seed + 23):
        d = np.mean([task.weighted_score(w, a, y_te) - task.weighted_score(w, b, y_te)
                     for a, b in zip(outputs["with"], outputs["without"])], axis=0)
        draws.append(d)
    d = np.concatenate(draws)
    d = d[np.isfinite(d)]
    lo, hi = 100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2
    ci = [float(np.percentile(d, lo)), float(np.percentile(d, hi))] if d.size >= 10 else None
    gain = {"metric": metric, "seeds": seeds, "with": per["with"], "without": per["without"], "diff": diff,
            "mean_diff": float(np.mean(diff)), "diff_range": [float(min(diff)), float(max(diff))],
            "diff_ci": ci, "rows_train": int(len(x_tr)), "rows_test": int(len(x_te))}
    shown = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "(no interval)"
    rep.info(f"augment gain in {metric}: {gain['mean_diff']:+.4f} {shown} over {n_seeds} seed(s)")
    return gain
