"""One streaming pass over the rows that (1) assigns each row to train/valid/test by a seeded
hash, (2) profiles the data for the report, and (3) gathers the training split's statistics that
the preprocessing is fitted from. Validation of the data happens here, before any training."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.errors import DlmineError, failing_as

SPLIT_COL = "__split"
SPLITS = ("train", "valid", "test")
_MAX_DISTINCT = 20_000  # per block; categorical columns wider than this are not one-hot material


def split_codes(keys: np.ndarray, valid: float, test: float, seed: int) -> np.ndarray:
    """Split codes (0 train, 1 valid, 2 test) from uint64 row keys, mixed with ``seed``: the same
    key gives the same split on every run, whatever the block order or number of workers."""
    from dlmine_ray.data.keys import splitmix64

    x = splitmix64(keys.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64))
    u = (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.where(u < test, 2, np.where(u < test + valid, 1, 0)).astype(np.int8)


def assign_split(df: pd.DataFrame, key_cols: list[str], valid: float, test: float, seed: int) -> np.ndarray:
    """Split codes from a seeded hash of the values of ``key_cols`` (``data.id`` or
    ``data.group``): rows with the same key values share a split."""
    h = pd.util.hash_pandas_object(df[key_cols], index=False).to_numpy(np.uint64)
    return split_codes(h, valid, test, seed)


@dataclass
class ColumnStats:
    """Additive statistics of one column (over all rows, and over the training split)."""

    dtypes: set = field(default_factory=set)
    #: the kinds of the blocks that hold a value of the column (a wholly missing block has no kind)
    value_kinds: set = field(default_factory=set)
    n: int = 0
    nulls: int = 0
    numeric: int = 0          # values that are (or parse as) finite numbers
    nonfinite: int = 0        # +-inf
    non_numeric: int = 0      # non-null values that do not parse as numbers
    example_bad: Optional[str] = None
    vmin: float = math.inf
    vmax: float = -math.inf
    # training split only: count, mean and sum of squared deviations (merged by Chan et al.'s
    # parallel update: sum-of-squares minus squared sums cancels catastrophically far from 0)
    t_count: int = 0
    t_mean: float = 0.0
    t_m2: float = 0.0
    counts: Counter = field(default_factory=Counter)     # categorical values, training split
    all_counts: Counter = field(default_factory=Counter)  # categorical values, all rows (target)

    def merge(self, o: "ColumnStats") -> None:
        self.dtypes |= o.dtypes
        self.value_kinds |= o.value_kinds
        if o.t_count:
            n = self.t_count + o.t_count
            delta = o.t_mean - self.t_mean
            self.t_m2 += o.t_m2 + delta * delta * self.t_count * o.t_count / n
            self.t_mean += delta * o.t_count / n
        for k in ("n", "nulls", "numeric", "nonfinite", "non_numeric", "t_count"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.vmin = min(self.vmin, o.vmin)
        self.vmax = max(self.vmax, o.vmax)
        self.example_bad = self.example_bad or o.example_bad
        self.counts.update(o.counts)
        self.all_counts.update(o.all_counts)

    @property
    def t_std(self) -> float:
        """Standard deviation (population) of the training split's finite values; 0.0 if none."""
        return math.sqrt(self.t_m2 / self.t_count) if self.t_count else 0.0

    @property
    def t_flat(self) -> bool:
        """True when the training split's values do not vary (relative to their size)."""
        return self.t_std <= 1e-12 * max(1.0, abs(self.t_mean))


def _dtype_kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_numeric_dtype(s):
        return "number"
    if pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
        return "string"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return str(s.dtype)


def _column_stats(s: pd.Series, is_train: np.ndarray, categorical_target: bool) -> ColumnStats:
    st = ColumnStats()
    kind = _dtype_kind(s)
    st.dtypes.add(kind)
    st.n = len(s)
    null = s.isna().to_numpy()
    st.nulls = int(null.sum())
    if st.nulls < st.n:
        st.value_kinds.add(kind)
    if kind in ("number", "bool"):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    elif kind == "string":
        if s.map(lambda x: isinstance(x, (list, tuple, dict, np.ndarray)), na_action="ignore").any():
            st.dtypes.add("nested")
            return st
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~null & np.isnan(v)
        st.non_numeric = int(bad.sum())
        if st.non_numeric:
            st.example_bad = str(s[bad].iloc[0])[:40]
        if categorical_target or st.non_numeric:
            vals = s[~null].astype(str)
            st.all_counts.update(vals.value_counts().head(_MAX_DISTINCT).to_dict())
            st.counts.update(vals[is_train[~null]].value_counts().head(_MAX_DISTINCT).to_dict())
    else:
        return st
    finite = np.isfinite(v)
    st.numeric = int(finite.sum())
    st.nonfinite = int((np.isinf(v)).sum())
    if st.numeric:
        st.vmin = float(v[finite].min())
        st.vmax = float(v[finite].max())
        tv = v[finite & is_train]
        st.t_count = int(tv.size)
        if tv.size:
            st.t_mean = float(tv.mean())
            st.t_m2 = float(np.square(tv - st.t_mean).sum())
    if categorical_target and kind in ("number", "bool"):
        keyed = s[~null].reset_index(drop=True)
        st.all_counts.update(keyed.value_counts().to_dict())
        st.counts.update(keyed[is_train[~null]].value_counts().to_dict())
    return st


