"""What a dataset looks like, for choosing models from past runs: its fingerprint (which dataset
it is) and its meta-features (what kind of dataset it is).

- The fingerprint hashes the schema, the row count and a content sketch taken from the profile
  pass (per column: missing count, range, training mean, most frequent values), so the same
  files give the same fingerprint on every run, and an edited table another.
- Meta-features come from the profile (simple: rows, columns, numeric and categorical shares,
  classes, class entropy and imbalance, missing share) and from a bounded sample of encoded
  training rows (statistical: skewness, kurtosis, correlations, effective dimension by PCA;
  information-theoretic: mutual information with the target; landmarkers: cross-validated
  scores of a decision stump, naive Bayes, 1-nearest-neighbour and a linear model). At most
  ``SAMPLE_ROWS`` rows and ``SAMPLE_COLUMNS`` encoded columns are used, whatever the table's
  size, so the cost is bounded; every random choice is seeded, so the values are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any, Optional

import numpy as np

#: the most encoded training rows and columns the sample-based meta-features see
SAMPLE_ROWS = 2000
SAMPLE_COLUMNS = 64
#: the rows the landmarkers' cross-validation sees (of the sample)
LANDMARK_ROWS = 1000


def fingerprint(profile, features: list[str], truth: Optional[str]) -> dict[str, Any]:
    """The dataset's identity: {"fingerprint", "n_rows", "n_columns", "schema", "sketch"} from the
    profile pass (no extra read)."""
    schema = {c: sorted(profile.columns[c].dtypes) for c in profile.order}
    sketch = {}
    for c in profile.order:
        st = profile.columns[c]
        top = sorted(st.all_counts.items() or st.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:5]
        sketch[c] = [st.nulls, _round(st.vmin), _round(st.vmax), _round(st.t_mean), [[str(k), v] for k, v in top]]
    doc = json.dumps({"schema": schema, "rows": profile.n_rows, "sketch": sketch, "truth": truth}, sort_keys=True)
    return {"fingerprint": hashlib.sha256(doc.encode()).hexdigest()[:32], "n_rows": int(profile.n_rows),
            "n_columns": len(profile.order), "schema": schema,
            "sketch": hashlib.sha256(json.dumps(sketch, sort_keys=True).encode()).hexdigest()[:16]}


def _round(v: float) -> Optional[float]:
    return float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else None


def simple_features(profile, features: list[str], truth: Optional[str], categorical_truth: bool) -> dict[str, float]:
    """Meta-features from the profile alone."""
    cols = [profile.columns[c] for c in features]
    n_cat = sum(1 for st in cols if st.non_numeric > 0)
    cells = sum(st.n for st in cols)
    out = {"n_rows": float(profile.n_rows), "log_rows": math.log10(max(profile.n_rows, 1)),
           "n_features": float(len(features)), "log_features": math.log10(max(len(features), 1)),
           "numeric_share": (len(cols) - n_cat) / max(len(cols), 1), "categorical_share": n_cat / max(len(cols), 1),
           "missing_share": sum(st.nulls for st in cols) / max(cells, 1),
           "rows_per_feature": math.log10(max(profile.n_rows, 1) / max(len(features), 1))}
    if truth is not None and categorical_truth:
        counts = np.asarray([v for v in profile.columns[truth].all_counts.values()], dtype=np.float64)
        p = counts / max(counts.sum(), 1.0)
        entropy = float(-(p * np.log2(np.clip(p, 1e-300, 1))).sum())
        out.update({"n_classes": float(len(counts)),
                    "class_entropy": entropy / math.log2(len(counts)) if len(counts) > 1 else 0.0,
                    "imbalance": float(counts.min() / counts.max()) if len(counts) and counts.max() > 0 else 1.0})
    return out


def sample_features(x: np.ndarray, y: Optional[np.ndarray], target_kind: Optional[str], seed: int) -> dict[str, float]:
    """Meta-features from a sample of encoded rows ``x`` (and their encoded target ``y``):
    statistical, information-theoretic and landmarkers; at most SAMPLE_ROWS x SAMPLE_COLUMNS."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    if len(x) > SAMPLE_ROWS:
        pick = np.sort(rng.choice(len(x), SAMPLE_ROWS, replace=False))
        x, y = x[pick], (y[pick] if y is not None else None)
    if x.shape[1] > SAMPLE_COLUMNS:
        x = x[:, np.sort(rng.choice(x.shape[1], SAMPLE_COLUMNS, replace=False))]
    out: dict[str, float] = {"sample_rows": float(len(x)), "sample_columns": float(x.shape[1])}
    if len(x) < 10 or x.shape[1] == 0:
        return out
    out.update(_statistical(x))
    if y is not None and target_kind is not None:
        out.update(_informational(x, y, target_kind, seed))
        out.update(_landmarkers(x, y, target_kind, seed))
    return out


