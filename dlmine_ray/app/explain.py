"""Per-row explanations of new data with a saved model folder (``dlmine explain``): integrated
gradients of the first N rows, preprocessed and checked as ``dlmine predict`` does (its reading
and validation code), into one Parquet file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd

from dlmine_ray.app.predict import load_model, output_file, output_folders, read_data, read_model_meta
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.explain import explain_frame
from dlmine_ray.pipelines.write import arrow, write_parquet_batches
from dlmine_ray.runtime.session import ray_session
from dlmine_ray.tasks import TASKS, get_task

#: the column of each row's position among the rows read
POSITION = "row"


def explain(model: str, data, rows: int, output: str = "explanations.parquet", address: Optional[str] = None,
            overwrite: bool = False, verbose: bool = False, fmt: str = "auto") -> int:
    """Write the attributions of the first ``rows`` rows of ``data`` by the model folder ``model``
    into the Parquet file ``output``: the row's position (``row``), its id when the model has one,
    ``prediction``, and one column per original feature (integrated gradients, a categorical
    column's one-hot group summed; see explain.py). Returns rows written; the file appears
    complete or not at all."""
    if rows <= 0:
        raise DlmineError(f"--rows must be a positive number of rows to explain (got {rows})")
    out = output_file(output, overwrite, "explanations.parquet")
    meta = read_model_meta(model)
    task = get_task(meta["task"])
    if not task.explains:
        which = ", ".join(t.name for t in TASKS.values() if t.explains)
        raise DlmineError(f"the model in {model} is a '{task.name}' model, whose task has no explanations; "
                          f"dlmine explain explains models of: {which}")
    with output_folders(out):
        loaded = load_model(model, meta)
        with ray_session(address, verbose), _in_order():
            ds, _ = read_data(data, fmt, meta)
            with failing_as("cannot read data"):
                df = ds.limit(rows).to_pandas()
        if len(df) == 0:
            raise DlmineError("the data has no rows to explain")
        with failing_as("explaining failed", RuntimeError):
            attr, _ = explain_frame(loaded, df)
        front = {POSITION: range(len(df))}
        id_col = meta.get("id")
        if id_col and id_col in df.columns and id_col != POSITION:
            front[id_col] = df[id_col].to_numpy()
        taken = set(front) | {"prediction"}
        # a feature named like a leading column keeps its attribution under a distinct name
        attr = attr.rename(columns={c: f"{c} (attribution)" for c in attr.columns[1:] if c in taken})
        table = pd.concat([pd.DataFrame(front), attr], axis=1)
        return write_parquet_batches(Path(out), [arrow(table)])


@contextlib.contextmanager
def _in_order() -> Iterator[None]:
    """Ray Data keeps the order of rows as read (files in order, rows in file order) for datasets
    made in the block: a position then means the same row on every call."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before
