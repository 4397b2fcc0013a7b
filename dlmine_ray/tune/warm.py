"""Warm starts, as auto-sklearn's meta-learning does: the first trials of a search are the best
settings found before, on this dataset (its own history continues) and on the past datasets
nearest to it in meta-feature space; the rest of the search samples the space as usual."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np
import pandas as pd

#: how many nearest past datasets give their best settings
NEIGHBOURS = 5


def allowed(domain: Any, value: Any) -> bool:
    """Whether ``value`` lies in a search-space entry (a list of choices or a range)."""
    if isinstance(domain, dict) and len(domain) == 1:
        kind, args = next(iter(domain.items()))
        if kind == "choice":
            domain = args
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        elif kind == "randint":
            return float(value).is_integer() and args[0] <= value < args[1]
        else:
            return args[0] <= value <= args[1]
    if isinstance(domain, list):
        text = json.dumps(value, sort_keys=True)
        return any(json.dumps(c, sort_keys=True) == text for c in domain)
    return False


def _in_space(params: dict, space: dict) -> dict:
    """The settings of ``params`` that the space has and allows."""
    return {k: v for k, v in params.items() if k in space and allowed(space[k], v)}


def _distances(meta: dict, others: dict[str, dict]) -> dict[str, float]:
    """Euclidean distances from ``meta`` to each of ``others`` over the finite meta-features they
    share, each standardised by its spread over all of them (so that row counts do not swamp
    shares); a dataset sharing none is left out."""
    keys = sorted(k for k, v in meta.items() if isinstance(v, (int, float)) and math.isfinite(v))
    table = pd.DataFrame({fp: {k: m.get(k) for k in keys} for fp, m in others.items()}).T.astype(float)
    if table.empty:
        return {}
    allv = pd.concat([table, pd.DataFrame([{k: meta[k] for k in keys}])])
    scale = allv.std(ddof=0).replace(0.0, np.nan)
    z = (table - pd.Series({k: meta[k] for k in keys})) / scale
    d = np.sqrt((z ** 2).mean(axis=1, skipna=True))
    return {fp: float(v) for fp, v in d.items() if np.isfinite(v)}


def warm_points(kb, task: str, dataset: dict, space: dict, metric: str, mode: str, limit: int,
                portfolio: Optional[dict] = None) -> tuple[list[dict], list[str]]:
    """Up to ``limit`` settings to try first, best first: this dataset's own best trials, then the
    best trial of each of the nearest past datasets; only trials of ``task`` ranked by ``metric``
    count. When the knowledge base gives none, the portfolio's settings (``portfolio``: a
    portfolio document; default the shipped one, tune/portfolio.py). Returns (settings, notes
    saying where they came from)."""
    if limit <= 0:
        return [], []
    trials = kb.trials(task) if kb is not None else pd.DataFrame()
    if trials.empty:
        return _from_portfolio(task, metric, space, limit, portfolio)
    trials = trials[(trials["selection_metric"] == metric) & trials["value"].notna()].copy()
    trials["score"] = trials["value"] if mode == "min" else -trials["value"]
    trials = trials.sort_values("score", kind="stable")
    fp = dataset["fingerprint"]
    points: list[dict] = []
    seen: set[str] = set()

    def add(params: dict, cap: int) -> bool:
        p = _in_space(params, space)
        key = json.dumps(p, sort_keys=True)
        if p and key not in seen and len(points) < cap:
            seen.add(key)
            points.append(p)
            return True
        return False

    # the dataset's own best settings take at most half the places, its neighbours' the rest
    own_cap = max(1, math.ceil(limit / 2))
    own = sum(add(p, own_cap) for p in trials.loc[trials["fingerprint"] == fp, "params"])
    notes = [f"warm start: {own} setting(s) from this dataset's own past runs"] if own else []
    datasets = kb.datasets()
    others = {r.fingerprint: r.meta_features or {} for r in datasets.itertuples()
              if r.fingerprint != fp and r.fingerprint in set(trials["fingerprint"])}
    near = sorted(_distances(dataset.get("meta_features") or {}, others).items(), key=lambda kv: kv[1])
    names = dict(zip(datasets["fingerprint"], datasets["name"])) if len(datasets) else {}
    used = []
    for other, dist in near[:NEIGHBOURS]:
        for params in trials.loc[trials["fingerprint"] == other, "params"]:
            if add(params, limit):
                used.append(f"{names.get(other) or other[:8]} (distance {dist:.2f})")
                break
    if used:
        notes.append(f"warm start: the best setting of {len(used)} nearest past dataset(s): {', '.join(used)}")
    if not points:
        return _from_portfolio(task, metric, space, limit, portfolio)
    return points, notes


def _from_portfolio(task: str, metric: str, space: dict, limit: int, doc: Optional[dict]
                    ) -> tuple[list[dict], list[str]]:
    """Up to ``limit`` of the portfolio's settings that ``space`` allows (cut to its keys)."""
    from dlmine_ray.tune.portfolio import settings

    learnt, n_datasets = settings(task, metric, doc)
    points: list[dict] = []
    for params in learnt:
        p = _in_space(params, space)
        if p and p not in points:
            points.append(p)
        if len(points) >= limit:
            break
    if not points:
        return [], []
    return points, [f"warm start: {len(points)} setting(s) from the portfolio learned offline on {n_datasets} "
                    "datasets (the knowledge base has no past run of this task to start from)"]


def untuned_trial(spec, space: dict, value: Optional[float]) -> dict:
    """An untuned run as one trial of the knowledge base: its job's values of the space's fields."""
    params = {key: spec.field_value(key) for key in space}
    return {"trial": "untuned", "status": "completed", "params": params, "value": value}