def _statistical(x: np.ndarray) -> dict[str, float]:
    from scipy import stats

    varying = x[:, x.std(axis=0) > 1e-12]
    if varying.shape[1] == 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skew = np.abs(stats.skew(varying, axis=0))
        kurt = stats.kurtosis(varying, axis=0)
        corr = np.corrcoef(varying, rowvar=False) if varying.shape[1] > 1 else np.ones((1, 1))
    off = np.abs(corr[np.triu_indices_from(corr, k=1)]) if varying.shape[1] > 1 else np.zeros(1)
    centred = (varying - varying.mean(axis=0)) / varying.std(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False) ** 2
    share = np.cumsum(sv) / max(sv.sum(), 1e-12)
    return {"skew_mean": float(np.nanmean(skew)), "skew_max": float(np.nanmax(skew)),
            "kurtosis_mean": float(np.nanmean(kurt)), "corr_abs_mean": float(np.nanmean(off)),
            "corr_abs_max": float(np.nanmax(off)),
            "pca_dim_95": float((np.searchsorted(share, 0.95) + 1) / varying.shape[1])}


def _informational(x: np.ndarray, y: np.ndarray, target_kind: str, seed: int) -> dict[str, float]:
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    fn = mutual_info_classif if target_kind == "categorical" else mutual_info_regression
    mi = fn(x, y, random_state=seed)
    return {"mutual_info_mean": float(np.mean(mi)), "mutual_info_max": float(np.max(mi))}


def _landmarkers(x: np.ndarray, y: np.ndarray, target_kind: str, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    x, y = x[:LANDMARK_ROWS], y[:LANDMARK_ROWS]
    if target_kind == "categorical":
        _, counts = np.unique(y, return_counts=True)
        folds = int(min(5, counts.min())) if len(counts) > 1 else 0
        if folds < 2:
            return {}
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        models = {"stump": DecisionTreeClassifier(max_depth=1, random_state=seed), "naive_bayes": GaussianNB(),
                  "nn1": KNeighborsClassifier(1), "linear": LogisticRegression(max_iter=200)}
        scoring = "accuracy"
    else:
        cv = KFold(min(5, len(y)), shuffle=True, random_state=seed)
        models = {"stump": DecisionTreeRegressor(max_depth=1, random_state=seed), "nn1": KNeighborsRegressor(1),
                  "linear": Ridge()}
        scoring = "r2"
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in models.items():
            out[f"landmark_{name}"] = float(np.mean(cross_val_score(model, x, y, cv=cv, scoring=scoring)))
    return out


def describe_rows(profile, features: list[str], truth: Optional[str], categorical_truth: bool, x: np.ndarray,
                  y: Optional[np.ndarray], target_kind: Optional[str], seed: int, name: str) -> dict[str, Any]:
    """A table's record for the knowledge base: its fingerprint and its meta-features."""
    out = fingerprint(profile, features, truth)
    meta = simple_features(profile, features, truth, categorical_truth)
    meta.update(sample_features(x, y, target_kind, seed))
    return {**out, "name": name, "meta_features": meta}


def describe_baskets(n: int, counts: dict, name: str) -> dict[str, Any]:
    """A transaction dataset's record for the knowledge base, from its item counts."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:50]
    total = float(sum(counts.values()))
    doc = json.dumps({"n": n, "items": len(counts), "top": top, "total": total}, sort_keys=True, default=str)
    freq = np.asarray(sorted(counts.values(), reverse=True), dtype=np.float64) / max(n, 1)
    meta = {"n_rows": float(n), "log_rows": math.log10(max(n, 1)), "n_items": float(len(counts)),
            "log_items": math.log10(max(len(counts), 1)), "mean_basket": total / max(n, 1),
            "density": total / max(n, 1) / max(len(counts), 1),
            "top_item_support": float(freq[0]) if len(freq) else 0.0,
            "median_item_support": float(np.median(freq)) if len(freq) else 0.0}
    return {"fingerprint": hashlib.sha256(doc.encode()).hexdigest()[:32], "n_rows": int(n),
            "n_columns": len(counts), "schema": {"items": ["list"]}, "sketch": None, "name": name,
            "meta_features": meta}
