"""The local pieces of parallel FP-Growth (Li et al. 2008) and the rule measures; no Ray here.

Items are integer ranks in the F-list (0 = the most frequent item). A transaction is the sorted
array of its frequent items' ranks. Items are spread over ``groups`` by ``rank % groups``; for each
group a transaction contains, it sends its prefix up to (and including) its last item of that
group. An itemset whose least frequent item (its largest rank) belongs to group g is contained
in a transaction exactly when it is contained in the prefix that transaction sent to g, so group
g's prefixes give exact counts for those itemsets, and every itemset is counted in exactly one
group. The local miner is Borgelt's FP-Growth in C (pyfim)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Optional

import numpy as np
import pandas as pd


def min_count_for(min_support, n_transactions: int) -> int:
    """The smallest count that meets ``min_support``: an int is a count of transactions, a
    float in (0, 1] a fraction of them (the spec has checked the value)."""
    if isinstance(min_support, int):
        return int(min_support)
    return max(1, math.ceil(min_support * n_transactions - 1e-9))


def group_prefixes_sorted(rows: np.ndarray, ranks: np.ndarray, groups: int) -> list[dict]:
    """Group-dependent prefixes of transactions given flat: ``rows`` (transaction index,
    ascending) and ``ranks`` (ascending within a transaction, no duplicates). Returns one
    {prefix tuple: number of transactions} per group."""
    out: list[Counter] = [Counter() for _ in range(groups)]
    if len(rows) == 0:
        return [dict(c) for c in out]
    starts_of_row = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    pos = np.arange(len(ranks))
    grp = ranks % groups
    flat = ranks.tolist()
    for g in range(groups):
        # the last position of group g in each transaction (-1: none) ends the prefix sent to g
        last = np.maximum.reduceat(np.where(grp == g, pos, -1), starts_of_row)
        has = last >= 0
        counter = out[g]
        for s, e in zip(starts_of_row[has].tolist(), (last[has] + 1).tolist()):
            counter[tuple(flat[s:e])] += 1
    return [dict(c) for c in out]


def group_prefixes(transactions: Iterable[np.ndarray], groups: int) -> list[dict]:
    """The same for an iterable of sorted rank arrays (one per transaction)."""
    ts = [np.asarray(t, dtype=np.int64) for t in transactions]
    rows = np.repeat(np.arange(len(ts), dtype=np.int64), [len(t) for t in ts])
    ranks = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    return group_prefixes_sorted(rows, ranks, groups)


def mine_group(prefixes: dict[tuple, int], group: int, groups: int, min_count: int,
               max_len: Optional[int]) -> list[tuple[tuple, int]]:
    """Frequent itemsets (sorted rank tuples, count) whose largest rank is in ``group``."""
    import fim

    if not prefixes:
        return []
    limit = {"zmax": max_len} if max_len else {}  # pyfim: no zmax argument = no limit
    # pyfim (6.28) reports nothing for items contained in every transaction of its input (they
    # become perfect extensions of the unreported empty set): one empty transaction, which
    # contains no itemset, prevents that without changing any count
    db = dict(prefixes)
    db[()] = db.get((), 0) + 1
    found = fim.fpgrowth(db, target="s", supp=-min_count, zmin=1, report="a", **limit)
    out = []
    for items, count in found:
        top = max(items)
        if top % groups == group:
            out.append((tuple(sorted(items)), int(count)))
    return out


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


def rule_table(antecedents: list, consequents: list, counts, ant_counts, con_counts,
               n_transactions: int) -> pd.DataFrame:
    """Rules with their measures from counts: transactions holding the whole rule, its
    antecedent, its consequent. Conviction is infinite where the confidence is 1."""
    n = float(n_transactions)
    c = np.asarray(counts, dtype=np.float64)
    a = np.asarray(ant_counts, dtype=np.float64)
    s_c = np.asarray(con_counts, dtype=np.float64) / n
    support = c / n
    conf = c / np.maximum(a, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        conviction = np.where(conf >= 1.0, np.inf, (1.0 - s_c) / (1.0 - conf))
    return pd.DataFrame({"antecedent": list(antecedents), "consequent": list(consequents), "support": support,
                         "confidence": conf, "lift": conf / np.where(s_c > 0, s_c, np.nan),
                         "leverage": support - (a / n) * s_c, "conviction": conviction,
                         "count": c.astype(np.int64)})