def block_stats(df: pd.DataFrame, target: str, categorical_target: bool) -> dict:
    """Statistics of one block that already carries the split column."""
    split = df[SPLIT_COL].to_numpy()
    is_train = split == 0
    out = {"rows": np.bincount(split.astype(np.int64), minlength=3).tolist(), "columns": {},
           "order": [c for c in df.columns if c != SPLIT_COL]}
    for c in out["order"]:
        out["columns"][c] = _column_stats(df[c], is_train, categorical_target and c == target)
    if target in df.columns and categorical_target:
        t = df[target]
        keyed = t.astype(str) if _dtype_kind(t) == "string" else t
        out["target_by_split"] = [keyed[split == i].value_counts().to_dict() for i in range(3)]
    return out


@dataclass
class DataProfile:
    """What the stats pass learned: row counts per split and per-column statistics."""

    rows: list[int]
    order: list[str]
    columns: dict[str, ColumnStats]
    target_by_split: list[Counter]
    #: feature columns with one value only, dropped by ``check_profile``
    dropped_constant: list[str] = field(default_factory=list)
    #: with data.id/data.group: the distinct values of that column in each split (None: KEY_CAP or more)
    distinct_keys: Optional[list[Optional[int]]] = None

    def repeated_ids(self) -> bool:
        """Whether some split holds fewer distinct split-key values than rows."""
        return self.distinct_keys is not None and any(
            k is not None and k < r for k, r in zip(self.distinct_keys, self.rows))

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def summary(self, target: str) -> dict[str, Any]:
        """A JSON-able profile for the report: rows, columns, types, missing, class balance."""
        cols = []
        for c in self.order:
            st = self.columns[c]
            kind = "numeric" if ("number" in st.dtypes or "bool" in st.dtypes) and st.non_numeric == 0 else \
                ("categorical" if "string" in st.dtypes else "/".join(sorted(st.dtypes)))
            cols.append({"column": c, "type": kind, "missing": st.nulls,
                         "min": None if not math.isfinite(st.vmin) else st.vmin,
                         "max": None if not math.isfinite(st.vmax) else st.vmax,
                         "distinct": len(st.all_counts) or len(st.counts) or None})
        balance = None
        if self.target_by_split:
            total = Counter()
            for c in self.target_by_split:
                total.update(c)
            balance = {str(k): int(v) for k, v in sorted(total.items(), key=lambda kv: str(kv[0]))}
        return {"rows": self.n_rows, "rows_train": self.rows[0], "rows_valid": self.rows[1],
                "rows_test": self.rows[2], "n_columns": len(self.order), "columns": cols,
                "target": target, "class_balance": balance, "dropped_constant": list(self.dropped_constant)}


def with_split_column(df: pd.DataFrame, key_cols: Optional[list[str]], valid: float, test: float,
                      seed: int) -> pd.DataFrame:
    """A copy of ``df`` with the split code column, without the read's ``ROW_KEY`` column.

    With ``key_cols`` (data.group, else data.id) the split hashes their values; without, it comes
    from ``ROW_KEY`` (the row's file and position), so that copies of one row are split like any
    other rows and a row's split never depends on its values (its target included)."""
    from dlmine_ray.data.keys import ROW_KEY

    if key_cols:
        codes = assign_split(df, key_cols, valid, test, seed) if len(df) else np.zeros(0, np.int8)
    elif ROW_KEY in df.columns:
        codes = split_codes(df[ROW_KEY].to_numpy(np.uint64), valid, test, seed)
    else:
        raise RuntimeError(f"rows read without their '{ROW_KEY}' column cannot be split")
    df = df.drop(columns=[ROW_KEY], errors="ignore")
    df[SPLIT_COL] = codes
    return df


