"""Reading datasets with Ray Data: a folder, a glob, one file or a list; Parquet, CSV or JSON;
local paths or pyarrow filesystem URIs (s3://, gs://, ...). ``builtin:NAME`` names a small
dataset that scikit-learn ships (offline). Small local input can also be read in the calling
process without Ray (``read_table_here``), with the same readers and checks."""

from __future__ import annotations

import glob
import os
from typing import Optional, Sequence, Union

import pandas as pd

from dlmine_ray.data.keys import ROW_KEY, ROW_KEY_TAKEN, is_uri, row_keys_array
from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.spec import DRIVER_MAX_MB

_EXT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json",
        ".ndjson": "json", ".csv.gz": "csv", ".json.gz": "json", ".jsonl.gz": "json"}

BUILTINS = ("digits", "diabetes", "breast_cancer", "wine", "iris", "wdbc[:SEED]", "baskets[:SEED]")


def builtin_frame(name: str):
    """Return a scikit-learn bundled dataset as a DataFrame with ``row_id``, the features and
    ``label`` (classification sets) or ``target`` (diabetes); ``baskets`` is an Arrow table."""
    from sklearn import datasets

    base, _, arg = name.partition(":")
    if base == "wdbc":
        return wdbc_frame(int(arg) if arg.isdigit() else 0)
    if base == "baskets":  # 20,000 synthetic market baskets (dlmine make-data baskets)
        from dlmine_ray.data.synthetic import make_baskets

        return make_baskets(20_000, 200, 8.0, 0, int(arg) if arg.isdigit() else 0, 0)
    loaders = {"digits": datasets.load_digits, "diabetes": datasets.load_diabetes,
               "breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
               "iris": datasets.load_iris}
    if name not in loaders:
        raise DlmineError(f"unknown builtin dataset '{name}'; choose one of {', '.join(BUILTINS)}")
    bunch = loaders[name]()
    cols = [str(c).replace(" ", "_") for c in getattr(bunch, "feature_names", [])] or \
        [f"f{i}" for i in range(bunch.data.shape[1])]
    df = pd.DataFrame(bunch.data, columns=cols)
    df.insert(0, "row_id", range(len(df)))
    df["target" if name == "diabetes" else "label"] = bunch.target
    return df


def wdbc_frame(seed: int = 0, n_anomalies: int = 10) -> pd.DataFrame:
    """An anomaly-detection set built like ODDS 'wdbc' from scikit-learn's breast cancer data:
    every benign row plus ``n_anomalies`` malignant rows drawn at random (``seed``); ``label`` is
    1 for the malignant (anomalous) rows."""
    import numpy as np
    from sklearn import datasets

    bunch = datasets.load_breast_cancer()
    df = pd.DataFrame(bunch.data, columns=[str(c).replace(" ", "_") for c in bunch.feature_names])
    malignant = np.nonzero(bunch.target == 0)[0]
    picked = np.random.default_rng(seed).choice(malignant, n_anomalies, replace=False)
    rows = np.sort(np.concatenate([np.nonzero(bunch.target == 1)[0], picked]))
    out = df.iloc[rows].reset_index(drop=True)
    out.insert(0, "row_id", rows)
    out["label"] = (bunch.target[rows] == 0).astype(np.int64)
    return out


def _format_of(path: str) -> str | None:
    low = path.lower()
    for ext in sorted(_EXT, key=len, reverse=True):
        if low.endswith(ext):
            return _EXT[ext]
    return None


def resolve_paths(path: Union[str, list[str]], fmt: str = "auto") -> tuple[list[str], str]:
    """Expand folders and globs of local paths into files; return (paths, format).

    Raises DlmineError when nothing matches or the format cannot be told."""
    items = [path] if isinstance(path, str) else list(path)
    files: list[str] = []
    for item in items:
        if is_uri(item):
            files.append(item)
            continue
        item = item[len("file://"):] if item.startswith("file://") else item
        item = os.path.expanduser(item)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, f)
                for root, _, names in os.walk(item)
                for f in names
                if not f.startswith((".", "_")) and (fmt != "auto" or _format_of(f))
            )
            if not found:
                raise DlmineError(f"data path {item} is a folder with no Parquet, CSV or JSON files")
            files.extend(found)
        elif any(ch in item for ch in "*?["):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not found:
                raise DlmineError(f"data path {item} matches no files")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise DlmineError(f"data path {item} does not exist")
    if fmt == "auto":
        kinds = {_format_of(f) for f in files}
        kinds.discard(None)
        if len(kinds) != 1:
            what = "several formats" if len(kinds) > 1 else "no known extension"
            raise DlmineError(f"cannot tell the data format ({what}); set data.format to parquet, csv or json")
        fmt = kinds.pop()
    return [os.path.abspath(f) if not is_uri(f) else f for f in files], fmt


