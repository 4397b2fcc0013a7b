"""Batch inference with Ray Data ``map_batches``, one path for every task: a run's test-split
predictions and ``dlmine predict`` both go through ``score_dataset``.

A model folder holds ``model.pt`` (weights), ``preprocess.json`` (the fitted preprocessing),
and ``model.json`` (task, model spec, target layout, input schema); a model of a job with
``augment`` also ``augment.json`` and ``augment.npz``, the miners whose columns the preprocessing
appends (``mining/augment.py``)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import torch

from dlmine_ray.data.preprocess import TabularPreprocessor
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.tasks import get_task

WEIGHTS, PREPROCESS, MODEL_META = "model.pt", "preprocess.json", "model.json"
#: rows per forward pass when scoring
CHUNK_ROWS = 8192
#: about this many bytes of input per Ray Data scoring batch (``batch_rows``)
BATCH_BYTES = 16 * 2**20
#: the most rows per Ray Data scoring batch
MAX_BATCH_ROWS = 65536


def batch_rows(n_columns: int) -> int:
    """Rows per Ray Data scoring batch for rows of ``n_columns`` columns: about ``BATCH_BYTES``
    of 8-byte values, from ``CHUNK_ROWS`` up to ``MAX_BATCH_ROWS``. Each batch pays a fixed cost
    (the pandas or numpy conversion, a task's bookkeeping): ``benchmarks/bench_pipeline.py --rows
    2000000`` scored through Ray in 13.3 s with 8,192-row batches and in 6.65 s with these."""
    return int(max(CHUNK_ROWS, min(MAX_BATCH_ROWS, BATCH_BYTES // (8 * max(int(n_columns), 1)))))


def save_model_dir(path: str, state: dict, prep: TabularPreprocessor, task: str, model_spec: dict,
                   extra: Optional[dict] = None, info: Optional[dict] = None) -> None:
    """Write a loadable model folder at ``path`` (which must not exist yet) from the model's
    ``state`` dict; ``info`` is the task's layout (default: the preprocessor's target layout)."""
    os.makedirs(path)
    torch.save({k: v.detach().cpu() for k, v in state.items()}, os.path.join(path, WEIGHTS))
    prep.save(Path(path) / PREPROCESS)
    meta = {"format": 1, "task": task, "model": model_spec, "n_features": prep.n_features,
            "info": prep.target_info_ if info is None else info, "input_columns": prep.input_columns, "target": prep.target,
            "id": prep.id_col, "feature_names": prep.feature_names, **(extra or {})}
    Path(path, MODEL_META).write_text(json.dumps(meta, indent=1, default=str))


class LoadedModel:
    """A model folder loaded for scoring: ``predict(df)`` (or ``predict_frame``) returns prediction
    columns. ``threads``: torch's threads while scoring (None: leave the process's setting)."""

    def __init__(self, path: str, threads: Optional[int] = 1, device: str = "cpu", task=None):
        p = Path(path)
        for f in (WEIGHTS, PREPROCESS, MODEL_META):
            if not (p / f).is_file():
                raise DlmineError(f"{path} is not a dlmine model folder (missing {f})")
        self.meta = json.loads((p / MODEL_META).read_text())
        with failing_as(f"{p / PREPROCESS} is not a saved preprocessing (was it edited?)"):
            self.prep = TabularPreprocessor.load(p / PREPROCESS)
        if self.prep.augment_kinds_:  # the mined features, saved beside it (augment.json, augment.npz)
            from dlmine_ray.mining.augment import Augmenter

            with failing_as(f"{p} lacks the saved mined features (augment.json, augment.npz) of its preprocessing"):
                self.prep.augment_ = Augmenter.load(p)
        # the run that saved the model passes its task object (a task registered only there too)
        self.task = task if task is not None else get_task(self.meta["task"])
        self.info = self.meta["info"]
        self.model = self.task.build_model(self.meta["n_features"], self.info, self.meta["model"])
        try:
            weights = torch.load(p / WEIGHTS, map_location="cpu", weights_only=True)
        except Exception:  # torch's message ends in advice about weights_only, not the cause
            raise DlmineError(f"{p / WEIGHTS} is not a saved model's weights (was it replaced or cut short?)") from None
        self.model.load_state_dict(weights)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.threads = threads

    @property
    def input_columns(self) -> list[str]:
        """The columns the model reads from a row."""
        return list(self.meta["input_columns"])

    def predict(self, df: pd.DataFrame, batch_size: int = 65536) -> pd.DataFrame:
        """Predictions for the rows of ``df`` (a pandas DataFrame with at least ``input_columns``),
        scored in this process: the model's id column when ``df`` has it, then the task's prediction
        columns (as ``dlmine predict`` writes them), one row per row of ``df`` in its order.
        DlmineError when ``df`` lacks a column the model needs."""
        check_columns(list(df.columns), self.meta)
        keep = tuple(c for c in (self.meta.get("id"),) if c)
        parts = [self.predict_frame(df.iloc[i:i + batch_size], keep) for i in range(0, len(df), batch_size)]
        return pd.concat(parts, ignore_index=True) if parts else self.predict_frame(df, keep)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs for an encoded feature matrix, in chunks of ``CHUNK_ROWS`` rows (the
        activations of a chunk stay in cache: 100k rows at once took 1.8x as long here)."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        with torch.inference_mode(), warnings.catch_warnings():
            # rows read from Ray's object store are read-only; nothing here writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            parts = [self.model(torch.from_numpy(x[i:i + CHUNK_ROWS]).to(self.device)).float().cpu().numpy()
                     for i in range(0, max(len(x), 1), CHUNK_ROWS)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict_frame(self, df: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
        """Kept columns (id, target) followed by the task's prediction columns."""
        out = {c: df[c].to_numpy() for c in keep if c in df.columns}
        out.update(self.task.predict_columns(self.outputs(self.prep.transform_features(df)), self.info))
        return pd.DataFrame(out)

    def predict_encoded(self, batch: dict, keep: tuple[str, ...] = ()) -> dict:
        """The same for a batch already preprocessed (a ``features`` matrix): kept columns, then
        prediction columns."""
        out = {c: batch[c] for c in keep if c in batch}
        out.update(self.task.predict_columns(self.outputs(np.asarray(batch["features"], dtype=np.float32)), self.info))
        return out


