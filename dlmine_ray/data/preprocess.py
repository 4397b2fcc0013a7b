"""Preprocessing fitted on the training split only: mean imputation and standard scaling of
numeric columns, one-hot encoding of categorical ones (missing and unseen values encode as all
zeros), and target encoding (class index, or a standardised value).

Why not Ray's preprocessors: a Chain of SimpleImputer, StandardScaler, OneHotEncoder and
Concatenator runs one aggregation job per step (measured here: 6-8 s each on a 4-row dataset),
while these statistics come out of the single stats pass that also splits and profiles the data
(see ``profile.py``). The fitted state is plain JSON, saved next to the model weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.data.profile import DataProfile
from dlmine_ray.errors import DlmineError


class TabularPreprocessor:
    """Turns raw rows into a float32 ``features`` matrix and an encoded ``target``.

    Learned state (set by ``from_profile`` / ``load``): ``numeric_`` (column, mean, std),
    ``categorical_`` (column, categories), ``target_info_``, and ``augment_`` (an
    ``augment.Augmenter`` whose mined columns follow the encoded ones, or None).
    """

    def __init__(self, target: Optional[str], target_kind: str, id_col: Optional[str] = None):
        self.target = target
        self.target_kind = target_kind
        self.id_col = id_col
        self.numeric_: list[tuple[str, float, float]] = []
        self.categorical_: list[tuple[str, list[str]]] = []
        self.target_info_: dict[str, Any] = {}
        self.augment_ = None
        #: the augmenter's kinds a loaded preprocessing was saved with (infer.py attaches it)
        self.augment_kinds_: list[str] = []

    # -- fitting -----------------------------------------------------------------------------
    @classmethod
    def from_profile(cls, profile: DataProfile, features: list[str], target: str, target_kind: str,
                     id_col: Optional[str], max_categories: int) -> "TabularPreprocessor":
        """Fit from the training-split statistics of the stats pass."""
        self = cls(target, target_kind, id_col)
        for c in features:
            st = profile.columns[c]
            non_null = st.n - st.nulls
            numeric = st.non_numeric == 0 or (non_null and st.numeric / non_null >= 0.9)
            if numeric:
                std = 1.0 if st.t_flat else st.t_std
                self.numeric_.append((c, float(st.t_mean), float(std)))
            else:
                cats = [k for k, _ in sorted(st.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))][:max_categories]
                self.categorical_.append((c, [str(k) for k in cats]))
        if target_kind is None:  # unsupervised tasks: no target to encode
            return self
        tst = profile.columns[target]
        if target_kind == "categorical":
            classes = sorted(tst.all_counts.keys(), key=lambda v: (str(type(v)), v))
            self.target_info_ = {"classes": [_plain(c) for c in classes]}
        else:
            self.target_info_ = {"target_mean": float(tst.t_mean), "target_std": float(tst.t_std or 1.0)}
        return self

    # -- layout ------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of the ``features`` matrix, in order."""
        names = [c for c, _, _ in self.numeric_]
        for c, cats in self.categorical_:
            names.extend(f"{c}={v}" for v in cats)
        return names + (list(self.augment_.names_) if self.augment_ is not None else [])

    @property
    def feature_columns(self) -> list[str]:
        """The raw column of each column of the ``features`` matrix (a one-hot group's is one)."""
        # an augmented column is its own feature
        return ([c for c, _, _ in self.numeric_] + [c for c, cats in self.categorical_ for _ in cats]
                + (list(self.augment_.names_) if self.augment_ is not None else []))

    @property
    def n_encoded(self) -> int:
        """Columns of the encoding alone (before the augmented ones)."""
        return len(self.numeric_) + sum(len(c) for _, c in self.categorical_)

    @property
    def n_features(self) -> int:
        """Columns of the ``features`` matrix: the encoded ones and the augmented ones."""
        return self.n_encoded + (len(self.augment_.names_) if self.augment_ is not None else 0)

    @property
    def input_columns(self) -> list[str]:
        """The raw columns a row must have to be scored."""
        return [c for c, _, _ in self.numeric_] + [c for c, _ in self.categorical_]

    # -- transforming ------------------------------------------------------------------------
    def transform_features(self, df: pd.DataFrame) -> np.ndarray:
        """Return the (rows, n_features) float32 matrix for a pandas batch: the encoded columns,
        then the augmented ones computed from them."""
        if self.augment_kinds_ and self.augment_ is None:
            raise DlmineError(f"the saved preprocessing adds mined features ({', '.join(self.augment_kinds_)}) "
                              "that were not loaded with it")
        out = self._encode_features(df)
        return out if self.augment_ is None else self.augment_.extend(out)

    def _encode_features(self, df: pd.DataFrame) -> np.ndarray:
        n = len(df)
        out = np.zeros((n, self.n_encoded), dtype=np.float32)
        j = 0
        for c, mean, std in self.numeric_:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            v = np.where(np.isfinite(v), v, mean)
            out[:, j] = (v - mean) / std
            j += 1
        for c, cats in self.categorical_:
            # get_indexer: -1 for missing and unseen values, which then encode as all zeros
            values = df[c].astype(str).where(df[c].notna(), None)
            codes = pd.Index(cats, dtype=object).get_indexer(values.to_numpy(dtype=object))
            rows = np.nonzero(codes >= 0)[0]
            out[rows, j + codes[rows]] = 1.0
            j += len(cats)
        return out

    def transform_target(self, s: pd.Series) -> np.ndarray:
        """Encode a target column: class index (int64) or standardised value (float32)."""
        if self.target_kind == "categorical":
            classes = self.target_info_["classes"]
            values = s.astype(str) if all(isinstance(c, str) for c in classes) else s
            return pd.Index(classes).get_indexer(values.to_numpy()).astype(np.int64)
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        return ((v - self.target_info_["target_mean"]) / self.target_info_["target_std"]).astype(np.float32)

    def transform_batch(self, df: pd.DataFrame, with_target: bool = True, keep: tuple[str, ...] = ()) -> dict:
        """Return ``{"features": ..., "target": ..., <kept columns>}`` for map_batches."""
        out: dict[str, Any] = {"features": self.transform_features(df)}
        if with_target and self.target_kind is None:  # the loop's dummy target, 1 byte a row
            out["target"] = np.zeros(len(df), dtype=np.int8)
        elif with_target:
            out["target"] = self.transform_target(df[self.target])
        for c in keep:
            if c in df.columns:
                out[c] = df[c].to_numpy()
        return out

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"target": self.target, "target_kind": self.target_kind, "id_col": self.id_col,
                "numeric": [list(t) for t in self.numeric_], "categorical": [list(t) for t in self.categorical_],
                "target_info": self.target_info_,
                "augment": self.augment_.kinds if self.augment_ is not None else self.augment_kinds_}

    @classmethod
    def from_dict(cls, d: dict) -> "TabularPreprocessor":
        self = cls(d["target"], d["target_kind"], d.get("id_col"))
        self.numeric_ = [(c, float(m), float(s)) for c, m, s in d["numeric"]]
        self.categorical_ = [(c, list(v)) for c, v in d["categorical"]]
        self.target_info_ = d["target_info"]
        self.augment_kinds_ = list(d.get("augment") or [])
        return self

    def save(self, path: Path) -> None:
        """Write the JSON at ``path``, and the augmenter's files (if any) beside it."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))
        if self.augment_ is not None:
            self.augment_.save(Path(path).parent)

    @classmethod
    def load(cls, path: Path) -> "TabularPreprocessor":
        """The preprocessor saved at ``path``; one saved with an augmenter lists its kinds in
        ``augment_kinds_`` and transforms nothing until it is attached (``infer.py`` does)."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
