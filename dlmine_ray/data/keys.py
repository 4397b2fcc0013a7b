"""What reading needs below the reader itself: the row keys that decide each row's split (a hash
of the row's file and position), the missing-value markers of text files, and which paths are URIs."""

from __future__ import annotations


def is_uri(p: str) -> bool:
    """True for a filesystem URI (s3://, gs://, ...) that pyarrow resolves; file:// is local."""
    return "://" in p and not p.startswith("file://")


#: the synthetic column of a run's read: a hash of the row's file and its position in that file
ROW_KEY = "row_hash"
#: the one line that refuses data with a column of that name
ROW_KEY_TAKEN = f"column '{ROW_KEY}' is reserved (a run adds it to key each row's split); rename it in the data"
#: CSV fields read as missing, as pandas reads them (pyarrow's defaults lack '' for text columns)
CSV_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
          "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def row_keys(source: str, start: int, n: int):
    """uint64 keys of rows ``start..start+n`` of ``source`` (a file path): the same mixing of a
    hash of the path plus the position as Ray's ``read_parquet(include_row_hash=True)``, so a
    row's key depends on where it is stored and never on its values, the block or the worker."""
    import hashlib

    import numpy as np

    seed = np.uint64(int.from_bytes(hashlib.md5(source.encode("utf-8")).digest()[:8], "little"))
    with np.errstate(over="ignore"):
        return splitmix64(seed + np.arange(start, start + n, dtype=np.uint64))


def splitmix64(x):
    """The splitmix64 finaliser of a uint64 array (a bijection that spreads nearby keys)."""
    import numpy as np

    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_keys_array(source: str, start: int, n: int):
    """``row_keys`` as a pyarrow array."""
    import pyarrow as pa

    return pa.array(row_keys(source, start, n))