#: distinct split-key values counted per split, at most (beyond it a split has "many")
KEY_CAP = 10_000


def _stats_fn(target: str, categorical_target: bool, key_cols: Optional[list[str]], valid: float, test: float, seed: int):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        reserved = SPLIT_COL in df.columns  # the split column would overwrite it
        if key_cols and not set(key_cols) <= set(df.columns):  # check_profile names the missing column
            from dlmine_ray.data.keys import ROW_KEY

            df = df.drop(columns=[ROW_KEY], errors="ignore").assign(**{SPLIT_COL: np.int8(0)})
        else:
            df = with_split_column(df, key_cols, valid, test, seed)
        stats = block_stats(df, target, categorical_target)
        if key_cols and key_cols[0] in df.columns:
            keys = df[key_cols[0]].astype(str)
            stats["keys_by_split"] = [set(keys[df[SPLIT_COL] == i].unique()[:KEY_CAP]) for i in range(3)]
        stats["reserved"] = reserved
        return pd.DataFrame({"stats": [pickle.dumps(stats)]})
    return fn


def profile_dataset(ds, target: str, categorical_target: bool, split_key: Optional[str],
                    valid: float, test: float, seed: int) -> DataProfile:
    """Run the stats pass over a Ray Dataset and merge the per-block results on the driver."""
    fn = _stats_fn(target, categorical_target, [split_key] if split_key else None, valid, test, seed)
    with failing_as("cannot read data"):
        parts = ds.map_batches(fn, batch_format="pandas", batch_size=None).take_all()
    rows = [0, 0, 0]
    order: list[str] = []
    columns: dict[str, ColumnStats] = {}
    by_split = [Counter(), Counter(), Counter()]
    keys: Optional[list[set]] = None
    for part in parts:
        b = pickle.loads(part["stats"])
        if b.get("reserved"):
            raise DlmineError(f"column '{SPLIT_COL}' is reserved (a run adds it to mark each row's split); "
                              "rename it in the data")
        if "keys_by_split" in b:
            keys = [set() for _ in range(3)] if keys is None else keys
            for mine, theirs in zip(keys, b["keys_by_split"]):
                if len(mine) < KEY_CAP:
                    mine.update(theirs)
        rows = [a + c for a, c in zip(rows, b["rows"])]
        for c in b["order"]:
            if c not in columns:
                order.append(c)
                columns[c] = ColumnStats()
            columns[c].merge(b["columns"][c])
        for i, cnt in enumerate(b.get("target_by_split", [])):
            by_split[i].update(cnt)
    distinct = None if keys is None else [len(k) if len(k) < KEY_CAP else None for k in keys]
    return DataProfile(rows, order, columns, by_split if categorical_target else [], distinct_keys=distinct)


def check_types(profile: DataProfile, columns: list[str], ds, fmt: str, na_values=()) -> None:
    """DlmineError when one of ``columns`` holds values of one kind (number, text, ...) in some
    blocks and another kind in others, naming a file of each kind (of the Ray Dataset ``ds``'s
    input files, read as ``fmt``): such a column cannot be one Arrow column (scoring concatenates
    it), nor one feature."""
    from dlmine_ray.data.read import mixed_types

    mixed = [c for c in columns if c in profile.columns and len(profile.columns[c].value_kinds) > 1]
    if mixed:
        kinds = " and ".join(sorted(profile.columns[mixed[0]].value_kinds))
        raise DlmineError(mixed_types(ds.input_files(), fmt, mixed, na_values) or
                          f"column '{mixed[0]}' holds {kinds} values in different parts of the data; give it one "
                          "type everywhere")


