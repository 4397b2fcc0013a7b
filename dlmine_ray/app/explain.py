"""Per-row explanations of new data with a saved model folder (``dlmine explain``): integrated
gradients of N rows, preprocessed and checked as ``dlmine predict`` does (its reading and
validation code), into one Parquet file. The N rows are a seeded sample, uniform over all the rows
read (``--seed``), or with ``--first`` the first N; a sample is taken in one streaming pass after a
count, keeping only the chosen rows, so memory follows N, not the data's size."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from dlmine_ray.app.predict import load_model, output_file, output_folders, read_data, read_model_meta
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.explain import explain_frame
from dlmine_ray.pipelines.write import arrow, write_parquet_batches
from dlmine_ray.runtime.session import ray_session
from dlmine_ray.tasks import TASKS, get_task

#: the column of each row's position among the rows read
POSITION = "row"
#: rows per batch of the pass that takes a sample's rows
BATCH_ROWS = 65536


def explain(model: str, data, rows: int, output: str = "explanations.parquet", address: Optional[str] = None,
            overwrite: bool = False, verbose: bool = False, fmt: str = "auto", seed: int = 0,
            first: bool = False) -> int:
    """Write the attributions of ``rows`` rows of ``data`` by the model folder ``model`` into the
    Parquet file ``output``: the row's position among the rows read (``row``, 0-based in file
    order), its id when the model has one, ``prediction``, and one column per original feature
    (integrated gradients, a categorical column's one-hot group summed; see explain.py), sorted by
    position. The rows are a uniform sample without replacement drawn with ``seed`` (all of them
    when ``rows`` reaches the row count), or with ``first`` the first ``rows``. Returns rows
    written; the file appears complete or not at all."""
    if rows <= 0:
        raise DlmineError(f"--rows must be a positive number of rows to explain (got {rows})")
    if seed < 0:
        raise DlmineError(f"--seed must be 0 or more (got {seed})")
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
                if first:
                    df = ds.limit(rows).to_pandas()
                    positions = np.arange(len(df))
                else:
                    df, positions = _sampled_rows(ds, rows, seed)
        if len(df) == 0:
            raise DlmineError("the data has no rows to explain")
        with failing_as("explaining failed", RuntimeError):
            attr, _ = explain_frame(loaded, df)
        front = {POSITION: positions}
        id_col = meta.get("id")
        if id_col and id_col in df.columns and id_col != POSITION:
            front[id_col] = df[id_col].to_numpy()
        taken = set(front) | {"prediction"}
        # a feature named like a leading column keeps its attribution under a distinct name
        attr = attr.rename(columns={c: f"{c} (attribution)" for c in attr.columns[1:] if c in taken})
        table = pd.concat([pd.DataFrame(front), attr], axis=1)
        return write_parquet_batches(Path(out), [arrow(table)])


def sample_positions(n_rows: int, rows: int, seed: int) -> np.ndarray:
    """``rows`` distinct positions in ``range(n_rows)``, uniform without replacement from ``seed``,
    sorted (all of them when ``rows >= n_rows``); numpy draws few of many in memory of the sample."""
    if rows >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, rows, replace=False))


def _sampled_rows(ds, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded sample of ``rows`` rows of ``ds`` (read in order) and their positions: the rows
    are counted, positions drawn, and one pass over the batches keeps the rows at those positions
    (and stops after the last), so that memory holds a batch and the sample."""
    positions = sample_positions(ds.count(), rows, seed)
    if len(positions) == 0:
        return pd.DataFrame(), positions
    parts, start = [], 0
    for batch in ds.iter_batches(batch_format="pandas", batch_size=BATCH_ROWS):
        end = start + len(batch)
        lo, hi = np.searchsorted(positions, [start, end])
        if hi > lo:
            parts.append(batch.iloc[positions[lo:hi] - start])
        start = end
        if start > positions[-1]:
            break
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(df) != len(positions):  # the data changed between the count and the pass
        raise DlmineError(f"the data had {start:,} rows when read for the sample, fewer than counted just "
                          "before; was it being written to?")
    return df, positions


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
