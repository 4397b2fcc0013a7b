"""In-run comparisons: the run's model settings trained again in this process, on the same
sampled rows, with one thing changed, and scored on the same test rows.

- ``augment_gain``: what ``augment`` gained: the model trained with and without the mined columns,
  paired by training seed (``augment_gain`` seeds; 0 = off). The mined columns are the run's fitted
  ones (the saved model's), so the comparison isolates what they add to the model, not the
  variance of mining them again. The difference is the task's first headline metric (accuracy,
  r2), with - without, per seed; its interval is a paired bootstrap over the test rows of the mean
  over seeds (each draw scores every model on the same rows), with the spread over seeds beside it.
- ``task_comparison``: the comparisons a task makes itself (``Task.compare``; e.g. select's deep
  model on each selector's columns), given the rows and a ``retrain`` that runs the task's stages
  on them with the run's own loop (``train.stages.fit_rows``)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from dlmine_ray.tasks.bootstrap import seeded_difference

#: at most this many sampled training / test rows train and score the compared models
TRAIN_ROWS = 50_000
TEST_ROWS = 50_000


def _rows(sets: dict, counts: dict, test, n_test: int, sample: Callable, seed: int) -> dict:
    """Seeded samples, as (x, encoded y), of the training, validation (when there is one) and
    test rows."""
    rows = {"train": sample(sets["train"], counts["train"], TRAIN_ROWS, seed + 20, True)}
    if "valid" in sets:
        rows["valid"] = sample(sets["valid"], counts["valid"], TRAIN_ROWS, seed + 21, True)
    rows["test"] = sample(test, n_test, TEST_ROWS, seed + 22, True)
    return rows


def _seeded(run_spec, seed: int):
    return run_spec.model_copy(update={"train": run_spec.train.model_copy(update={"seed": seed})})


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
    rows = _rows(sets, counts, test, n_test, sample, seed)
    (x_tr, y_tr), valid, (x_te, y_te) = rows["train"], rows.get("valid"), rows["test"]
    rep.stage("augment gain", f"{n_seeds} seed(s) x with/without the mined columns, {len(x_tr):,} training and "
                              f"{len(x_te):,} test rows, in this process")
    variants = {"without": slice(0, n_encoded), "with": slice(None)}
    outputs: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    seeds = [seed + i for i in range(n_seeds)]
    for s in seeds:
        for variant, cols in variants.items():
            v = (valid[0][:, cols], valid[1]) if valid is not None else None
            model, out = fit_rows(task, _seeded(run_spec, s), x_tr[:, cols], y_tr, v, info=info, samples={})
            outputs[variant].append(model_outputs(model, x_te[:, cols]))
            rep.info(f"augment gain: seed {s} {variant} the mined columns trained {len(out.history)} epoch(s)")
    paired = seeded_difference(task.weighted_score, outputs["with"], outputs["without"], y_te, seed + 23)
    gain = {"metric": task.headline[0], "seeds": seeds, "with": paired["a"], "without": paired["b"],
            **{k: paired[k] for k in ("diff", "mean_diff", "diff_range", "diff_ci")},
            "rows_train": int(len(x_tr)), "rows_test": int(len(x_te))}
    ci = gain["diff_ci"]
    shown = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "(no interval)"
    rep.info(f"augment gain in {gain['metric']}: {gain['mean_diff']:+.4f} {shown} over {n_seeds} seed(s)")
    return gain


def task_comparison(ctx, run_spec, sets: dict, counts: dict, test, n_test: int, info: dict,
                    sample: Callable) -> Optional[dict]:
    """The task's own in-run comparisons (``Task.compare``) over ``Task.comparison_seeds`` seeds,
    or None when it asks for none or there are no test rows; arguments as for ``augment_gain``
    (``info``: the fitted model's)."""
    from dlmine_ray.train.stages import fit_rows

    spec, task, rep = ctx.spec, ctx.task, ctx.reporter
    n_seeds = task.comparison_seeds(spec)
    if not n_seeds or n_test < 2:
        return None
    seed = spec.train.seed
    rows = _rows(sets, counts, test, n_test, sample, seed)
    rep.stage("comparisons", f"{n_seeds} seed(s), {len(rows['train'][0]):,} training and {len(rows['test'][0]):,} "
                             "test rows, in this process")

    def retrain(variant_info: dict, stages: list[str], s: int):
        model, out = fit_rows(task, _seeded(run_spec, s), *rows["train"], rows.get("valid"), info=variant_info,
                              samples={}, stages=stages, set_up=False)
        rep.info(f"comparisons: {'/'.join(stages)} with seed {s} trained {len(out.history)} epoch(s)")
        return model

    out = task.compare(run_spec, info, rows, retrain, [seed + i for i in range(n_seeds)])
    return {**out, "rows_train": int(len(rows["train"][0])), "rows_test": int(len(rows["test"][0]))} if out else None
