"""Mining the trial history: which settings mattered, and which settings go with the best trials.

- Importance: Optuna's fANOVA evaluator over the trials (this run's and the past ones on the same
  dataset), each setting's share of the variance of the validation metric.
- Rules: each trial becomes a basket of discretised settings ("train.lr in [0.003, 0.01)",
  "model.hidden=[256, 256, 128]") plus the item "top quartile" when its value is among the best
  quarter; the project's own FP-Growth (``mining.local``) finds the frequent itemsets, and the rules
  whose consequent is "top quartile" are kept, with support, confidence and lift.
- What is learnt is used: a setting whose importance stays under ``FIX_BELOW`` over at least
  ``FIX_AFTER`` past trials is fixed at its best value in the next search of that dataset.
"""

from __future__ import annotations

import json
import warnings
from itertools import combinations
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.runtime.progress import ERROR

TOP = "top quartile"
#: a setting that explains less than this share of the variance is fixed in later searches ...
FIX_BELOW = 0.02
#: ... once this many past trials of the dataset say so
FIX_AFTER = 12


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that have a value (a trial that errored has none to learn from)."""
    t = trials[trials["value"].notna()]
    if "status" in t:
        t = t[t["status"] != ERROR]
    return t.reset_index(drop=True)


def _text(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


def _numeric(domain: Any) -> bool:
    """A range (binned by terciles); a list of choices is taken value by value."""
    return isinstance(domain, dict) and next(iter(domain)) in ("loguniform", "uniform", "randint", "quniform")


def importances(trials: pd.DataFrame, space: dict, mode: str, seed: int = 0) -> pd.DataFrame:
    """(setting, importance) by Optuna's fANOVA over the completed trials, most important first;
    empty with fewer than 4 trials or no setting that varies."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    t = _completed(trials)
    if len(t) < 4:
        return pd.DataFrame(columns=["setting", "importance"])
    dists: dict[str, Any] = {}
    for key, dom in space.items():
        values = [p.get(key) for p in t["params"]]
        if any(v is None for v in values) or len({_text(v) for v in values}) < 2:
            continue
        if isinstance(dom, dict) and next(iter(dom)) in ("loguniform", "uniform", "quniform"):
            lo, hi = (float(a) for a in next(iter(dom.values()))[:2])
            dists[key] = FloatDistribution(min(lo, min(values)), max(hi, max(values)),
                                           log=next(iter(dom)) == "loguniform")
        elif isinstance(dom, dict) and next(iter(dom)) == "randint":
            lo, hi = next(iter(dom.values()))[:2]
            dists[key] = IntDistribution(int(min(lo, min(values))), int(max(hi - 1, max(values))))
        else:
            choices = list(dict.fromkeys([_text(v) for v in (dom.get("choice") if isinstance(dom, dict) else dom)]
                                         + [_text(v) for v in values]))
            dists[key] = CategoricalDistribution(choices)
    if not dists:
        return pd.DataFrame(columns=["setting", "importance"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for p, v in zip(t["params"], t["value"]):
        params = {k: (_text(p[k]) if isinstance(d, CategoricalDistribution) else p[k]) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(v)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    return pd.DataFrame(sorted(imp.items(), key=lambda kv: -kv[1]), columns=["setting", "importance"])


def _items(t: pd.DataFrame, space: dict) -> list[list[str]]:
    """Each trial's basket: its discretised settings (terciles of the values seen for numeric
    settings, the value itself for the others)."""
    baskets = [[] for _ in range(len(t))]
    for key, dom in space.items():
        values = [p.get(key) for p in t["params"]]
        if all(v is None for v in values):
            continue
        if _numeric(dom) and len({v for v in values if v is not None}) > 3:
            x = np.asarray([np.nan if v is None else float(v) for v in values])
            q1, q2 = np.nanquantile(x, [1 / 3, 2 / 3])
            for b, v in zip(baskets, x):
                if np.isfinite(v):
                    b.append(f"{key} < {q1:.3g}" if v < q1 else f"{key} >= {q2:.3g}" if v >= q2
                             else f"{key} in [{q1:.3g}, {q2:.3g})")
        else:
            for b, v in zip(baskets, values):
                if v is not None:
                    b.append(f"{key}={_text(v)}")
    return baskets


def trial_rules(trials: pd.DataFrame, space: dict, mode: str, min_support: float = 0.1,
                min_confidence: float = 0.5, max_len: int = 3) -> pd.DataFrame:
    """Rules "settings -> top quartile" over the completed trials, by lift then confidence:
    (rule, support, confidence, lift, trials), without the rules that only add settings to a rule
    at least as confident; empty with fewer than 8 trials."""
    from dlmine_ray.mining.itemsets import association_rules, min_count_for
    from dlmine_ray.mining.local import itemset_tuples, mine_csr

    cols = ["rule", "support", "confidence", "lift", "trials"]
    t = _completed(trials)
    if len(t) < 8:
        return pd.DataFrame(columns=cols)
    score = t["value"].to_numpy(np.float64) * (1.0 if mode == "min" else -1.0)
    top = score <= np.quantile(score, 0.25)
    baskets = [b + ([TOP] if is_top else []) for b, is_top in zip(_items(t, space), top)]
    counts = pd.Series([i for b in baskets for i in b]).value_counts()
    names = list(counts.index)  # F-list order: the most frequent item first
    rank = {n: r for r, n in enumerate(names)}
    rows = [sorted({rank[i] for i in b}) for b in baskets]
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    flat = np.asarray([i for r in rows for i in r], dtype=np.int32)
    min_count = max(2, min_count_for(min_support, len(rows)))
    parent, item, count = mine_csr(indptr, flat, len(names), min_count, max_len + 1)
    rules = association_rules(itemset_tuples(parent, item, count), len(rows), min_confidence)
    rules = rules[rules["consequent"].map(lambda c: c == (rank[TOP],))].copy()
    # a rule that adds settings to a rule at least as confident says nothing new
    conf = dict(zip(rules["antecedent"], rules["confidence"]))
    keep = [not any(conf.get(sub, -1.0) >= c - 1e-9 for k in range(1, len(a)) for sub in combinations(a, k))
            for a, c in zip(rules["antecedent"], rules["confidence"])]
    rules = rules[keep]
    if rules.empty:
        return pd.DataFrame(columns=cols)
    rules["rule"] = rules["antecedent"].map(lambda a: " and ".join(names[i] for i in a) + f" -> {TOP}")
    rules["trials"] = rules["count"]
    return (rules.sort_values(["lift", "confidence", "support"], ascending=False, kind="stable")[cols]
            .reset_index(drop=True))


def fixed_settings(past: pd.DataFrame, space: dict, mode: str) -> tuple[dict, pd.DataFrame]:
    """The settings that never mattered on this dataset (importance under FIX_BELOW over at least
    FIX_AFTER past trials), each at the value of the best past trial; with the importances."""
    t = _completed(past)
    if len(t) < FIX_AFTER:
        return {}, pd.DataFrame(columns=["setting", "importance"])
    imp = importances(t, space, mode)
    best = t.iloc[int(np.argmin(t["value"].to_numpy() * (1.0 if mode == "min" else -1.0)))]["params"]
    fixed = {k: best[k] for k, v in zip(imp["setting"], imp["importance"]) if v < FIX_BELOW and k in best}
    return fixed, imp


def infer_space(trials: pd.DataFrame) -> dict:
    """A search space that covers the trials' settings, for trials whose space is not known (the
    knowledge base's): a range for numbers with more than 5 distinct values, else their values."""
    space: dict = {}
    keys = sorted({k for p in trials["params"] for k in p})
    for k in keys:
        values = [p[k] for p in trials["params"] if k in p]
        distinct = list({_text(v): v for v in values}.values())
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
        if numbers and len(distinct) > 5:
            lo, hi = float(min(distinct)), float(max(distinct))
            space[k] = {"loguniform" if lo > 0 and hi / lo > 20 else "uniform": [lo, hi]}
        else:
            space[k] = distinct
    return space


def lessons(trials: pd.DataFrame, space: dict, mode: str) -> Optional[dict]:
    """What the trials teach, for the report: {"importance": DataFrame, "trial_rules": DataFrame,
    "trials": n}; None when there are too few trials to say anything."""
    t = _completed(trials)
    if len(t) < 4:
        return None
    return {"importance": importances(t, space, mode), "trial_rules": trial_rules(t, space, mode).head(10),
            "trials": len(t)}


