"""The pipeline of row tasks (classify, regress, cluster, detect and any task with
``data_kind = "rows"``), one straight read:

read -> profile and split (one stats pass) -> the task's checks -> preprocessing fitted on the
training split -> every row encoded once -> fit_stages -> the rows to score, through the shared
inference path -> the baseline -> the task turns the scored rows into results -> the output tail.

A supervised task trains on the training split and is scored on the test split; a task that
``scores_every_row`` trains on every non-validation row (of those its ``train_mask`` keeps) and
scores them all."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.data.preprocess import TabularPreprocessor
from dlmine_ray.data.profile import SPLIT_COL, check_profile, check_types, profile_dataset, with_split_column
from dlmine_ray.data.local import LocalRows, read_local
from dlmine_ray.data.read import read_dataset
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.infer import save_model_dir, score_encoded, score_here, scores_in_driver
from dlmine_ray.pipelines.context import RunContext, RunResult
from dlmine_ray.pipelines.fit import fit_stages
from dlmine_ray.pipelines.write import write_outputs

#: split code of rows that are scored but never train (outside the task's train_mask)
EXCLUDED = 3
#: the raw columns a run keeps beside the encoded ones travel under names no column can take
RAW = "__raw:"


def run(ctx: RunContext) -> RunResult:
    """Run a row task's job; its outputs go into ``ctx.folder``."""
    spec, task, rep = ctx.spec, ctx.task, ctx.reporter
    d = spec.data
    chosen = _chosen_columns(d.features_from) if d.features_from else None
    rep.stage("reading", str(d.path))
    # rows are split by a hash of data.group/data.id, else of their file and position (ROW_KEY)
    if ctx.on_driver:  # small input: the same steps over rows held here (data/local.py)
        ds = read_local(d.path, d.format, row_key=d.split_key is None, na_values=d.na_values)
    else:
        ds = read_dataset(d.path, d.format, row_key=d.split_key is None, na_values=d.na_values)

    rep.stage("profiling and splitting", f"valid={d.split.valid} test={d.split.test} seed={d.split.seed}")
    truth = task.truth_column(spec)
    # a labels column (never a feature) is profiled like a class target
    categorical = task.target_kind == "categorical" or (task.target_kind is None and truth is not None)
    profile = profile_dataset(ds, truth, categorical, d.split_key, d.split.valid, d.split.test, d.split.seed)
    check_types(profile, [c for c in profile.order if c not in d.ignore], ds, d.format, d.na_values)
    drop = {truth, *(d.ignore), *(c for c in (d.id, d.group) if c)}
    candidates = [c for c in profile.order if c not in drop]
    if chosen is not None:
        missing = [c for c in chosen if c not in profile.columns]
        if missing:
            raise DlmineError(f"data.features_from: {len(missing)} chosen column(s) are not in the data: "
                              + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
        candidates = [c for c in candidates if c in set(chosen)]
        rep.info(f"features: the {len(candidates)} column(s) chosen by {d.features_from}")
    features = check_profile(profile, spec, task, candidates)
    if profile.dropped_constant:
        shown = ", ".join(profile.dropped_constant[:10]) + (", ..." if len(profile.dropped_constant) > 10 else "")
        rep.info(f"dropped {len(profile.dropped_constant)} constant column(s): {shown}")
    r = profile.rows
    split = (f"train/valid = {r[0] + r[2]:,}/{r[1]:,} (every row is scored)" if task.scores_every_row
             else f"train/valid/test = {r[0]:,}/{r[1]:,}/{r[2]:,}")
    rep.info(f"{profile.n_rows:,} rows, {len(profile.order)} columns; {split}")
    if d.id and not d.group and profile.repeated_ids():
        ids = "/".join("many" if k is None else f"{k:,}" for k in profile.distinct_keys)
        rep.info(f"[yellow]warning: data.id '{d.id}' repeats: the train/valid/test splits hold {ids} distinct ids "
                 f"for {r[0]:,}/{r[1]:,}/{r[2]:,} rows; rows of one id always share a split (data.group says "
                 "so on purpose)[/]")

    rep.stage("preprocessing", "imputation, scaling, one-hot; fitted on the training split")
    prep = TabularPreprocessor.from_profile(profile, features, d.target, task.target_kind, d.id, d.max_categories)
    kept = tuple(c for c in (d.id, truth) if c)
    encoded = _encode(ds, ctx, prep, kept)
    train_codes = (0, 2) if task.scores_every_row else (0,)
    if spec.augment:
        encoded = _augment(ctx, prep, encoded, train_codes)
    sets = {"train": _split(encoded, train_codes, ["features", "target"])}
    n_train = sets["train"].count()
    if n_train < 2:
        what = "the task's training filter selects" if task.scores_every_row else "the split leaves"
        raise DlmineError(f"{what} {n_train} training row(s); at least 2 are needed")
    n_valid = 0
    if d.split.valid > 0:
        valid = _split(encoded, (1,), ["features", "target"])
        n_valid = valid.count()
        if n_valid > 0:
            sets["valid"] = valid
    rep.info(f"{prep.n_features} encoded features from {len(features)} columns; {n_train:,} training rows")

    seed = spec.train.seed
    if ctx.knowledge is not None:  # what the dataset looks like, for choosing models from past runs
        from dlmine_ray.tune.metafeatures import SAMPLE_ROWS, describe_rows

        x_m, y_m = _sample(sets["train"], n_train, SAMPLE_ROWS, seed + 3, with_target=True)
        x_m = x_m[:, :prep.n_encoded]  # the data as it is, without mined columns (augment)
        ctx.dataset = describe_rows(profile, features, truth, categorical, x_m, y_m if task.target_kind else None,
                                    task.target_kind, seed, str(d.path))
    wanted = task.stage_samples(spec)
    samples = {}
    if wanted.get("train"):
        samples["train"] = _sample(sets["train"], n_train, wanted["train"], seed)[0]
    if wanted.get("all"):
        samples["all"] = _sample(encoded, profile.n_rows, wanted["all"], seed + 1)[0]
    if wanted.get("train_xy"):  # (features, encoded target) pairs
        samples["train_xy"] = _sample(sets["train"], n_train, wanted["train_xy"], seed + 4, with_target=True)
    if wanted.get("valid_xy") and "valid" in sets:
        samples["valid_xy"] = _sample(sets["valid"], n_valid, wanted["valid_xy"], seed + 5, with_target=True)
    info = task.initial_info(spec, prep.feature_names, prep.target_info_)
    if task.uses_feature_columns:  # the raw column of each encoded feature (a one-hot group shares one)
        info["feature_columns"] = prep.feature_columns
    fitted = fit_stages(ctx, sets, prep.n_features, info, samples)
    _selection(ctx, fitted)

    baseline, base_rows, base_seconds = None, 0, 0.0
    if spec.compare_baselines:
        rep.stage("baseline", f"{task.baseline_name} on the same training rows")
        tb = time.perf_counter()
        x_b, y_b = _sample(sets["train"], n_train, spec.baseline_max_rows, seed + 2, with_target=True)
        baseline, base_rows = task.fit_baseline(x_b, y_b, fitted.info, spec), len(x_b)
        base_seconds = time.perf_counter() - tb

    model_dir = str(ctx.folder.path("model"))
    save_model_dir(model_dir, fitted.state, prep, spec.task, fitted.run_spec.model.model_dump(),
                   {"job": spec.name, "stages": fitted.stages, "best_epoch": fitted.best.get("epoch"),
                    "na_values": d.na_values}, info=fitted.info)
    scored_rows = encoded if task.scores_every_row else _split(encoded, (2,), None)
    raw = tuple(RAW + c for c in kept)
    # encoded rows already in Ray's object store, of at most scaling.driver_max_mb or on a cluster
    # that is this one node: scored here with every core instead of by a Ray Data execution (no
    # re-read either way: they were encoded once)
    here = ctx.on_driver or scores_in_driver(scored_rows.size_bytes(), spec.scaling.driver_max_mb)
    rep.stage("scoring", ("every row" if task.scores_every_row else "test split")
              + (", in this process" if here else ", batch inference on Ray Data"))
    threads = max(1, min(int(ctx.cpus), os.cpu_count() or 1))
    if here and not ctx.on_driver:
        scored = score_here(scored_rows, model_dir, keep=("features",) + raw, threads=threads, task=task)
    else:
        scored = score_encoded(scored_rows.select_columns(["features", *raw]), model_dir, keep=("features",) + raw,
                               task=task, threads=threads if ctx.on_driver else 1).iter_batches(
                                   batch_format="numpy", batch_size=65536)
    batches = ({c[len(RAW):] if c.startswith(RAW) else c: v for c, v in b.items()} for b in scored)
    with failing_as("scoring failed", RuntimeError):
        result = task.results(batches, fitted.info, spec, baseline, profile.n_rows)
    explained = (_explain(ctx, model_dir, sets["train"], n_train, scored_rows)
                 if task.explains and spec.explain.enabled else None)
    gain = None
    if prep.augment_ is not None and not task.scores_every_row:
        from dlmine_ray.pipelines.gain import augment_gain

        with failing_as("augment gain: training the paired models failed", RuntimeError):
            gain = augment_gain(ctx, fitted.run_spec, sets, {"train": n_train, "valid": n_valid}, scored_rows, r[2],
                                prep.n_encoded, info, _sample)
    compared = None
    if task.comparison_seeds(spec) and not task.scores_every_row:
        from dlmine_ray.pipelines.gain import task_comparison

        with failing_as("in-run comparisons: training the compared models failed", RuntimeError):
            compared = task_comparison(ctx, fitted.run_spec, sets, {"train": n_train, "valid": n_valid}, scored_rows,
                                       r[2], fitted.info, _sample)

    metrics: dict[str, Any] = {"task": spec.task, **result.metrics}
    if task.scores_every_row:
        metrics.update({"rows": profile.n_rows, "rows_train": int(n_train), "rows_valid": int(n_valid)})
    else:
        metrics.update({"rows_train": r[0], "rows_valid": r[1], "rows_test": r[2]})
    # the label-free criteria the model was judged by (on sampled rows: Task.fit_reference)
    metrics.update({f"fit_{k}": fitted.best[k] for k in task.fit_metrics if k in fitted.best})
    if prep.augment_ is not None:
        metrics["augment"] = dict(prep.augment_.counts_)
        result.report["augment"] = {"counts": dict(prep.augment_.counts_), "settings": prep.augment_.settings_,
                                    "gain": gain}
        if gain is not None:
            metrics["augment_gain"] = gain
    if compared is not None:  # the task's headline figures of them at the top level, the rest under "comparison"
        metrics.update(compared.get("metrics", {}))
        metrics["comparison"] = {k: v for k, v in compared.items() if k != "metrics"}
        result.report["comparison"] = metrics["comparison"]
    if explained is not None:
        metrics.update(explained.metrics)
        result.report["explanations"] = explained.report
    metrics.update({"train_seconds": round(fitted.seconds, 3), "epochs_run": len(fitted.history),
                    "trainer": fitted.trainer})
    metrics.update({"stages": fitted.stages} if len(fitted.stages) > 1 or task.scores_every_row
                   else {"best_epoch": fitted.best.get("epoch")})
    if baseline is not None:
        metrics.update({"baseline_rows_train": int(base_rows), "baseline_seconds": round(base_seconds, 3)})
    leaderboard = fitted.leaderboard
    if leaderboard is not None and baseline is not None:
        if task.fit_metrics:  # the baseline's label-free criteria, on the same sampled rows
            scores = task.baseline_fit_score(baseline, fitted.fit_ref, fitted.info, spec)
        else:
            scores = _baseline_validation(ctx, baseline, sets["valid"], n_valid, fitted.info) if "valid" in sets \
                else None
        if scores:
            leaderboard = _with_baseline_row(leaderboard, ctx, scores)
    # lets the report show cluster profiles in the original units of numeric columns
    result.report["numeric_units"] = {c: (mean, std) for c, mean, std in prep.numeric_}

    rep.stage("writing", f"metrics, {task.result_file}, model, report")
    write_outputs(ctx, metrics, run_spec=fitted.run_spec, history=fitted.history,
                  tables={task.result_file: result.table}, leaderboard=leaderboard,
                  report={"profile": profile.summary(truth), "history": fitted.history, "material": result.report,
                          "info": fitted.info, "n_inputs": prep.n_features, "lessons": fitted.lessons})
    return RunResult(ctx.folder.final, metrics, fitted.run_spec, leaderboard)


def _explain(ctx: RunContext, model_dir: str, train, n_train: int, scored):
    """The saved model's explanations (explain.py) from seeded samples of the training and scored
    rows, sized by the job's ``explain:``, or None when no row was scored."""
    from dlmine_ray.explain import explain_run
    from dlmine_ray.infer import LoadedModel

    ctx.reporter.stage("explaining", "integrated gradients, permutation importance, a surrogate tree")
    seed, sizes = ctx.spec.train.seed, ctx.spec.explain
    x_test, y_test = _sample(scored, scored.count(), max(sizes.rows, sizes.permutation_rows), seed + 6,
                             with_target=True)
    x_fit = _sample(train, n_train, sizes.surrogate_rows, seed + 7)[0]
    with failing_as("explaining the model failed", RuntimeError):
        explained = explain_run(LoadedModel(model_dir, task=ctx.task), x_fit, x_test, y_test, seed, sizes)
    if explained is None:
        ctx.reporter.info("no test rows to explain the model on")
    return explained


def _augment(ctx: RunContext, prep: TabularPreprocessor, encoded, train_codes: tuple[int, ...]):
    """Fit ``spec.augment``'s miners on a seeded sample of the training rows' encodings, attach
    them to ``prep`` (so that the saved preprocessing applies them wherever rows are scored) and
    return ``encoded`` with the added columns after each row's own."""
    from dlmine_ray.mining.augment import SAMPLE_ROWS, Augmenter
    from dlmine_ray.tasks import TASKS
    from dlmine_ray.train.stages import fit_rows

    spec = ctx.spec
    ctx.reporter.stage("augmenting", f"{', '.join(spec.augment)} fitted on up to {SAMPLE_ROWS:,} training rows")
    train = _split(encoded, train_codes, ["features"])
    n_train = train.count()
    if n_train < 10:
        raise DlmineError(f"augment: the split leaves {n_train} training row(s); at least 10 are needed to mine "
                          "features from")
    x = _sample(train, n_train, SAMPLE_ROWS, spec.train.seed + 8)[0]
    with failing_as("augment: fitting the mined features failed", RuntimeError):
        sections = spec.model_dump()
        options = {t.name: sections.get(t.name) for t in TASKS.values() if t.augment_kind}
        aug = Augmenter(spec.augment, spec.train.seed, spec.augment_models, options).fit(
            x, prep.feature_names, len(prep.numeric_), [(m, sd) for _, m, sd in prep.numeric_], trainer=fit_rows)
    ctx.reporter.info("augmented features: " + ", ".join(f"{n} {k}" for k, n in aug.counts_.items()))

    def add(batch: dict) -> dict:
        batch["features"] = aug.extend(batch["features"])
        return batch

    prep.augment_ = aug
    with failing_as("augment: computing the mined features failed", RuntimeError):
        return encoded.map_batches(add, batch_format="numpy").materialize()


def _chosen_columns(run_dir: str) -> list[str]:
    """The columns a feature-selection run chose (its features.parquet's ``chosen`` rows)."""
    import os

    path = os.path.join(run_dir, "features.parquet")
    if not os.path.isfile(path):
        raise DlmineError(f"data.features_from: {run_dir} holds no features.parquet (the output of a run of "
                          "task: select)")
    with failing_as(f"data.features_from: cannot read {path}"):
        table = pd.read_parquet(path, columns=["feature", "chosen"])
    chosen = table.loc[table["chosen"].astype(bool), "feature"].astype(str).tolist()
    if not chosen:
        raise DlmineError(f"data.features_from: {path} marks no column as chosen")
    return chosen


def _selection(ctx: RunContext, fitted) -> None:
    """The saved model's value of the selection metric, and the trials, for the knowledge base."""
    from dlmine_ray.tune.warm import untuned_trial

    metric, mode = ctx.spec.selection()
    if fitted.trials:
        best = fitted.leaderboard.iloc[0][metric]
        ctx.trials = fitted.trials
    else:
        best = fitted.best.get(metric, fitted.best.get("val_loss"))
        ctx.trials = [untuned_trial(fitted.run_spec, ctx.task.default_space(ctx.spec), best)]
    ctx.selection = {"metric": metric, "mode": mode, "value": None if best is None else float(best)}


def _baseline_validation(ctx: RunContext, baseline, valid, n_valid: int, info: dict) -> dict:
    """The baseline's validation metrics, from the same ``batch_sums`` as every trial's."""
    import torch

    task = ctx.task
    x, y = _sample(valid, n_valid, n_valid, 0, with_target=True)
    out = torch.from_numpy(task.baseline_outputs(baseline, x, info))
    target = torch.from_numpy(np.asarray(y)).to(task.target_torch_dtype())
    return task.epoch_metrics(task.batch_sums(out, target), info)


def _with_baseline_row(board: pd.DataFrame, ctx: RunContext, scores: dict):
    """The leaderboard with the baseline as a row (its ``scores``: the selection metric and the
    others the trials have), so that a user sees where it ranks; the saved model stays the best
    deep trial. Ranks count the deep trials only."""
    task = ctx.task
    metric, mode = ctx.spec.selection()
    row = {"rank": None, "trial": f"baseline ({task.baseline_name})", "status": "baseline", "epochs": 0,
           metric: scores.get(metric), **{f"best_{k}": v for k, v in scores.items() if f"best_{k}" in board}}
    out_board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    out_board = out_board.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    out_board["rank"] = out_board["rank"].astype("Int64")
    return out_board.reset_index(drop=True)


def _encode(ds, ctx: RunContext, prep: TabularPreprocessor, kept: tuple[str, ...]):
    """Every row encoded once (one read of the files) and materialised, with its split code and
    the raw ``kept`` columns (id, target or labels) for the result table: the splits are then
    cut out of the object store by their code, 3x faster here than encoding each from the files."""
    spec, task = ctx.spec, ctx.task
    s = spec.data.split
    keys = [spec.data.split_key] if spec.data.split_key else None

    def enc(df: pd.DataFrame) -> dict:
        df = with_split_column(df, keys, s.valid, s.test, s.seed)
        out = prep.transform_batch(df)
        split = df[SPLIT_COL].to_numpy()
        mask = task.train_mask(df, spec)
        out[SPLIT_COL] = split if mask is None else np.where(mask, split, EXCLUDED).astype(np.int8)
        for c in kept:
            out[RAW + c] = df[c].to_numpy()
        return out

    if task.filters_rows(spec):
        # a bad filter fails here, in one line: raised inside Ray Data's tasks, the error would
        # reach the driver as Ray's text only
        task.train_mask(pd.DataFrame(ds.take(20)), spec)
    with failing_as("cannot preprocess data"):
        return ds.map_batches(enc, batch_format="pandas").materialize()


def _split(encoded, codes: tuple[int, ...], columns: Optional[list[str]]):
    """The rows of ``encoded`` whose split code is in ``codes`` (only ``columns``; None: all)."""
    if isinstance(encoded, LocalRows):
        part = encoded.where(np.isin(encoded.column(SPLIT_COL), codes))
        return part.select_columns(columns) if columns else part
    from ray.data.expressions import col

    expr = col(SPLIT_COL) == codes[0]
    for c in codes[1:]:
        expr = expr | (col(SPLIT_COL) == c)
    part = encoded.filter(expr=expr)
    return (part.select_columns(columns) if columns else part).materialize()


def _sample(ds, n_rows: int, max_rows: int, seed: int, with_target: bool = False
            ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Up to ``max_rows`` random rows of ``ds``: the ``features`` matrix (float32) and, with
    ``with_target``, the encoded ``target``; all the rows, in order, when there are few enough."""
    frac = min(1.0, max_rows / max(n_rows, 1))
    part = ds.select_columns(["features", "target"] if with_target else ["features"])
    if frac < 1.0:
        part = part.random_sample(frac, seed=seed)
    xs, ys = [], []
    for b in part.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(b["features"])
        if with_target:
            ys.append(b["target"])
    x = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, 0), np.float32)
    y = np.concatenate(ys)[:max_rows] if ys else None
    return x[:max_rows], y
