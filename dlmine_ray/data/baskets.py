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

    def as_items(df: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for c in cols:
            v = df[c]
            parts.append(np.where(v.notna(), c + "=" + v.astype(str), None))
        rows = np.column_stack(parts) if parts else np.zeros((len(df), 0), dtype=object)
        return pd.DataFrame({"items": [[x for x in r if x is not None] for r in rows]})

    return ds.map_batches(as_items, batch_format="pandas")
