"""A zero-shot portfolio, as FLAML's are: settings learned offline from many datasets, tried first
by a search whose knowledge base has nothing to start from yet.

Learning (``learn``): every dataset was searched over the same settings (the same seeded random
draws of the same space), so each setting has a validation value on every dataset. Per dataset
the values become regrets in [0, 1] (0: the best setting there, 1: the worst). The portfolio is
built greedily: first the setting with the lowest mean regret, then each time the one that
lowers most the mean over datasets of the best regret in the portfolio so far. The shipped file
(``portfolio.json`` beside this module) was learned by ``benchmarks/bench_model_selection.py
--portfolio-out`` on the corpus; its ``learnt_from`` says on what."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.errors import DlmineError

SHIPPED = Path(__file__).with_name("portfolio.json")


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def regret_matrix(trials: pd.DataFrame, mode: str, min_datasets: int = 2) -> pd.DataFrame:
    """Datasets x settings: each setting's regret on each dataset (NaN where it was not tried).
    ``trials`` has columns fingerprint, params (dict), value. Settings tried on fewer than
    ``min_datasets`` datasets are left out (they cannot be compared across datasets)."""
    t = trials[trials["value"].notna()].copy()
    if t.empty:
        return pd.DataFrame()
    t["setting"] = t["params"].map(_key)
    t["score"] = t["value"] if mode == "min" else -t["value"]
    table = t.pivot_table(index="fingerprint", columns="setting", values="score", aggfunc="min")
    table = table.loc[:, table.notna().sum() >= min(min_datasets, len(table))]
    lo, span = table.min(axis=1), table.max(axis=1) - table.min(axis=1)
    regret = table.sub(lo, axis=0).div(span.where(span > 0, 1.0), axis=0)  # all equal: every regret 0
    return regret


def learn(trials: pd.DataFrame, mode: str, size: int = 8) -> list[dict]:
    """Up to ``size`` settings, in the greedy order described above."""
    regret = regret_matrix(trials, mode)
    if regret.empty:
        return []
    r = regret.to_numpy(dtype=np.float64)
    r = np.where(np.isnan(r), 1.0, r)  # a setting not tried on a dataset is counted as its worst
    chosen: list[int] = []
    best = np.ones(r.shape[0])
    for _ in range(min(size, r.shape[1])):
        gain = np.minimum(best[:, None], r).mean(axis=0)
        gain[chosen] = np.inf
        j = int(np.argmin(gain))
        chosen.append(j)
        best = np.minimum(best, r[:, j])
    return [json.loads(regret.columns[j]) for j in chosen]


def learn_all(kb, tasks: list[str], metric_of: dict[str, tuple[str, str]], size: int = 8,
              learnt_from: Optional[dict] = None) -> dict[str, Any]:
    """The portfolio document of every task in ``tasks`` from a knowledge base's trials
    (``metric_of``: task -> (selection metric, mode))."""
    doc: dict[str, Any] = {"learnt_from": learnt_from or {}, "tasks": {}}
    for task in tasks:
        metric, mode = metric_of[task]
        trials = kb.trials(task)
        if trials.empty:
            continue
        trials = trials[trials["selection_metric"] == metric]
        doc["tasks"][task] = {"metric": metric, "mode": mode, "datasets": int(trials["fingerprint"].nunique()),
                              "settings": learn(trials, mode, size)}
    return doc


def load(path: Optional[Path] = None) -> dict[str, Any]:
    """The portfolio document: ``path``, else $DLMINE_PORTFOLIO (a file, or ``off`` for none),
    else the shipped one; an empty one when there is none."""
    where = path or os.environ.get("DLMINE_PORTFOLIO") or SHIPPED
    if str(where) == "off":
        return {"learnt_from": {}, "tasks": {}}
    p = Path(where)
    if not p.is_file():
        if path or os.environ.get("DLMINE_PORTFOLIO"):
            raise DlmineError(f"the portfolio file {p} does not exist (DLMINE_PORTFOLIO)")
        return {"learnt_from": {}, "tasks": {}}
    return json.loads(p.read_text())


def settings(task: str, metric: str, doc: Optional[dict] = None) -> tuple[list[dict], int]:
    """The portfolio's settings of ``task`` learned for ``metric``, best first, and how many
    datasets they were learned on; none when the portfolio has none for them."""
    entry = (doc if doc is not None else load()).get("tasks", {}).get(task)
    if not entry or entry.get("metric") != metric:
        return [], 0
    return list(entry["settings"]), int(entry.get("datasets", 0))
