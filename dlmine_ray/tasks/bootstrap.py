"""Paired bootstrap confidence intervals for test metrics, with no Ray inside.

A replicate draws the test rows with replacement; the deep model and the baseline are scored on
the same draw, so the interval of their difference reflects how much of the gap the test rows can
tell apart (test splits of a few hundred rows are common). A replicate is a vector of row weights
(how often each row was drawn), and every metric here is computed from weights, vectorised over
replicates: thousands of replicates cost about as much as a few calls to scikit-learn."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

#: replicates, and the most row weights held at once (replicates x rows) when computing them
REPLICATES = 1000
_CELLS = 4_000_000
LEVEL = 0.95


def weight_draws(n: int, replicates: int, seed: int):
    """Yield (chunk of replicates, n) float64 weight matrices: how often each row was drawn."""
    rng = np.random.default_rng(seed)
    per = max(1, min(replicates, _CELLS // max(n, 1)))
    done = 0
    while done < replicates:
        b = min(per, replicates - done)
        w = np.empty((b, n))
        for i in range(b):
            w[i] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        done += b
        yield w


def paired_intervals(metrics_fn: Callable[[np.ndarray, str], dict], n: int, has_baseline: bool,
                     seed: int = 0, replicates: int = REPLICATES) -> dict[str, list[float]]:
    """Percentile intervals from ``metrics_fn(weights, which)``, which returns a dict of metric
    name -> (replicates,) values for ``which`` in ("deep", "baseline").

    Returns ``{<m>_ci, baseline_<m>_ci, diff_<m>_ci: [low, high]}`` (diff = deep - baseline);
    replicates where a metric is undefined (a class missing from the draw) are left out."""
    deep: dict[str, list] = {}
    base: dict[str, list] = {}
    for w in weight_draws(n, replicates, seed):
        for k, v in metrics_fn(w, "deep").items():
            deep.setdefault(k, []).append(v)
        if has_baseline:
            for k, v in metrics_fn(w, "baseline").items():
                base.setdefault(k, []).append(v)
    lo, hi = 100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2
    out: dict[str, list[float]] = {}

    def interval(values: np.ndarray) -> Optional[list[float]]:
        values = values[np.isfinite(values)]
        if values.size < 10:
            return None
        return [float(np.percentile(values, lo)), float(np.percentile(values, hi))]

    for k, parts in deep.items():
        d = np.concatenate(parts)
        out[f"{k}_ci"] = interval(d)
        if k in base:
            b = np.concatenate(base[k])
            out[f"baseline_{k}_ci"] = interval(b)
            out[f"diff_{k}_ci"] = interval(d - b)
    return {k: v for k, v in out.items() if v is not None}


def seeded_difference(score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], a: list, b: list,
                      y: np.ndarray, seed: int) -> dict:
    """Two model settings trained over the same seeds (``a[i]``, ``b[i]``: raw outputs on the same
    rows, whose encoded targets are ``y``), paired: each setting's score per seed (``score(w,
    outputs, y)`` under row weights ``w``, e.g. ``Task.weighted_score``), the differences a - b,
    their mean and range, and a paired bootstrap interval over the rows of the mean difference
    (every draw scores every model on the same rows)."""
    ones = np.ones((1, len(y)))
    per_a = [float(score(ones, o, y)[0]) for o in a]
    per_b = [float(score(ones, o, y)[0]) for o in b]
    diff = [p - q for p, q in zip(per_a, per_b)]
    draws = [np.mean([score(w, p, y) - score(w, q, y) for p, q in zip(a, b)], axis=0)
             for w in weight_draws(len(y), REPLICATES, seed)]
    d = np.concatenate(draws)
    d = d[np.isfinite(d)]
    lo, hi = 100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2
    ci = [float(np.percentile(d, lo)), float(np.percentile(d, hi))] if d.size >= 10 else None
    return {"a": per_a, "b": per_b, "diff": diff, "mean_diff": float(np.mean(diff)),
            "diff_range": [float(min(diff)), float(max(diff))], "diff_ci": ci}


def verdict(diff_ci: Optional[list[float]], higher_is_better: bool) -> str:
    """'better', 'worse' (the deep model against the baseline) or 'tie': better or worse only
    when the paired interval of the difference excludes zero."""
    if not diff_ci:
        return "tie"
    low, high = diff_ci
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "tie"


# -- weighted metrics: w is (replicates, rows); every function returns (replicates,) -----------

def _mean(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (w @ v) / w.sum(axis=1)


def accuracy(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Share of correct predictions (y, pred: class indices)."""
    return _mean(w, (y == pred).astype(np.float64))


