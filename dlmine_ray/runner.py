"""One function, JobSpec -> RunResult: data -> train or tune -> score -> outputs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import yaml

from dlmine_ray.cluster import ray_session
from dlmine_ray.data.preprocess import TabularPreprocessor
from dlmine_ray.data.profile import SPLIT_COL, check_profile, profile_dataset, with_split_column
from dlmine_ray.data.read import first_line, read_dataset
from dlmine_ray.errors import DlmineError
from dlmine_ray.infer import score_encoded
from dlmine_ray.outputs import RunFolder, write_json, write_parquet_batches
from dlmine_ray.progress import BoardWatcher, Reporter, make_board
from dlmine_ray.spec import JobSpec, coerce_spec
from dlmine_ray.tasks import get_task


@dataclass
class RunResult:
    """What a run produced: its folder, flat metrics, the job of the model it saved (``spec``:
    after tuning, the best trial's job, with ``tune`` None), and for tuned runs the leaderboard."""

    output: Path
    metrics: dict[str, Any]
    spec: JobSpec
    leaderboard: Optional[pd.DataFrame] = None
    timings: dict[str, float] = field(default_factory=dict)


def _with_split(ds, spec: JobSpec):
    s = spec.data.split
    keys = [spec.data.split_key] if spec.data.split_key else None
    return ds.map_batches(lambda df: with_split_column(df, keys, s.valid, s.test, s.seed), batch_format="pandas")


#: the test rows' raw target and id, carried through encoding under names no column can take
RAW_TARGET, RAW_ID = "__raw_target", "__raw_id"
RAW_COLS = (RAW_TARGET, RAW_ID)


def _encoded_splits(ds_split, prep: TabularPreprocessor, with_valid: bool, id_col: Optional[str]) -> dict:
    """Encode every row once (one read of the files), materialise, then cut the splits out of
    the object store by their split code: 3x faster here than encoding each split from the files.
    The test split keeps the raw target (and id) for predictions.parquet."""
    from ray.data.expressions import col

    def enc(df: pd.DataFrame) -> dict:
        out = prep.transform_batch(df)
        out[SPLIT_COL] = df[SPLIT_COL].to_numpy()
        out[RAW_TARGET] = df[prep.target].to_numpy()
        if id_col:
            out[RAW_ID] = df[id_col].to_numpy()
        return out

    encoded = ds_split.map_batches(enc, batch_format="pandas").materialize()
    names = {"train": 0, "test": 2, **({"valid": 1} if with_valid else {})}
    cols = ["features", "target"]
    test_cols = cols + [RAW_TARGET] + ([RAW_ID] if id_col else [])
    return {name: encoded.filter(expr=col(SPLIT_COL) == code).select_columns(test_cols if name == "test" else cols)
            .materialize() for name, code in names.items()}


def _collect(ds) -> dict[str, np.ndarray]:
    """Every column of ``ds`` as one numpy array (rows in the dataset's order)."""
    parts: dict[str, list] = {}
    for b in ds.iter_batches(batch_format="numpy", batch_size=65536):
        for k, v in b.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def paired_test_intervals(task, y_true, pred: pd.DataFrame, base_pred: Optional[pd.DataFrame], info: dict,
                   seed: int) -> dict[str, list[float]]:
    """Paired bootstrap 95% intervals of the test metrics (``<m>_ci``, ``baseline_<m>_ci``,
    ``diff_<m>_ci``) over the test rows that both models scored."""
    from dlmine_ray.tasks.bootstrap import paired_intervals

    preds = {"deep": pred, "baseline": base_pred}
    return paired_intervals(lambda w, which: task.bootstrap_metrics(w, y_true, preds[which], info), len(pred),
                            base_pred is not None, seed)


def _stack(ds, limit: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, n = [], [], 0
    for b in ds.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(b["features"])
        ys.append(b["target"])
        n += len(b["target"])
        if limit and n >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def run_job(job: Union[JobSpec, dict, str, os.PathLike], output: Union[str, os.PathLike] = "runs/latest",
            address: Optional[str] = None, overwrite: bool = False, verbose: bool = False,
            quiet: bool = False, overrides: Optional[list] = None, num_cpus: Optional[int] = None) -> RunResult:
    """Run a job (a JobSpec, a dict, or a YAML path) and write its outputs into ``output``.

    Returns the RunResult; raises DlmineError for bad input, leaving no output behind."""
    spec = coerce_spec(job, overrides)
    rep = Reporter(quiet=quiet, verbose=verbose)
    folder = RunFolder(str(output), overwrite)
    folder.open()
    local_storage = tempfile.mkdtemp(prefix="dlmine_ray_storage_")
    storage = spec.storage or local_storage
    try:
        with ray_session(address, verbose, num_cpus) as cluster_cpus:
            result = _run(spec, folder, storage, local_storage, rep, cluster_cpus)
        rep.stage("publishing", str(folder.final))
        result.output = folder.commit()
        rep.done()
        return result
    except BaseException:
        folder.discard()
        raise
    finally:
        shutil.rmtree(local_storage, ignore_errors=True)


def _run(spec: JobSpec, folder: RunFolder, storage: str, local_storage: str, rep: Reporter,
         cluster_cpus: float) -> RunResult:
    d = spec.data
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    rep.stage("reading", str(d.path))
    # rows are split by a hash of data.group/data.id, else of their file and position (ROW_KEY)
    ds = read_dataset(d.path, d.format, row_key=spec.task != "rules" and d.split_key is None,
                      na_values=d.na_values)
    if spec.task == "rules":
        from dlmine_ray.rules_run import run_rules

        return run_rules(spec, ds, folder, rep, cluster_cpus, t_start, storage, local_storage)

    task = get_task(spec.task)
    rep.stage("profiling and splitting", f"valid={d.split.valid} test={d.split.test} seed={d.split.seed}")
    supervised = task.target_kind is not None
    # cluster/detect: the labels column, never a feature, is profiled like a class target
    truth = d.target if supervised else d.labels
    categorical = task.target_kind == "categorical" or (not supervised and truth is not None)
    profile = profile_dataset(ds, truth, categorical, d.split_key, d.split.valid, d.split.test, d.split.seed)
    drop = {truth, *(d.ignore), *(c for c in (d.id, d.group) if c)}
    features = [c for c in profile.order if c not in drop]
    features = check_profile(profile, spec, features)
    if profile.dropped_constant:
        shown = ", ".join(profile.dropped_constant[:10]) + (", ..." if len(profile.dropped_constant) > 10 else "")
        rep.info(f"dropped {len(profile.dropped_constant)} constant column(s): {shown}")
    if supervised:
        rep.info(f"{profile.n_rows:,} rows, {len(profile.order)} columns; "
                 f"train/valid/test = {profile.rows[0]:,}/{profile.rows[1]:,}/{profile.rows[2]:,}")
    else:
        rep.info(f"{profile.n_rows:,} rows, {len(profile.order)} columns; "
                 f"train/valid = {profile.rows[0] + profile.rows[2]:,}/{profile.rows[1]:,} (every row is scored)")

    rep.stage("preprocessing", "imputation, scaling, one-hot; fitted on the training split")
    prep = TabularPreprocessor.from_profile(profile, features, d.target, task.target_kind, d.id, d.max_categories)
    ds_split = _with_split(ds, spec)
    if not supervised:
        from dlmine_ray.unsupervised import run_unsupervised

        return run_unsupervised(spec, task, ds_split, prep, profile, folder, storage, local_storage, rep,
                                cluster_cpus, timings, t_start)
    try:
        splits = _encoded_splits(ds_split, prep, d.split.valid > 0, d.id)
    except Exception as err:
        raise DlmineError(f"cannot preprocess data: {first_line(err)}") from None
    layout = {"n_features": prep.n_features, "info": prep.target_info_, "has_valid": "valid" in splits}
    rep.info(f"{prep.n_features} encoded features from {len(features)} columns")
    timings["data_seconds"] = time.perf_counter() - t_start

    board = make_board()
    train_sets = {k: v for k, v in splits.items() if k in ("train", "valid")}
    keep_in = os.path.join(local_storage, "best")
    leaderboard = None
    trainer_used = "tune"
    t0 = time.perf_counter()
    with BoardWatcher(board, rep):
        if spec.tune is None:
            from dlmine_ray.train.trainer import use_ray_train

            big = use_ray_train(spec, splits["train"].size_bytes())
            where = f"{spec.scaling.num_workers} Ray Train worker(s)" if big else "one Ray task (small job)"
            trainer_used = "ray_train" if big else "task"
            rep.stage("training", f"{where}, up to {spec.train.epochs} epochs")
            outcome = _fit(spec, train_sets, layout, storage, board, cluster_cpus, keep_in, big)
        else:
            from dlmine_ray.tune.search import run_tune

            rep.stage("tuning", f"{spec.tune.num_samples} trials, {spec.tune.scheduler} scheduler, "
                                f"{spec.tune.search} search")
            tuned = run_tune(spec, train_sets, layout, storage, board, cluster_cpus, keep_in, rep)
            outcome, leaderboard = tuned.best, tuned.leaderboard
            from dlmine_ray.tune.search import trial_spec

            best_spec = trial_spec({**spec.model_dump(), "tune": None}, tuned.best_params)
    # what the run writes (job.yaml, the report, RunResult.spec) describes the model it saves:
    # after tuning, the best trial's full job; the job as given, with its search space, is
    # written beside it as job_base.yaml
    run_spec = spec
    if spec.tune is not None:
        top = leaderboard.iloc[0]
        rep.info(f"best trial: {top['trial']} ({top['status']}, {top['epochs']} epochs) "
                 f"best {tuned.metric}={top[tuned.metric]:.4g} with {tuned.best_params}")
        run_spec = best_spec
    train_seconds = time.perf_counter() - t0
    model_spec = run_spec.model.model_dump()

    rep.stage("scoring", "test split, batch inference on Ray Data")
    model_dir = folder.path("model")
    from dlmine_ray.infer import save_model_dir

    save_model_dir(str(model_dir), outcome.state_path, prep, spec.task, model_spec,
                   {"job": spec.name, "best_epoch": outcome.best.get("epoch"), "na_values": d.na_values})
    # the encoded test rows carry the raw id and target: the deep model is scored on exactly the
    # rows (and the features) the baseline sees, so the two can be compared row by row
    test = _collect(score_encoded(splits["test"], str(model_dir), keep=("features",) + RAW_COLS))
    x_te = test.pop("features")
    y_true = test.pop(RAW_TARGET)
    pred = pd.DataFrame({**({d.id: test.pop(RAW_ID)} if d.id else {}), d.target: y_true,
                         **{k: v for k, v in test.items() if k not in RAW_COLS}})
    metrics: dict[str, Any] = {"task": spec.task}
    metrics.update(task.test_metrics(y_true, pred, prep.target_info_))
    metrics.update({"rows_train": profile.rows[0], "rows_valid": profile.rows[1], "rows_test": profile.rows[2],
                    "train_seconds": round(train_seconds, 3), "epochs_run": len(outcome.history),
                    "trainer": trainer_used,
                    "best_epoch": outcome.best.get("epoch")})

    base_pred = None
    if spec.compare_baselines:
        rep.stage("baseline", "scikit-learn HistGradientBoosting on the same split")
        tb = time.perf_counter()
        x_tr, y_tr = _stack(splits["train"], spec.baseline_max_rows)
        base_pred = pd.DataFrame(task.baseline_predictions(x_tr, y_tr, x_te, prep.target_info_, spec.train.seed))
        metrics.update({f"baseline_{k}": v for k, v in task.test_metrics(y_true, base_pred, prep.target_info_).items()})
        metrics["baseline_seconds"] = round(time.perf_counter() - tb, 3)
        metrics["baseline_rows_train"] = int(len(y_tr))
    metrics.update(paired_test_intervals(task, y_true, pred, base_pred, prep.target_info_, spec.train.seed))

    rep.stage("writing", "metrics, predictions, model, report")
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
    write_parquet_batches(folder.path("predictions.parquet"), [_arrow(pred)])
    write_json(folder.path("metrics.json"), metrics)
    (folder.path("job.yaml")).write_text(yaml.safe_dump(run_spec.model_dump(), sort_keys=False))
    if spec.tune is not None:
        folder.path("job_base.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    write_json(folder.path("history.json"), outcome.history)
    if leaderboard is not None:
        write_parquet_batches(folder.path("leaderboard.parquet"), [_arrow(leaderboard)])
    from dlmine_ray.report.html import write_report

    write_report(folder.path("report.html"), spec=run_spec, profile=profile.summary(d.target), history=outcome.history,
                 metrics=metrics, predictions=pred, info=prep.target_info_, leaderboard=leaderboard,
                 feature_names=prep.feature_names, base_spec=spec if spec.tune is not None else None)
    return RunResult(folder.final, metrics, run_spec, leaderboard, timings)


def _arrow(df: pd.DataFrame):
    import pyarrow as pa

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype(str)
    return pa.Table.from_pandas(df, preserve_index=False)


def _fit(spec, train_sets, layout, storage, board, cluster_cpus, keep_in, ray_train: bool):
    """Train once (one stage) with a TorchTrainer or in one Ray task; bad input stays a DlmineError."""
    from dlmine_ray.train.trainer import fit_in_task, fit_with_ray_train

    try:
        if ray_train:
            return fit_with_ray_train(spec, train_sets, layout, storage, board, cluster_cpus, keep_in)
        return fit_in_task(spec, train_sets, layout, board, cluster_cpus, keep_in)
    except DlmineError:
        raise
    except Exception as err:
        raise RuntimeError(f"training failed: {first_line(err)}") from err
