"""The pieces of parallel FP-Growth (Li et al. 2008) that need neither Ray nor numba: the
support threshold and the rules with their measures.

Items are integer ranks in the F-list (0 = the most frequent item). Items are spread over
``groups`` by ``rank % groups``; for each group a transaction contains, it sends its prefix up to
(and including) its last item of that group. An itemset whose largest rank belongs to group g is
contained in a transaction exactly when it is contained in the prefix that transaction sent to
g, so group g's prefixes give exact counts for those itemsets, and every itemset is counted in
exactly one group. The local miner is ours, compiled with numba (``dlmine_ray.mining.local``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def min_count_for(min_support, n_transactions: int) -> int:
    """The smallest count that meets ``min_support``: an int is a count of transactions, a
    float in (0, 1] a fraction of them (the spec has checked the value)."""
    if isinstance(min_support, int):
        return int(min_support)
    return max(1, math.ceil(min_support * n_transactions - 1e-9))


def association_rules(itemsets: dict[tuple, int], n_transactions: int, min_confidence: float) -> pd.DataFrame:
    """Every rule A -> C (A, C non-empty, disjoint, A u C a frequent itemset) with confidence at
    least ``min_confidence``, with support, confidence, lift, leverage and conviction; the
    antecedent and consequent as sorted rank tuples."""
    from itertools import combinations

    rows_a, rows_c, counts, ant_counts, con_counts = [], [], [], [], []
    for items, count in itemsets.items():
        k = len(items)
        if k < 2:
            continue
        for r in range(1, k):
            for ant in combinations(items, r):
                a_count = itemsets[ant]
                if count < min_confidence * a_count - 1e-9:
                    continue
                con = tuple(i for i in items if i not in ant)
                rows_a.append(ant)
                rows_c.append(con)
                counts.append(count)
                ant_counts.append(a_count)
                con_counts.append(itemsets[con])
    return rule_table(rows_a, rows_c, counts, ant_counts, con_counts, n_transactions)


def rule_measures(counts, ant_counts, con_counts, n_transactions: int) -> dict[str, np.ndarray]:
    """Rules' measures from counts (transactions holding the whole rule, its antecedent, its
    consequent): {"support", "confidence", "lift", "leverage", "conviction"} as float arrays.
    Conviction is infinite where the confidence is 1."""
    n = float(n_transactions)
    c = np.asarray(counts, dtype=np.float64)
    a = np.asarray(ant_counts, dtype=np.float64)
    s_c = np.asarray(con_counts, dtype=np.float64) / n
    support = c / n
    conf = c / np.maximum(a, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        conviction = np.where(conf >= 1.0, np.inf, (1.0 - s_c) / (1.0 - conf))
        lift = conf / np.where(s_c > 0, s_c, np.nan)
    return {"support": support, "confidence": conf, "lift": lift, "leverage": support - (a / n) * s_c,
            "conviction": conviction}


def rule_table(antecedents: list, consequents: list, counts, ant_counts, con_counts,
               n_transactions: int) -> pd.DataFrame:
    """Rules with their measures (``rule_measures``) as a DataFrame: antecedent, consequent
    (as given), support, confidence, lift, leverage, conviction, count."""
    m = rule_measures(counts, ant_counts, con_counts, n_transactions)
    return pd.DataFrame({"antecedent": list(antecedents), "consequent": list(consequents), **m,
                         "count": np.asarray(counts, dtype=np.float64).astype(np.int64)})
