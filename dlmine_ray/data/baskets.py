"""Transactions on Ray Data: three input shapes become one Ray Dataset with an ``items`` list
column, one row per transaction: baskets (``data.items`` names a list column), long
(``data.transaction`` and ``data.items``: one row per transaction and item), or a categorical
table (every column but the id and ignored ones; each ``column=value`` is an item; nulls are no
item)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from dlmine_ray.data.read import dataset_columns
from dlmine_ray.errors import DlmineError


def transactions(ds, spec):
    """A Ray Dataset with one ``items`` list column (one row per transaction)."""
    d = spec.data
    names, types = dataset_columns(ds)
    for col, field in ((d.items, "data.items"), (d.transaction, "data.transaction"), (d.id, "data.id")):
        if col is not None and col not in names:
            raise DlmineError(f"column '{col}' ({field}) not found; columns are: {', '.join(names[:20])}")
    if d.transaction is not None:  # long: one row per (transaction, item)
        tx, it = d.transaction, d.items

        def collect(df: pd.DataFrame) -> pd.DataFrame:
            items = df[it].dropna().astype(str).unique().tolist()
            return pd.DataFrame({"items": [items]})

        return ds.select_columns([tx, it]).groupby(tx).map_groups(collect, batch_format="pandas")
    if d.items is not None:  # baskets: a list column
        t = types[d.items]
        arrow = getattr(t, "arrow_dtype", t) if not isinstance(t, pa.DataType) else t
        if not (isinstance(arrow, pa.DataType) and (pa.types.is_list(arrow) or pa.types.is_large_list(arrow))):
            raise DlmineError(f"item column '{d.items}' is not a list column (it holds {t}); for one row per "
                              "(transaction, item) also name the transaction column in data.transaction")
        return ds.select_columns([d.items]).rename_columns({d.items: "items"}) if d.items != "items" \
            else ds.select_columns(["items"])
    skip = set(d.ignore) | ({d.id} if d.id else set())
    cols = [c for c in names if c not in skip]
    if not cols:
        raise DlmineError("no item columns left after removing the id and ignored columns")

    return ds.map_batches(table_items, fn_args=(cols,), batch_format="pyarrow")


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def table_items(batch: pa.Table, cols: list[str]) -> pa.Table:
    """A categorical table's rows as transactions: an ``items`` list column of ``column=value``
    texts, in column order, with no item for a missing value. Built with Arrow kernels: the
    per-row Python lists this replaced took 20.9 s for 1M rows x 20 columns."""
    import pyarrow.compute as pc

    n = batch.num_rows
    # other values as pandas' astype(str) writes them (1.0 stays "1.0", True "True"); through the
    # table, so that its pandas metadata keeps an integer column with nulls integer
    others = [c for c in cols if not _is_text(batch.schema.field(c).type)]
    frame = batch.select(others).to_pandas() if others else None

    def text(c):
        if frame is None or c not in frame.columns:
            return batch.column(c).combine_chunks().cast(pa.string())
        v = frame[c]
        return pa.array(np.where(v.notna(), v.astype(str), None), type=pa.string())

    texts = [pc.binary_join_element_wise(f"{c}=", text(c), "") for c in cols]
    valid = np.column_stack([t.is_valid().to_numpy(zero_copy_only=False) for t in texts]).reshape(n, len(cols))
    # the values column by column (column j's rows at j * n ...), taken back in row order
    where = (np.arange(len(cols))[None, :] * n + np.arange(n)[:, None])[valid]
    values = pa.concat_arrays(texts).take(pa.array(where, type=pa.int64())) if len(where) else pa.array([], pa.string())
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    if offsets[-1] < 2**31:
        items = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    else:
        items = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    return pa.table({"items": items})