def read_dataset(path: Union[str, list[str]], fmt: str = "auto", row_key: bool = False,
                 na_values: Sequence[str] = ()):
    """Return a lazy Ray Dataset over the rows at ``path``.

    ``row_key``: add the ``ROW_KEY`` column (see ``row_keys``) from which a run draws each row's
    split. ``na_values``: more markers of a missing value (empty CSV fields always are one)."""
    import ray.data

    na_values = [str(v) for v in na_values]
    if isinstance(path, str) and path.startswith("builtin:"):
        frame = _builtin_table(path)
        if row_key:
            frame = frame.append_column(ROW_KEY, row_keys_array(path, 0, frame.num_rows))
        ds = ray.data.from_arrow(frame)
        return _with_missing_markers(ds, na_values)
    files, fmt = resolve_paths(path, fmt)
    with failing_as(f"cannot read data at {path}"):  # pyarrow/Ray raise many types for unreadable input
        if fmt == "parquet":
            _check_parquet(files)
            ds = ray.data.read_parquet(files, override_num_blocks=_parallelism(len(files)),
                                       include_row_hash=row_key)
            if row_key:
                _check_reserved(ds)
            return _with_missing_markers(ds, na_values)
        from dlmine_ray.data.text_source import KeyedTextFiles

        return ray.data.read_datasource(KeyedTextFiles(files, fmt, row_key, na_values))


def _builtin_table(path: str):
    """The Arrow table of ``builtin:NAME``."""
    import pyarrow as pa

    frame = builtin_frame(path.split(":", 1)[1])
    return pa.Table.from_pandas(frame, preserve_index=False) if isinstance(frame, pd.DataFrame) else frame


def _check_parquet(files: list[str]) -> None:
    """Refuse local files that are not Parquet (a Parquet file starts and ends with b"PAR1"):
    Ray reads CSV given as Parquet as no rows at all."""
    for f in files:
        if is_uri(f):
            continue
        with open(f, "rb") as fh:
            head = fh.read(4)
            fh.seek(max(0, os.path.getsize(f) - 4))
            tail = fh.read(4)
        if head != b"PAR1" or tail != b"PAR1":
            raise DlmineError(f"{f} is not a Parquet file" + (" (it is empty)" if not head else "")
                              + "; set data.format to the files' format (csv, json) or auto")


def kinds_by_file(files: Sequence[str], fmt: str, column: str, na_values: Sequence[str] = ()) -> dict[str, str]:
    """For each kind of value ("number", "bool", "string", ...) that ``column`` has in some of
    ``files``, the first file (in name order) where it has that kind (files where the column is
    absent or wholly missing are left out). Reads only the schemas of Parquet files; CSV and JSON
    files are opened as a run reads them."""
    import pyarrow.fs as pfs
    import pyarrow.parquet as pq

    from dlmine_ray.data.text_source import KeyedTextFiles

    found: dict[str, str] = {}
    for f in sorted(files):
        kind = fmt if fmt != "auto" else _format_of(f)
        if kind == "parquet":
            fs, where = pfs.FileSystem.from_uri(f) if is_uri(f) else (None, f)
            schema = pq.read_schema(where, filesystem=fs)
        else:
            schema = KeyedTextFiles([f], kind, False, [str(v) for v in na_values]).file_schema(f)
        if column in schema.names:
            k = arrow_kind(schema.field(column).type)
            if k is not None:
                found.setdefault(k, f)
    return found


#: the words for kinds of value in messages
_KIND_WORDS = {"number": "numeric", "string": "text", "bool": "boolean"}


def mixed_types(files: Sequence[str], fmt: str, columns: Sequence[str], na_values: Sequence[str] = ()) -> str | None:
    """A one-line description of the first of ``columns`` whose type differs between ``files``
    ("column 'x' is text in B but numeric in A"), or None when each has one type in every file."""
    for c in columns:
        with failing_as(f"column '{c}' has values of different types"):
            where = kinds_by_file(files, fmt, c, na_values)
        if len(where) > 1:
            (k1, f1), (k2, f2) = list(where.items())[:2]
            return (f"column '{c}' is {_KIND_WORDS.get(k2, k2)} in {f2} but {_KIND_WORDS.get(k1, k1)} in {f1}; "
                    "give it one type in every file")
    return None


def arrow_kind(t) -> str | None:
    """The kind of value an Arrow type holds, in the profile's words (``profile._dtype_kind``);
    None for the null type (a column with no value)."""
    import pyarrow as pa

    if pa.types.is_null(t):
        return None
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return str(t)


def _check_reserved(ds) -> None:
    import pyarrow.parquet as pq

    first = ds.input_files()[:1]
    if first and not is_uri(first[0]) and ROW_KEY in pq.read_schema(first[0]).names:
        raise DlmineError(ROW_KEY_TAKEN)


