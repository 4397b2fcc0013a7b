"""Score new data with a saved model folder (``dlmine predict``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from dlmine_ray.data.read import dataset_columns, read_dataset
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.infer import check_columns, score_dataset
from dlmine_ray.pipelines.write import write_parquet_batches
from dlmine_ray.runtime.session import ray_session
from dlmine_ray.tasks import get_task


def predict(model: str, data, output: str, address: Optional[str] = None, overwrite: bool = False,
            verbose: bool = False, fmt: str = "auto", batch_size: int = 8192) -> int:
    """Score every row of ``data`` with the model folder ``model``; stream the predictions into the
    Parquet file ``output`` (id column kept when the model has one); return rows written."""
    out = Path(output).expanduser().absolute()
    if out.is_dir():
        raise DlmineError(f"--output {out} is a folder; give a file name such as predictions.parquet")
    if out.exists() and not overwrite:
        raise DlmineError(f"output file {out} exists; pass --overwrite to replace it")
    if not Path(model, "model.json").is_file():
        raise DlmineError(f"{model} is not a dlmine model folder (no model.json); "
                          "pass the model/ folder inside a run's output")
    out.parent.mkdir(parents=True, exist_ok=True)
    na_values = json.loads(Path(model, "model.json").read_text()).get("na_values", [])
    with ray_session(address, verbose):
        ds = read_dataset(data, fmt, na_values=na_values)  # the missing-value markers the model was fitted with
        names, _ = dataset_columns(ds)
        meta = check_columns(names, model)
        keep = tuple(c for c in (meta.get("id"), meta.get("target")) if c and c in names)
        # the task object travels with the batches: a task registered only in this process scores too
        scored = score_dataset(ds, os.path.abspath(model), keep=keep, batch_size=batch_size,
                               task=get_task(meta["task"]))
        with failing_as("scoring failed"):
            return write_parquet_batches(out, scored.iter_batches(batch_format="pyarrow", batch_size=None))