_LOADED: dict[tuple, LoadedModel] = {}


def _loaded(path: str, threads: int, use_gpu: bool, task=None) -> LoadedModel:
    # Plain functions in Ray's reusable worker processes, with the loaded model cached per
    # process: no actor pool to start, which would cost seconds on every small scoring job.
    key = (path, os.path.getmtime(os.path.join(path, WEIGHTS)), threads, use_gpu)
    m = _LOADED.get(key)
    if m is None:
        _LOADED.clear()
        m = _LOADED[key] = LoadedModel(path, threads, "cuda" if use_gpu and torch.cuda.is_available() else "cpu",
                                       task)
    return m


def _score_batch(df: pd.DataFrame, path: str, keep: tuple, threads: int, use_gpu: bool, task) -> pd.DataFrame:
    return _loaded(path, threads, use_gpu, task).predict_frame(df, keep)


def _score_encoded_batch(batch: dict, path: str, keep: tuple, threads: int, use_gpu: bool, task) -> dict:
    return _loaded(path, threads, use_gpu, task).predict_encoded(batch, keep)


def _meta(model_path: str) -> dict:
    return json.loads(Path(model_path, MODEL_META).read_text())


def check_columns(schema_names: list[str], meta: dict) -> dict:
    """Raise DlmineError if the data lacks a column the model (its ``model.json``, read) needs;
    return the meta."""
    missing = [c for c in meta["input_columns"] if c not in schema_names]
    if missing:
        raise DlmineError(f"data lacks column(s) the model needs: {', '.join(missing[:10])}")
    return meta


def score_dataset(ds, model_path: str, keep: tuple[str, ...] = (), batch_size: Optional[int] = None,
                  threads: int = 1, use_gpu: bool = False, task=None):
    """Return a lazy Ray Dataset of ``keep`` columns plus predictions for every row of ``ds``
    (``task``: the task object; default, the registered task the model folder names).
    ``batch_size``: rows per batch (default: ``batch_rows`` of the model's input columns)."""
    if batch_size is None:
        batch_size = batch_rows(len(_meta(model_path)["input_columns"]))
    return ds.map_batches(
        _score_batch, fn_args=(os.path.abspath(str(model_path)), tuple(keep), threads, use_gpu, task),
        batch_format="pandas", batch_size=batch_size, num_cpus=threads, num_gpus=1 if use_gpu else 0,
    )


def scores_in_driver(size_bytes: int, driver_max_mb: float) -> bool:
    """Whether a run through Ray scores its encoded split of ``size_bytes`` in the driver
    (``score_here``) rather than by a Ray Data execution (``score_encoded``): when the split is at
    most ``driver_max_mb`` MiB, or at any size when the cluster is this one node, where Ray Data
    would use the same cores at about half the speed (``benchmarks/bench_split_scoring.py``, two
    runs: 2M-4M rows 0.70-0.87 of a bare forward pass in the driver, 0.44-0.46 by Ray Data). Either way the
    scored rows stream into the driver block by block; on a cluster of several nodes a large split
    is scored where its blocks are. ``driver_max_mb`` 0: always Ray Data."""
    from dlmine_ray.runtime.session import cluster_is_this_node

    if driver_max_mb <= 0:
        return False
    return size_bytes <= driver_max_mb * 2**20 or cluster_is_this_node()


def score_here(ds, model_path: str, keep: tuple[str, ...] = (), threads: Optional[int] = None, task=None,
               batch_size: int = 65536) -> Iterator[dict]:
    """Score the rows of a materialized Ray Dataset of encoded rows (a ``features`` column: a run's
    test split, encoded once and held in Ray's object store) in this process, in their order:
    numpy batches of ``keep`` columns plus predictions, as ``score_encoded`` consumed batch by batch
    gives them, without a Ray Data execution (a 300k-row split of the 2M-row table: 0.84-0.92 of a
    bare forward pass this way, 0.30-0.34 through Ray Data; ``benchmarks/bench_pipeline.py --rows
    2000000``). ``threads``: torch's threads."""
    import ray
    from ray.data.block import BlockAccessor

    lm = LoadedModel(model_path, threads, task=task)
    for ref in ds.to_arrow_refs():
        table = ray.get(ref)
        for i in range(0, table.num_rows, batch_size):
            yield lm.predict_encoded(BlockAccessor.for_block(table.slice(i, batch_size)).to_batch_format("numpy"),
                                     keep)


def score_encoded(ds, model_path: str, keep: tuple[str, ...] = (), batch_size: Optional[int] = None,
                  threads: int = 1, use_gpu: bool = False, task=None):
    """Like ``score_dataset`` for rows already preprocessed into a ``features`` column (a run's
    own data, encoded once): a lazy Ray Dataset of ``keep`` columns plus predictions
    (``batch_size`` default: ``batch_rows`` of the encoded features)."""
    if batch_size is None:
        batch_size = batch_rows(_meta(model_path)["n_features"])
    return ds.map_batches(
        _score_encoded_batch, fn_args=(os.path.abspath(str(model_path)), tuple(keep), threads, use_gpu, task),
        batch_format="numpy", batch_size=batch_size, num_cpus=threads, num_gpus=1 if use_gpu else 0,
    )