def _with_missing_markers(ds, na_values: list[str]):
    """``ds`` with every value equal to one of ``na_values`` made null (text columns compare the
    text, numeric columns the number), for data whose reader has no null markers of its own."""
    if not na_values:
        return ds
    return ds.map_batches(_marker(na_values), batch_format="pyarrow", batch_size=None)


def _marker(na_values: list[str]):
    """A function of an Arrow table that makes every value equal to one of ``na_values`` null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = []
    for v in na_values:
        try:
            numbers.append(float(v))
        except ValueError:
            pass

    def mark(table: pa.Table) -> pa.Table:
        cols = []
        for name, column in zip(table.column_names, table.columns):
            t = column.type
            hit = None
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                hit = pc.is_in(column, value_set=pa.array(na_values, type=t))
            elif (pa.types.is_integer(t) or pa.types.is_floating(t)) and numbers and name != ROW_KEY:
                hit = pc.is_in(pc.cast(column, pa.float64()), value_set=pa.array(numbers, pa.float64()))
            cols.append(column if hit is None else pc.if_else(hit, pa.scalar(None, t), column))
        return pa.table(cols, names=table.column_names)

    return mark


#: local input of at most this many bytes (files on disk) is read in this process, without Ray:
#: ``dlmine predict``'s default, the same as ``scaling.driver_max_mb``'s (``spec.DRIVER_MAX_MB``).
#: The driver holds about 7x a float table's Parquet size, and about 17x for baskets (10M: 3.4 GiB)
SMALL_INPUT_BYTES = int(DRIVER_MAX_MB * 2**20)


def local_input_bytes(path: Union[str, list[str]], fmt: str = "auto") -> Optional[int]:
    """The total size of the files at ``path`` when all are local (0 for a builtin dataset), or
    None when some are in object storage. DlmineError as ``resolve_paths``."""
    if isinstance(path, str) and path.startswith("builtin:"):
        return 0
    files, _ = resolve_paths(path, fmt)
    if any(is_uri(f) for f in files):
        return None
    return sum(os.path.getsize(f) for f in files)


def read_table_here(path: Union[str, list[str]], fmt: str = "auto", na_values: Sequence[str] = (),
                    row_key: bool = False):
    """The rows at ``path`` as one Arrow table read in this process, without Ray: for small input
    (``SMALL_INPUT_BYTES``). The same readers and checks as ``read_dataset`` (CSV and JSON through
    ``KeyedTextFiles``, Parquet checked to be Parquet, the same missing-value markers, the same
    ``ROW_KEY`` of each row with ``row_key``), so the rows, their splits and the one-line errors
    are those a read through Ray Data gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    na_values = [str(v) for v in na_values]
    if isinstance(path, str) and path.startswith("builtin:"):
        table = _builtin_table(path)
        if row_key:
            table = table.append_column(ROW_KEY, row_keys_array(path, 0, table.num_rows))
        return _marker(na_values)(table) if na_values else table
    files, fmt = resolve_paths(path, fmt)
    with failing_as("cannot read data"):
        if fmt == "parquet":
            _check_parquet(files)
            parts = [pq.read_table(f) for f in files]
            if row_key:
                if parts and ROW_KEY in parts[0].column_names:
                    raise DlmineError(ROW_KEY_TAKEN)
                parts = [t.append_column(ROW_KEY, row_keys_array(f, 0, t.num_rows)) for f, t in zip(files, parts)]
        else:
            from dlmine_ray.data.text_source import KeyedTextFiles

            source = KeyedTextFiles(files, fmt, row_key, na_values)
            parts = [t for f in files for t in source._read_file(f)]
    if not parts:
        raise DlmineError("the dataset is empty: no rows were read")
    try:
        table = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowException, ValueError):  # a column of another type in another file
        raise DlmineError(mixed_types(files, fmt, parts[0].column_names, na_values)
                          or "cannot read data: the files' columns do not agree") from None
    if fmt == "parquet" and na_values:
        table = _marker(na_values)(table)
    return table


def _parallelism(n_files: int) -> int:
    """Blocks for a Parquet read: about twice the cluster's CPUs (never more than the files
    allow splitting into), so that every core works and blocks stay large."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 2
    return max(1, min(2 * cpus, max(n_files, 2 * cpus)))


def dataset_columns(ds) -> tuple[list[str], dict]:
    """The column names and types of a Ray Dataset; DlmineError when it cannot be read or is empty."""
    with failing_as("cannot read data"):
        schema = ds.schema()
    if schema is None:
        raise DlmineError("the dataset is empty: no rows were read")
    names = list(schema.names)
    return names, dict(zip(names, schema.types))