def check_profile(profile: DataProfile, spec, task, features: list[str]) -> list[str]:
    """Raise DlmineError for data that cannot train: empty, too few rows, a bad target or truth
    column, bad features; then run the task's own checks (``task.check_data``). Return the
    feature columns to use (constant ones dropped where the job asks)."""
    if profile.n_rows == 0:
        raise DlmineError("the dataset is empty: no rows were read")
    cols = ", ".join(profile.order[:20])
    d = spec.data
    truth = task.truth_column(spec)
    if task.target_kind is not None:
        if truth not in profile.columns:
            raise DlmineError(f"target column '{truth}' not found; columns are: {cols}")
    elif truth is not None and truth not in profile.columns:
        raise DlmineError(f"labels column '{truth}' (data.labels) not found; columns are: {cols}")
    _check_named_columns(profile, spec)
    if not features:
        what = "target" if task.target_kind is not None else "labels"
        raise DlmineError(f"no feature columns left after removing the {what}, id and ignored columns")
    if task.scores_every_row:  # every non-validation row trains
        trainable = profile.rows[0] + profile.rows[2]
        if trainable < 2 or (d.split.valid > 0 and profile.rows[1] < 1):
            raise DlmineError(f"too few rows ({profile.n_rows}) to train and validate; add data or change "
                              "data.split")
    else:
        trainable = profile.rows[0]
        need = {"train": 2, "valid": 1 if d.split.valid > 0 else 0, "test": 1}
        for i, name in enumerate(SPLITS):
            if profile.rows[i] < need[name]:
                ids = sum(k or 0 for k in profile.distinct_keys or []) if d.id and not d.group else 0
                why = (f" (data.id '{d.id}' repeats: {ids} distinct ids for {profile.n_rows} rows, and rows of one "
                       "id always share a split)") if 0 < ids < profile.n_rows else ""
                raise DlmineError(
                    f"too few rows ({profile.n_rows}) for the split: the {name} split got {profile.rows[i]} rows{why}; "
                    "add data or change data.split")
    if d.id and not d.group and profile.distinct_keys is not None:
        for i, name in enumerate(SPLITS):
            k = profile.distinct_keys[i]
            if k is not None and profile.rows[i] and k < 2 and (name != "test" or not task.scores_every_row):
                raise DlmineError(
                    f"data.id '{d.id}' repeats: the {name} split holds {profile.rows[i]} rows of only {k} distinct "
                    "id(s) (rows of one id always share a split); use a column that identifies each row, or "
                    "none")
    if task.target_kind is not None and profile.columns[truth].nulls:
        raise DlmineError(f"target column '{truth}' has {profile.columns[truth].nulls} missing (null/NaN) values")
    if task.target_kind is not None:
        task.check_data(profile, spec, trainable)
    features = _drop_constant(profile, spec, features)
    if task.target_kind is None:
        task.check_data(profile, spec, trainable)
    _check_features(profile, features)
    return features


def _check_named_columns(profile: DataProfile, spec) -> None:
    d = spec.data
    for col in [c for c in (d.id, d.group) if c] + list(d.ignore):
        if col not in profile.columns:
            raise DlmineError(f"column '{col}' (named in data.id/data.group/data.ignore) not found in the data")


def _is_constant(st: ColumnStats) -> bool:
    if st.non_numeric:  # text: one distinct value
        return len(st.counts | st.all_counts) <= 1 and st.nulls == 0
    return st.numeric > 0 and st.vmin == st.vmax and st.nulls == 0


def _drop_constant(profile: DataProfile, spec, features: list[str]) -> list[str]:
    """``features`` without the constant ones (recorded in ``profile.dropped_constant``); a
    DlmineError when none is left, or when the job refuses constant columns."""
    constant = [c for c in features if _is_constant(profile.columns[c])]
    if constant and not spec.data.drop_constant:
        c = constant[0]
        more = f" (and {len(constant) - 1} more)" if len(constant) > 1 else ""
        raise DlmineError(f"column '{c}' is constant{more}: it cannot tell rows apart; list it in data.ignore "
                          "or set data.drop_constant: true")
    if constant and len(constant) == len(features):
        raise DlmineError(f"every feature column is constant ({', '.join(constant[:5])}"
                          f"{', ...' if len(constant) > 5 else ''}): nothing to learn from")
    profile.dropped_constant = constant
    return [c for c in features if c not in constant]


def _check_features(profile: DataProfile, features: list[str]) -> None:
    for c in features:
        fs = profile.columns[c]
        if "nested" in fs.dtypes:
            raise DlmineError(f"column '{c}' holds lists or nested values; list it in data.ignore")
        if fs.dtypes - {"number", "bool", "string"}:
            raise DlmineError(f"column '{c}' has unsupported type {'/'.join(sorted(fs.dtypes))}; "
                              "convert it to a number or list it in data.ignore")
        non_null = fs.n - fs.nulls
        if fs.non_numeric and non_null and fs.numeric / non_null >= 0.9:
            raise DlmineError(f"column '{c}' is numeric but holds non-numeric value '{fs.example_bad}' "
                              f"({fs.non_numeric} such value(s))")
        if fs.nonfinite:
            raise DlmineError(f"column '{c}' has {fs.nonfinite} infinite values")
        if fs.nulls == fs.n:
            raise DlmineError(f"column '{c}' is entirely missing; list it in data.ignore")
