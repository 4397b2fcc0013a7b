"""The run of an unsupervised task (cluster, detect): the part of ``runner.run_job`` after the
stats pass and the preprocessing fit.

Every row is encoded once; the rows outside the validation split (and, for detect with
``data.normal_when``, only the rows marked normal) train the task's stages one after the other
with the same loop as every task; between stages the task sets up the next stage from a sample
of codes (k-means centres, the SVDD centre, the flag threshold). Then every row is scored by the
shared inference path, and the task mines the scored rows into its result table and metrics."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
import yaml

from dlmine_ray.data.profile import SPLIT_COL
from dlmine_ray.data.read import first_line
from dlmine_ray.errors import DlmineError
from dlmine_ray.infer import save_model_dir, score_encoded
from dlmine_ray.outputs import write_json, write_parquet_batches
from dlmine_ray.progress import BoardWatcher, make_board

#: split code of rows that are scored but never train (outside data.normal_when)
EXCLUDED = 3
#: rows sampled from all the data for the detect threshold
THRESHOLD_SAMPLE = 100_000


def normal_mask(df: pd.DataFrame, expr: str) -> np.ndarray:
    """Rows of ``df`` for which the pandas expression ``expr`` (data.normal_when) is true."""
    try:
        m = df.eval(expr)
    except Exception as err:
        raise DlmineError(f"data.normal_when '{expr}' cannot be evaluated: {first_line(err)}") from None
    if not isinstance(m, pd.Series) or not (pd.api.types.is_bool_dtype(m) or m.isin([0, 1]).all()):
        raise DlmineError(f"data.normal_when '{expr}' must give true/false for every row")
    return m.fillna(False).to_numpy(dtype=bool)


def _encode(ds_split, prep, keep: tuple[str, ...], normal_when: Optional[str]):
    def enc(df: pd.DataFrame) -> dict:
        out = prep.transform_batch(df, keep=keep)
        split = df[SPLIT_COL].to_numpy()
        if normal_when:
            split = np.where(normal_mask(df, normal_when), split, EXCLUDED).astype(np.int8)
        out[SPLIT_COL] = split
        return out

    return ds_split.map_batches(enc, batch_format="pandas").materialize()


def _sample_features(ds, n_rows: int, max_rows: int, seed: int) -> np.ndarray:
    """Up to ``max_rows`` random rows of the ``features`` column as one float32 matrix."""
    frac = min(1.0, max_rows / max(n_rows, 1))
    part = ds.select_columns(["features"])
    if frac < 1.0:
        part = part.random_sample(frac, seed=seed)
    xs = [b["features"] for b in part.iter_batches(batch_format="numpy", batch_size=65536)]
    x = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, 0), np.float32)
    return x[:max_rows]


def _rows_dataset(x: np.ndarray, target: np.ndarray):
    """A Ray Dataset of (features, target) rows from numpy arrays."""
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    table = pa.table({"features": ArrowTensorArray.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                      "target": target})
    return ray.data.from_arrow(table).materialize()


def _check_mask_on_head(ds_split, expr: str) -> None:
    head = pd.DataFrame(ds_split.take(20))
    normal_mask(head, expr)


def run_unsupervised(spec, task, ds_split, prep, profile, folder, storage: str, local_storage: str, rep,
                     cluster_cpus: float, timings: dict, t_start: float):
    """Train, score and mine an unsupervised job; write its outputs into ``folder``."""
    from dlmine_ray.runner import RunResult, _arrow, _fit
    from dlmine_ray.train.trainer import use_ray_train

    d = spec.data
    keep = tuple(c for c in (d.id, d.labels) if c)
    if d.normal_when:
        _check_mask_on_head(ds_split, d.normal_when)
    try:
        encoded = _encode(ds_split, prep, keep, d.normal_when)
    except DlmineError:
        raise
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:  # a DlmineError raised inside a Ray task
            cause = cause.__cause__
        if isinstance(cause, DlmineError):
            raise cause from None
        raise DlmineError(f"cannot preprocess data: {first_line(err)}") from None
    from ray.data.expressions import col

    cols = ["features", "target"]
    train = encoded.filter(expr=(col(SPLIT_COL) == 0) | (col(SPLIT_COL) == 2)).select_columns(cols).materialize()
    n_train = train.count()
    if n_train < 2:
        what = f"data.normal_when '{d.normal_when}' selects" if d.normal_when else "the split leaves"
        raise DlmineError(f"{what} {n_train} training row(s); at least 2 are needed")
    sets = {"train": train}
    n_valid = 0
    if d.split.valid > 0:
        valid = encoded.filter(expr=col(SPLIT_COL) == 1).select_columns(cols).materialize()
        n_valid = valid.count()
        if n_valid > 0:
            sets["valid"] = valid
    rep.info(f"{prep.n_features} encoded features from {len(prep.input_columns)} columns; "
             f"{n_train:,} training rows" + (f" (data.normal_when: {d.normal_when})" if d.normal_when else ""))
    timings["data_seconds"] = time.perf_counter() - t_start

    seed = spec.train.seed
    samples = {"train": _sample_features(train, n_train, spec.cluster.sample_rows if spec.task == "cluster"
                                         else 10_000, seed),
               "all": None}
    if spec.task == "detect":
        samples["all"] = _sample_features(encoded, profile.n_rows, THRESHOLD_SAMPLE, seed + 1)
    info: dict[str, Any] = task.initial_info(spec, prep.feature_names)
    base_sets = dict(sets)
    model_spec = spec.model.model_dump()
    big = use_ray_train(spec, train.size_bytes())
    where = f"{spec.scaling.num_workers} Ray Train worker(s)" if big else "one Ray task (small job)"
    board = make_board()
    history: list[dict] = []
    init_state: Optional[dict] = None
    t0 = time.perf_counter()
    stages = task.stages(spec)
    keep_in = os.path.join(local_storage, "best")
    with BoardWatcher(board, rep):
        for i, stage in enumerate(stages):
            tr = task.stage_train(spec, stage)
            rep.stage("training", f"stage {i + 1}/{len(stages)} '{stage}': {where}, up to {tr['epochs']} epochs")
            layout = {"n_features": prep.n_features, "info": info, "has_valid": "valid" in sets, "stage": stage,
                      "train": tr, "init_state": init_state}
            outcome = _fit(spec, sets, layout, storage, board, cluster_cpus, os.path.join(keep_in, stage), big)
            offset = len(history)
            history.extend({**h, "epoch": offset + h["epoch"], "stage": stage} for h in outcome.history)
            model = task.build_model(prep.n_features, info, model_spec)
            model.load_state_dict(torch.load(outcome.state_path, map_location="cpu", weights_only=True), strict=False)
            model.eval()
            setup = task.after_stage(stage, model, samples, info, spec)
            info.update(setup.info)
            init_state = {**model.state_dict(), **setup.state}
            for line in setup.notes:
                rep.info(line)
            sets = dict(base_sets)
            if setup.train_on is not None:  # the next stage trains on the rows the task chose
                sets["train"] = _rows_dataset(*setup.train_on)
    train_seconds = time.perf_counter() - t0

    rep.stage("scoring", "every row, batch inference on Ray Data")
    final = task.build_model(prep.n_features, info, model_spec)
    final.load_state_dict(init_state, strict=False)
    state_path = os.path.join(local_storage, "final_model_state.pt")
    torch.save({k: v.detach().cpu() for k, v in final.state_dict().items()}, state_path)
    model_dir = folder.path("model")
    save_model_dir(str(model_dir), state_path, prep, spec.task, model_spec,
                   {"job": spec.name, "stages": stages, "na_values": d.na_values}, info=info)
    baseline = None
    tb = time.perf_counter()
    if spec.compare_baselines:
        x_base = _sample_features(train, n_train, spec.baseline_max_rows, seed + 2)
        baseline = task.fit_baseline(x_base, info, spec, seed)
    scored = score_encoded(encoded, str(model_dir), keep=("features",) + keep)
    try:
        result = task.mine(scored.iter_batches(batch_format="numpy", batch_size=65536), info, spec, baseline,
                           profile.n_rows)
    except DlmineError:
        raise
    except Exception as err:
        raise RuntimeError(f"scoring failed: {first_line(err)}") from err

    # lets the report show cluster profiles in the original units of numeric columns
    result.report["numeric_units"] = {c: (mean, std) for c, mean, std in prep.numeric_}
    metrics: dict[str, Any] = {"task": spec.task}
    metrics.update(result.metrics)
    metrics.update({"rows": profile.n_rows, "rows_train": int(n_train),
                    "rows_valid": int(n_valid),
                    "train_seconds": round(train_seconds, 3), "epochs_run": len(history),
                    "trainer": "ray_train" if big else "task", "stages": stages})
    if baseline is not None:
        metrics["baseline_rows_train"] = int(min(n_train, spec.baseline_max_rows))
        metrics["baseline_seconds"] = round(time.perf_counter() - tb, 3)

    rep.stage("writing", f"metrics, {task.result_file}, model, report")
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
    write_parquet_batches(folder.path(task.result_file), [_arrow(result.table)])
    write_json(folder.path("metrics.json"), metrics)
    folder.path("job.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    write_json(folder.path("history.json"), history)
    from dlmine_ray.report.mining import write_mining_report

    write_mining_report(folder.path("report.html"), spec=spec, profile=profile.summary(d.labels), history=history,
                        metrics=metrics, material=result.report, info=info)
    return RunResult(folder.final, metrics, spec, None, timings)
