"""Rows held in this process, for a small job that runs in the driver without starting Ray.

``LocalRows`` offers the few Ray Dataset methods the row pipeline calls (``map_batches``,
``iter_batches``, ``random_sample``, ``select_columns``, ``count``...), so that a small job goes
through the same pipeline code, the same stats pass, the same encoding function and the same
split keys as a large one, without a Ray Data execution (each costs about a second of start-up,
and the first one in a process several: ``benchmarks/bench_fixed_cost.py``).

The whole table is one block: ``map_batches`` without a ``batch_size`` sees every row at once.
Columns are numpy arrays (a 2-D one for a tensor column such as ``features``); rows read from
files stay an Arrow table until a function asks for them as pandas, as Ray Data keeps them."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd


class LocalRows:
    """A table of rows in this process, read through a subset of Ray Data's Dataset API."""

    def __init__(self, columns: Any, files: Sequence[str] = ()):
        """``columns``: an Arrow table, a pandas DataFrame, or a dict of equally long numpy arrays;
        ``files``: the files the rows were read from (``input_files``)."""
        import pyarrow as pa

        self._files = list(files)
        self._table: Optional[pa.Table] = None
        self._cols: Optional[dict[str, np.ndarray]] = None
        if isinstance(columns, pa.Table):
            self._table = columns
        elif isinstance(columns, pd.DataFrame):
            self._cols = {c: columns[c].to_numpy() for c in columns.columns}
        else:
            self._cols = {c: np.asarray(v) for c, v in columns.items()}
            lengths = {len(v) for v in self._cols.values()}
            if len(lengths) > 1:
                raise ValueError(f"columns of different lengths: {sorted(lengths)}")

    # --- what the rows are
    def count(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def size_bytes(self) -> int:
        if self._table is not None:
            return int(self._table.nbytes)
        return int(sum(v.nbytes if v.dtype != object else 64 * len(v) for v in self._cols.values()))

    def input_files(self) -> list[str]:
        return list(self._files)

    @property
    def names(self) -> list[str]:
        return list(self._table.column_names) if self._table is not None else list(self._cols)

    def column(self, name: str) -> np.ndarray:
        """One column as a numpy array (a 2-D one for a tensor column)."""
        return self._numpy()[name]

    def to_arrow(self):
        """The rows as one Arrow table (1-D columns)."""
        import pyarrow as pa

        if self._table is not None:
            return self._table
        return pa.table({c: pa.array(list(v) if v.dtype == object else v) for c, v in self._cols.items()})

    # --- Ray Dataset methods
    def materialize(self) -> "LocalRows":
        return self

    def schema(self):
        return self.to_arrow().schema

    def rename_columns(self, names: dict) -> "LocalRows":
        if self._table is not None:
            return LocalRows(self._table.rename_columns([names.get(c, c) for c in self.names]), self._files)
        return LocalRows({names.get(c, c): v for c, v in self._cols.items()}, self._files)

    def groupby(self, key: str) -> "_Groups":
        return _Groups(self, key)

    def select_columns(self, cols: Sequence[str]) -> "LocalRows":
        if self._table is not None:
            return LocalRows(self._table.select(list(cols)), self._files)
        return LocalRows({c: self._cols[c] for c in cols}, self._files)

    def take(self, limit: int = 20) -> list[dict]:
        return self._head(limit).to_dict("records") if self._table is None else \
            self._table.slice(0, limit).to_pylist()

    def take_all(self) -> list[dict]:
        return self.take(self.count())

    def random_sample(self, fraction: float, seed: Optional[int] = None) -> "LocalRows":
        """Each row kept with probability ``fraction``, as Ray's ``random_sample`` (another draw)."""
        keep = np.random.default_rng(seed).random(self.count()) < fraction
        return self.where(keep)

    def where(self, mask: np.ndarray) -> "LocalRows":
        """The rows where ``mask`` is true, in order (what ``Dataset.filter`` does)."""
        if self._table is not None:
            import pyarrow as pa

            return LocalRows(self._table.filter(pa.array(mask)), self._files)
        return LocalRows({c: v[mask] for c, v in self._cols.items()}, self._files)

    def iter_batches(self, batch_size: Optional[int] = 65536, batch_format: str = "numpy",
                     **_) -> Iterator[Any]:
        n = self.count()
        step = batch_size or max(n, 1)
        for i in range(0, n, step):
            yield self._slice(i, i + step, batch_format)

    def map_batches(self, fn: Callable, batch_format: str = "numpy", batch_size: Optional[int] = None,
                    fn_args: tuple = (), fn_kwargs: Optional[dict] = None, **_) -> "LocalRows":
        """``fn`` applied to the rows (all at once, or ``batch_size`` rows at a time), its outputs
        (dicts of arrays, DataFrames or Arrow tables) joined into one table."""
        import pyarrow as pa

        n = self.count()
        step = batch_size if batch_size and batch_size != "default" else max(n, 1)
        outs = [fn(self._slice(i, i + step, batch_format), *fn_args, **(fn_kwargs or {}))
                for i in range(0, max(n, 1), step)]
        if all(isinstance(o, pa.Table) for o in outs):
            return LocalRows(pa.concat_tables(outs), self._files)
        parts = [o.to_pydict() if isinstance(o, pa.Table) else
                 ({c: o[c].to_numpy() for c in o.columns} if isinstance(o, pd.DataFrame) else o) for o in outs]
        if len(parts) == 1:
            return LocalRows(parts[0], self._files)
        return LocalRows({c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in parts[0]}, self._files)

    # --- helpers
    def _numpy(self) -> dict[str, np.ndarray]:
        if self._cols is None:
            frame = self._table.to_pandas()
            self._cols = {c: frame[c].to_numpy() for c in frame.columns}
            self._table = None
        return self._cols

    def _head(self, limit: int) -> pd.DataFrame:
        return pd.DataFrame({c: list(v[:limit]) if v.ndim > 1 else v[:limit] for c, v in self._cols.items()})

    def _slice(self, start: int, stop: int, batch_format: str) -> Any:
        if self._table is not None:
            part = self._table.slice(start, stop - start)
            if batch_format == "pyarrow":
                return part
            if batch_format == "pandas":
                return part.to_pandas()
            frame = part.to_pandas()
            return {c: frame[c].to_numpy() for c in frame.columns}
        cols = {c: v[start:stop] for c, v in self._cols.items()}
        if batch_format == "pandas":
            return pd.DataFrame({c: list(v) if v.ndim > 1 else v for c, v in cols.items()})
        if batch_format == "pyarrow":
            raise ValueError("LocalRows: numpy columns are not given as Arrow tables")
        return cols



class _Groups:
    """``LocalRows.groupby(key)``: ``map_groups(fn)`` applies ``fn`` to each group's rows (a
    pandas DataFrame, groups in key order) and joins the outputs."""

    def __init__(self, rows: LocalRows, key: str):
        self.rows, self.key = rows, key

    def map_groups(self, fn: Callable, batch_format: str = "pandas", **_) -> LocalRows:
        frame = self.rows._slice(0, self.rows.count(), "pandas")
        outs = [fn(part.reset_index(drop=True)) for _, part in frame.groupby(self.key, sort=True, dropna=False)]
        if not outs:
            return LocalRows({c: np.zeros(0, dtype=frame[c].dtype) for c in frame.columns}, self.rows._files)
        joined = pd.concat(outs, ignore_index=True)
        return LocalRows({c: joined[c].to_numpy() for c in joined.columns}, self.rows._files)

def read_local(path, fmt: str = "auto", row_key: bool = False, na_values: Sequence[str] = ()) -> LocalRows:
    """The rows at ``path`` read in this process (``read.read_table_here``: the readers, checks,
    missing-value markers and row keys of ``read_dataset``), as LocalRows."""
    from dlmine_ray.data.read import read_table_here, resolve_paths

    builtin = isinstance(path, str) and path.startswith("builtin:")
    files = [] if builtin else resolve_paths(path, fmt)[0]
    return LocalRows(read_table_here(path, fmt, na_values, row_key=row_key), files)
