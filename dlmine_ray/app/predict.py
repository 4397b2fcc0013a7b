"""Score new data with a saved model folder (``dlmine predict``)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from dlmine_ray.data.read import (SMALL_INPUT_BYTES, dataset_columns, local_input_bytes, mixed_types, read_dataset,
                                  read_table_here)
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.infer import batch_rows, check_columns, score_dataset
from dlmine_ray.pipelines.write import write_parquet_batches
from dlmine_ray.runtime.session import check_reachable, ray_session
from dlmine_ray.tasks import get_task

#: what a model folder's model.json must hold
MODEL_KEYS = ("task", "model", "n_features", "info", "input_columns")


def predict(model: str, data, output: str, address: Optional[str] = None, overwrite: bool = False,
            verbose: bool = False, fmt: str = "auto", batch_size: Optional[int] = None,
            local_max_bytes: int = SMALL_INPUT_BYTES) -> int:
    """Score every row of ``data`` with the model folder ``model``; stream the predictions into the
    Parquet file ``output`` (id column kept when the model has one); return rows written.

    Local input of at most ``local_max_bytes`` is read and scored in this process, without
    starting or joining Ray, also when ``address`` (or RAY_ADDRESS) names a cluster, as a small
    `dlmine run` does (the address must answer all the same); larger input, or input in object
    storage, goes through Ray Data, on that cluster if one is named (negative ``local_max_bytes``:
    always). ``batch_size``: rows per batch (default: ``infer.batch_rows`` of the model's input
    columns)."""
    out = output_file(output, overwrite, "predictions.parquet")
    meta = read_model_meta(model)
    batch_size = batch_size or batch_rows(len(meta["input_columns"]))
    with output_folders(out):
        size = local_input_bytes(data, fmt)
        if size is not None and size <= local_max_bytes:
            cluster = address or os.environ.get("RAY_ADDRESS")
            if cluster:  # a wrong address is an error, small input or not
                check_reachable(cluster)
            return _score_here(model, meta, data, out, fmt, batch_size)
        return _score(model, meta, data, out, address, verbose, fmt, batch_size)


def open_model(model: str, threads: Optional[int] = None):
    """A saved model folder (a run's ``model/``) loaded in this process for ``.predict(df)``
    (``infer.LoadedModel``); DlmineError when it is not a model folder or cannot be loaded."""
    return load_model(model, read_model_meta(model), threads)


def output_file(output: str, overwrite: bool, example: str) -> Path:
    """The absolute path of an output file; DlmineError for a folder, or a file that exists without
    ``overwrite`` (``example``: a file name the message suggests)."""
    out = Path(output).expanduser().absolute()
    if out.is_dir():
        raise DlmineError(f"--output {out} is a folder; give a file name such as {example}")
    if out.exists() and not overwrite:
        raise DlmineError(f"output file {out} exists; pass --overwrite to replace it")
    return out


def read_model_meta(model: str) -> dict:
    """A model folder's model.json, checked to be a model description; DlmineError when it is not."""
    if not Path(model, "model.json").is_file():
        raise DlmineError(f"{model} is not a dlmine model folder (no model.json); "
                          "pass the model/ folder inside a run's output")
    with failing_as(f"{Path(model, 'model.json')} is not a model description (was it edited?)"):
        meta = json.loads(Path(model, "model.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("it is not a JSON object")
        lacks = [k for k in MODEL_KEYS if k not in meta]
        if lacks:
            raise ValueError(f"it lacks {', '.join(map(repr, lacks))}")
    return meta


@contextlib.contextmanager
def output_folders(out: Path) -> Iterator[None]:
    """Create the folders above ``out`` for the block; if the block fails, remove those it created
    (nothing left behind: no empty output folder either)."""
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def load_model(model: str, meta: dict, threads: Optional[int] = 1):
    """The model folder loaded (``infer.LoadedModel``, scoring with ``threads`` torch threads; None:
    the process's) with the task its ``meta`` names; weights that do not fit model.json fail here,
    in one line."""
    from dlmine_ray.infer import LoadedModel

    with failing_as(f"cannot load the model in {model}"):
        return LoadedModel(model, threads=threads, task=get_task(meta["task"]))


def read_data(data, fmt: str, meta: dict):
    """The Ray Dataset of ``data`` read as the model was fitted (its missing-value markers), and its
    column names; DlmineError when it lacks a column the model needs. Inside a Ray session."""
    ds = read_dataset(data, fmt, na_values=meta.get("na_values", []))
    names, _ = dataset_columns(ds)
    check_columns(names, meta)
    return ds, names


def _score_here(model: str, meta: dict, data, out: Path, fmt: str, batch_size: int) -> int:
    """``_score`` for small local input: read, score and write in this process."""
    import pyarrow as pa

    loaded = load_model(model, meta, threads=None)  # this process's torch threads (all cores), not a worker's one
    table = read_table_here(data, fmt, na_values=meta.get("na_values", []))
    check_columns(table.column_names, meta)
    keep = tuple(c for c in (meta.get("id"), meta.get("target")) if c and c in table.column_names)

    def batches():
        for i in range(0, table.num_rows, batch_size):
            scored = loaded.predict_frame(table.slice(i, batch_size).to_pandas(), keep)
            yield pa.Table.from_pandas(scored, preserve_index=False)

    with failing_as("scoring failed"):
        return write_parquet_batches(out, batches())


def _score(model: str, meta: dict, data, out: Path, address, verbose: bool, fmt: str, batch_size: int) -> int:
    task = load_model(model, meta).task
    with ray_session(address, verbose):
        ds, names = read_data(data, fmt, meta)
        keep = tuple(c for c in (meta.get("id"), meta.get("target")) if c and c in names)
        # the task object travels with the batches: a task registered only in this process scores too
        scored = score_dataset(ds, os.path.abspath(model), keep=keep, batch_size=batch_size, task=task)
        with failing_as("scoring failed"):
            try:
                return write_parquet_batches(out, scored.iter_batches(batch_format="pyarrow", batch_size=None))
            except Exception:  # an id or target column of two types cannot be one output column
                mixed = mixed_types(ds.input_files(), fmt, keep, meta.get("na_values", []))
                if mixed:
                    raise DlmineError(mixed) from None
                raise
