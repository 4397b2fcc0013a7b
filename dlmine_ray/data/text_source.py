"""A Ray Data source for CSV and newline-delimited JSON that knows each row's position in its
file, so that a run can key the row's split on (file, position) as Ray's Parquet reader does with
``include_row_hash``; Ray's own CSV and JSON readers do not expose the position."""

from __future__ import annotations

import os
from typing import Optional

from ray.data import Datasource

from dlmine_ray.data.keys import CSV_NA, ROW_KEY, ROW_KEY_TAKEN, is_uri, row_keys_array


class KeyedTextFiles(Datasource):
    """CSV or newline-delimited JSON files, one read task per file, read in order with pyarrow so
    that each row's position in its file is known (for ``ROW_KEY``). CSV fields equal to one of
    ``CSV_NA`` or ``na_values`` are missing, in text columns too."""

    def __init__(self, files: list[str], fmt: str, row_key: bool, na_values: list[str]):
        self.files, self.fmt, self.row_key = list(files), fmt, row_key
        self.na_values = CSV_NA + [v for v in na_values if v not in CSV_NA]

    def estimate_inmemory_data_size(self) -> Optional[int]:
        """The files' total size in bytes, where it can be told cheaply (local files)."""
        if any(is_uri(f) for f in self.files):
            return None
        return sum(os.path.getsize(f) for f in self.files)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context=None) -> list:
        """One ReadTask per file."""
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        tasks = []
        for f in self.files:
            size = None if is_uri(f) else os.path.getsize(f)
            meta = BlockMetadata(num_rows=None, size_bytes=size, exec_stats=None, input_files=(f,))
            tasks.append(ReadTask(lambda f=f: self._read_file(f), meta, per_task_row_limit=per_task_row_limit))
        return tasks

    def _read_file(self, path: str):
        import pyarrow as pa

        offset = 0
        try:
            with _open(path) as stream:
                if self.fmt == "csv":
                    reader = self._csv_reader(stream)
                    parts = (pa.Table.from_batches([b]) for b in reader)
                else:
                    parts = [_read_json(stream.read())]
                for table in parts:
                    if self.row_key and ROW_KEY in table.column_names:
                        raise ValueError(ROW_KEY_TAKEN)
                    if self.row_key:
                        table = table.append_column(ROW_KEY, row_keys_array(path, offset, table.num_rows))
                    offset += table.num_rows
                    yield table
        except (pa.ArrowException, ValueError, OSError) as err:
            # one line that names the file (Ray Data keeps only the text of an error raised here)
            what = "an empty file" if "Empty CSV file" in str(err) else " ".join(str(err).split())[:240]
            raise ValueError(f"cannot read {path} as {self.fmt.upper()}: {what}") from None

    def _csv_reader(self, stream):
        """A pyarrow streaming CSV reader over ``stream`` (column types inferred from its first
        block); ValueError when the header names a column twice."""
        import pyarrow.csv as pcsv

        conv = pcsv.ConvertOptions(null_values=self.na_values, strings_can_be_null=True)
        # parsed serially: a malformed row's error then names its row number (pyarrow's threaded
        # parser does not know it); Ray's workers parse serially anyway
        reader = pcsv.open_csv(stream, convert_options=conv,
                               read_options=pcsv.ReadOptions(block_size=16 << 20, use_threads=False))
        twice = sorted({n for n in reader.schema.names if reader.schema.names.count(n) > 1})
        if twice:
            raise ValueError(f"the header names column(s) {', '.join(map(repr, twice))} more than once")
        return reader

    def file_schema(self, path: str):
        """The Arrow schema that reading ``path`` gives its rows (CSV: the types inferred from the
        file's first block, as the read does)."""
        with _open(path) as stream:
            return self._csv_reader(stream).schema if self.fmt == "csv" else _read_json(stream.read()).schema


def _open(path: str):
    """An input stream over a local path or a pyarrow filesystem URI (decompressed by the file's
    extension: .gz...)."""
    import pyarrow.fs as pfs

    fs, where = pfs.FileSystem.from_uri(path) if is_uri(path) else (pfs.LocalFileSystem(), path)
    return fs.open_input_stream(where)


def _read_json(data: bytes):
    """A table from newline-delimited JSON, or from one JSON array of records (as Ray's reader
    accepts both); ValueError saying which of the two the text failed to be."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pjson

    if data.lstrip()[:1] == b"[":
        try:
            return pa.Table.from_pandas(pd.read_json(io.BytesIO(data), orient="records"), preserve_index=False)
        except ValueError as err:
            raise ValueError(f"not a JSON array of records: {err}") from None
    try:
        return pjson.read_json(io.BytesIO(data))
    except pa.ArrowInvalid as err:
        raise ValueError(f"not JSON lines (one JSON object per line): {err}") from None