def log_loss(w: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """Mean negative log-probability of the true class (p_true already clipped)."""
    return _mean(w, -np.log(p_true))


def f1_macro(w: np.ndarray, y: np.ndarray, pred: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Macro F1 over the classes present in the draw's truth or predictions, as scikit-learn
    averages it (a class with no support and no prediction is left out). ``labels``: the classes
    in ``y`` or ``pred``, when the caller knows them already."""
    total, count = 0.0, 0.0
    for c in np.union1d(np.unique(y), np.unique(pred)) if labels is None else labels:
        tp = w @ ((y == c) & (pred == c)).astype(np.float64)
        true_c = w @ (y == c).astype(np.float64)
        pred_c = w @ (pred == c).astype(np.float64)
        present = (true_c + pred_c) > 0
        denom = np.where(true_c + pred_c > 0, true_c + pred_c, 1.0)
        total = total + np.where(present, 2 * tp / denom, 0.0)
        count = count + present
    return total / np.maximum(count, 1)


class Ranking:
    """The rows of ``score`` grouped by equal score, groups numbered in score order (ascending, or
    descending with ``descending=True``). Sorting once per model and summing weights per group with
    ``np.bincount`` makes each draw of a rank metric linear in the rows, with no gather of the weights
    into sorted order (the whole interval step at 500k test rows: ``benchmarks/bench_intervals.py``)."""

    def __init__(self, score: np.ndarray, descending: bool = False):
        score = np.asarray(score, dtype=np.float64)
        self.descending = descending
        #: the rows in that order, ties in row order (a stable sort)
        self.order = order = np.argsort(-score if descending else score, kind="mergesort")
        s = score[order]
        new = np.ones(len(s), dtype=bool)
        new[1:] = s[1:] != s[:-1]
        self.group = np.empty(len(s), dtype=np.int64)
        self.group[order] = np.cumsum(new) - 1
        self.size = int(new.sum())

    def sums(self, w: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """(replicates, groups): each draw's weight in each group (only rows where ``mask``)."""
        out = np.empty((len(w), self.size))
        for i in range(len(w)):
            out[i] = np.bincount(self.group, weights=w[i] if mask is None else w[i] * mask, minlength=self.size)
        return out


def _ranking(score, descending: Optional[bool] = False) -> Ranking:
    """``score`` as a Ranking (descending=None: either direction will do)."""
    if not isinstance(score, Ranking):
        return Ranking(score, bool(descending))
    if descending is not None and score.descending != descending:
        raise ValueError(f"this metric needs a {'descending' if descending else 'ascending'} Ranking")
    return score


def roc_auc(w: np.ndarray, positive: np.ndarray, score) -> np.ndarray:
    """Weighted Mann-Whitney AUC of ``score`` (an array, or its ``Ranking`` in either direction to
    reuse over chunks of draws) for the boolean ``positive`` (ties count half); NaN where a draw has
    no positive or no negative row."""
    rank = _ranking(score, descending=None)
    wp = rank.sums(w, positive.astype(np.float64))
    wn = rank.sums(w) - wp
    if rank.descending:  # groups from the lowest score up
        wp, wn = wp[:, ::-1], wn[:, ::-1]
    below = np.cumsum(wn, axis=1) - wn
    n_pos, n_neg = wp.sum(axis=1), wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (wp * (below + 0.5 * wn)).sum(axis=1) / (n_pos * n_neg)


def ovr_rankings(proba: np.ndarray) -> list[Ranking]:
    """The rankings ``macro_ovr_auc`` needs for ``proba``'s columns, to build once per model."""
    if proba.shape[1] == 2:
        return [Ranking(proba[:, 1])]
    return [Ranking(proba[:, c]) for c in range(proba.shape[1])]


def macro_ovr_auc(w: np.ndarray, y: np.ndarray, proba) -> np.ndarray:
    """Macro one-vs-rest AUC over the classes of ``proba``'s columns (y: column indices); ``proba``
    may be given as its ``ovr_rankings``."""
    rankings = proba if isinstance(proba, list) else ovr_rankings(proba)
    if len(rankings) == 1:
        return roc_auc(w, y == 1, rankings[0])
    return np.mean([roc_auc(w, y == c, r) for c, r in enumerate(rankings)], axis=0)


def regression(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """rmse, mae and r2 of one model's predictions."""
    err = pred - y
    mean_y = _mean(w, y)
    sst = (w * np.square(y[None, :] - mean_y[:, None])).sum(axis=1)
    sse = w @ np.square(err)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / sst, np.nan)
    return {"rmse": np.sqrt(sse / w.sum(axis=1)), "mae": _mean(w, np.abs(err)), "r2": r2}


def average_precision(w: np.ndarray, positive: np.ndarray, score) -> np.ndarray:
    """Weighted average precision as scikit-learn defines it (precision at each distinct score,
    from the highest, weighted by the recall it adds); NaN where a draw has no positive row.
    ``score`` may be given as its descending ``Ranking``."""
    rank = _ranking(score, descending=True)
    tp = np.cumsum(rank.sums(w, positive.astype(np.float64)), axis=1)
    seen = np.cumsum(rank.sums(w), axis=1)
    n_pos = tp[:, -1]
    gained = np.diff(tp, axis=1, prepend=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        return np.where(n_pos > 0, (gained * precision).sum(axis=1) / n_pos, np.nan)


def precision_at_n(w: np.ndarray, positive: np.ndarray, score) -> np.ndarray:
    """Share of true anomalies among the n highest-scored rows of each draw, n = the draw's
    number of true anomalies (a drawn row counts as often as it was drawn; equal scores in row
    order). ``score`` may be given as its descending ``Ranking``."""
    order = _ranking(score, descending=True).order
    ww = w[:, order]
    cum = np.cumsum(ww, axis=1)
    hits = np.cumsum(ww * positive[order], axis=1)
    n_pos = hits[:, -1]
    out = np.full(len(w), np.nan)
    for i in range(len(w)):
        n = n_pos[i]
        if n <= 0:
            continue
        j = int(np.searchsorted(cum[i], n))  # the row where the top n ends (maybe part of its copies)
        before = hits[i, j - 1] if j else 0.0
        taken = n - (cum[i, j - 1] if j else 0.0)
        out[i] = (before + taken * positive[order][j]) / n
    return out


def agreement(w: np.ndarray, truth: np.ndarray, clusters: np.ndarray) -> dict[str, np.ndarray]:
    """NMI (arithmetic normalisation, scikit-learn's default), ARI and best-matching accuracy
    of clusters against labels (both integer codes from 0) for each weighted draw."""
    from scipy.optimize import linear_sum_assignment

    n_t, n_c = int(truth.max()) + 1, int(clusters.max()) + 1
    cell = clusters * n_t + truth
    out = {k: np.full(len(w), np.nan) for k in ("nmi", "ari", "acc")}
    for i in range(len(w)):
        table = np.bincount(cell, weights=w[i], minlength=n_c * n_t).reshape(n_c, n_t)
        table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
        n = table.sum()
        a, b = table.sum(axis=1), table.sum(axis=0)
        nz = table > 0
        mi = (table[nz] / n * np.log(table[nz] * n / np.outer(a, b)[nz])).sum()
        h_c, h_t = -(a / n * np.log(a / n)).sum(), -(b / n * np.log(b / n)).sum()
        out["nmi"][i] = 1.0 if h_c == 0 and h_t == 0 else (mi / ((h_c + h_t) / 2) if h_c + h_t > 0 else 0.0)
        pairs = lambda v: (v * (v - 1) / 2).sum()  # noqa: E731
        sum_ij, sum_a, sum_b, total = pairs(table), pairs(a), pairs(b), n * (n - 1) / 2
        expected = sum_a * sum_b / total if total else 0.0
        top = (sum_a + sum_b) / 2
        out["ari"][i] = 1.0 if top == expected else (sum_ij - expected) / (top - expected)
        rows, cols = linear_sum_assignment(-table)
        out["acc"][i] = table[rows, cols].sum() / n
    return out
