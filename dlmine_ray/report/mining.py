"""report.html for the unsupervised tasks (cluster, detect): one self-contained page per run,
laid out like the supervised page of :mod:`dlmine_ray.report.html`, pictures embedded as PNG."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dlmine_ray.report.html import (_class_balance, _finite, _fmt, _learning_curves, _png, _table, dropped_note,
                                    metrics_html, write_page)



def _plt():
    """pyplot on the Agg backend (reports are written on headless drivers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(i: int, n: int):
    """The i-th of n categorical colours (tab10 up to 10, tab20 beyond; repeats past 20)."""
    cmap = _plt().get_cmap("tab10" if n <= 10 else "tab20")
    return cmap(i % cmap.N)


# -- metrics ----------------------------------------------------------------------------------

def _metrics_section(task: str, metrics: dict) -> str:
    """HTML: the deep model vs baseline table, then every other scalar number of the run."""
    from dlmine_ray.tasks import get_task

    t = get_task(task)
    out = [metrics_html(metrics, t.baseline_name)]
    # the keys the metrics table already shows
    shown = {key for m in t.metric_modes
             for key in (m, f"baseline_{m}", f"{m}_ci", f"baseline_{m}_ci", f"diff_{m}_ci")}
    other = [(k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in metrics.items()
             if k not in shown and (isinstance(v, (int, float, str, list, tuple, np.number)))]
    if other:
        out.append("<h3>Other numbers</h3>")
        out.append(_table(pd.DataFrame(other, columns=["name", "value"]), left=("name", "value")))
    return "".join(out)


def _stage_curves(history: list[dict]) -> str:
    """An <img>: one small loss subplot per training stage (their losses have different scales)."""
    from matplotlib.ticker import MaxNLocator

    h = pd.DataFrame(history)
    if "stage" not in h:
        return _learning_curves(history)
    stages = list(dict.fromkeys(h["stage"]))
    plt = _plt()
    fig, axes = plt.subplots(1, len(stages), figsize=(min(14.0, 1.0 + 3.4 * len(stages)), 3.0), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        s = h[h["stage"] == stage]
        ax.plot(s["epoch"], s["train_loss"], marker=".", label="train")
        if "val_loss" in s and s["val_loss"].notna().any():
            ax.plot(s["epoch"], s["val_loss"], marker=".", label="validation")
        ax.set_title(f"stage '{stage}'")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    return _png(fig)


# -- cluster ----------------------------------------------------------------------------------

def _cluster_map(sample: pd.DataFrame, labels_col: Optional[str]) -> str:
    """An <img>: the sampled rows on the 2-D map, by cluster and, if present, by ground-truth label."""
    panels = [("cluster", "by cluster")]
    if labels_col and labels_col in sample:
        panels.append((labels_col, f"by label '{labels_col}'"))
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], panels):
        values = sample[col].astype(object).where(sample[col].notna(), "missing")
        # numbers in order, then strings ("missing" among them)
        groups = sorted(values.unique(), key=lambda v: (isinstance(v, str), 0 if isinstance(v, str) else v, str(v)))
        for i, g in enumerate(groups):
            pick = (values == g).to_numpy()
            ax.scatter(sample["map_x"][pick], sample["map_y"][pick], s=5, alpha=0.6, color=_colour(i, len(groups)),
                       label=str(g))
        if len(groups) <= 20:  # a longer legend hides the map
            ax.legend(fontsize=7, markerscale=2.5, loc="best", title=col)
        ax.set_title(f"2-D map of the codes, {title}")
        ax.set_xticks([]), ax.set_yticks([])
    return _png(fig)


def _cluster_sizes(sizes: np.ndarray) -> str:
    """An <img>: a bar of rows per cluster."""
    plt = _plt()
    k = len(sizes)
    fig, ax = plt.subplots(figsize=(min(10.0, 2.5 + 0.4 * k), 2.8))
    ax.bar(range(k), sizes, color=[_colour(i, k) for i in range(k)])
    ax.set_xticks(range(k), [str(i) for i in range(k)], rotation=90 if k > 20 else 0)
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    ax.set_title("cluster sizes (all rows)")
    return _png(fig)


def _k_scores_plot(k_scores: dict, k: Any) -> str:
    """An <img>: silhouette of the initial clusters against k, the chosen k marked."""
    pairs = sorted((int(kk), float(v)) for kk, v in k_scores.items())
    ks, vals = [p[0] for p in pairs], [p[1] for p in pairs]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.plot(ks, vals, marker="o")
    if k is not None and int(k) in ks:
        ax.axvline(int(k), color="tab:red", lw=1, ls="--", label=f"chosen k = {int(k)}")
        ax.legend()
    ax.set_xlabel("k")
    ax.set_ylabel("silhouette")
    ax.set_title("choosing k (silhouette on sampled codes)")
    return _png(fig)


def _describe(name: str, value: float, overall: float, units: dict) -> str:
    """One feature as text in original units: numeric mean, or one-hot share, with the overall value."""
    if name in units:
        mean, std = (float(u) for u in units[name])
        return f"{name} {value * std + mean:.4g} (overall {overall * std + mean:.4g})"
    if "=" in name:
        return f"{name} {value:.0%} (overall {overall:.0%})"
    return f"{name} {value:+.2f} sd (overall {overall:+.2f})"  # numeric without known units: standardised


def cluster_profile(material: dict, feature_names: list[str], n_top: int = 4) -> pd.DataFrame:
    """Rows of (cluster, rows, share, distinguishing features): the ``n_top`` features whose
    cluster mean lies farthest from the overall mean in the encoded (standardised / one-hot)
    space, described in original units."""
    sizes = np.asarray(material["sizes"], dtype=np.int64)
    means = np.atleast_2d(np.asarray(material["means_encoded"], dtype=np.float64))
    overall = np.asarray(material["overall_encoded"], dtype=np.float64)
    units = material.get("numeric_units") or {}
    names = list(feature_names)[:means.shape[1]] + [f"x{j}" for j in range(len(feature_names), means.shape[1])]
    total = max(int(sizes.sum()), 1)
    rows = []
    for c, size in enumerate(sizes):
        gap = np.abs(means[c] - overall)
        # an empty cluster's means are zeros, not data; tiny gaps distinguish nothing
        top = [j for j in np.argsort(-gap, kind="stable")[:n_top] if gap[j] > 1e-9] if size > 0 else []
        text = "; ".join(_describe(names[j], means[c, j], overall[j], units) for j in top)
        rows.append({"cluster": c, "rows": int(size), "share": f"{size / total:.1%}",
                     "distinguishing features": text or ("(empty)" if size == 0 else "(as overall)")})
    return pd.DataFrame(rows)


def _cluster_sections(spec, metrics: dict, material: dict, info: dict) -> list[str]:
    parts = []
    sample = material.get("map")
    if isinstance(sample, pd.DataFrame) and len(sample) and {"map_x", "map_y", "cluster"} <= set(sample.columns):
        parts.append("<h2>Cluster map</h2>")
        parts.append(f'<p class="muted">{len(sample):,} sampled rows placed by the two principal axes of their '
                     'autoencoder codes.</p>')
        parts.append(_cluster_map(sample, spec.data.labels))
    sizes = material.get("sizes")
    if sizes is not None and len(sizes):
        parts.append("<h2>Cluster sizes</h2>" + _cluster_sizes(np.asarray(sizes)))
    k_scores = info.get("k_scores") or {}
    if k_scores:
        parts.append("<h2>Choosing k</h2>" + _k_scores_plot(k_scores, info.get("k", metrics.get("k"))))
    if sizes is not None and "means_encoded" in material and "overall_encoded" in material:
        parts.append("<h2>Cluster profiles</h2>")
        parts.append("<p>Each row is one cluster. Its distinguishing features are those whose mean inside the "
                     "cluster lies farthest from the mean over all rows, measured on the model's inputs (numeric "
                     "columns standardised, so 1 is one standard deviation; categorical columns as 0/1 shares). "
                     "Values are shown in original units: the cluster's mean for a numeric column, or for "
                     "<i>column=value</i> the share of the cluster's rows with that value; in brackets the same over "
                     "all rows.</p>")
        parts.append(_table(cluster_profile(material, info.get("feature_names", [])),
                            left=("share", "distinguishing features")))
    return parts


# -- detect -----------------------------------------------------------------------------------

def _score_histogram(scores: np.ndarray, threshold: Optional[float]) -> str:
    """An <img>: histogram of every row's score (log x when they span > 2 decades), threshold marked."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    pos = s[s > 0]
    log_x = len(pos) > 1 and pos.max() / pos.min() > 100
    if log_x:
        # zeros (and negatives) have no place on a log axis: count them in the lowest bin
        lo = pos.min()
        ax.hist(np.maximum(s, lo), bins=np.geomspace(lo, pos.max() * 1.0001, 60))
        ax.set_xscale("log")
    else:
        ax.hist(s, bins=60)
    ax.set_yscale("log")  # the anomalous tail is a handful of rows against many normal ones
    if threshold is not None and _finite(threshold) and (threshold > 0 or not log_x):
        ax.axvline(threshold, color="tab:red", lw=1.2, ls="--", label=f"threshold {threshold:.4g}")
        ax.legend()
    zeros = int((s <= 0).sum()) if log_x else 0
    ax.set_xlabel("anomaly score" + (" (log scale)" if log_x else "")
                  + (f"; {zeros:,} scores ≤ 0 counted in the lowest bin" if zeros else ""))
    ax.set_ylabel("rows")
    ax.set_title(f"scores of all {len(s):,} rows")
    return _png(fig)


def _detect_sections(spec, metrics: dict, material: dict, info: dict) -> list[str]:
    parts = ["<h2>Anomaly scores</h2>"]
    threshold = material.get("threshold", info.get("threshold", metrics.get("threshold")))
    rule = material.get("threshold_rule") or info.get("threshold_rule")
    flagged = metrics.get("n_flagged")
    parts.append(f"<p>Threshold <b>{_fmt(threshold)}</b>" + (f": {html.escape(str(rule))}" if rule else "")
                 + (f". {_fmt(flagged)} rows flagged" if flagged is not None else "")
                 + (f" ({metrics['share_flagged']:.2%})" if _finite(metrics.get("share_flagged")) else "") + ".</p>")
    scores = material.get("scores")
    if scores is not None and len(scores):
        parts.append(_score_histogram(np.asarray(scores), threshold))
    top = material.get("top")
    if isinstance(top, pd.DataFrame) and len(top):
        parts.append("<h2>Top anomalies</h2>")
        parts.append('<p class="muted">The highest-scoring rows; <i>top_features</i> names the inputs that '
                     'contribute most to a flagged row\'s score (empty for rows under the threshold).</p>')
        top = top.copy()
        if "score" in top:
            top["score"] = top["score"].astype(np.float64)
        if "flag" in top:  # _fmt would print a bool as 1/0
            top["flag"] = np.where(top["flag"].astype(bool), "yes", "no")
        parts.append(_table(top, left=tuple(c for c in top.columns if c not in ("score", "rank"))))
    return parts


# -- the page ---------------------------------------------------------------------------------

def _header(spec, profile: dict, info: dict) -> str:
    m = spec.model
    model = f"autoencoder {m.hidden} → latent {m.latent}"
    if spec.task == "cluster":
        c = spec.cluster
        k = info.get("k") or c.k
        extra = (f"k = {k}" if k else "k chosen") + f" · init {info.get('init', c.init)}" \
            + (f" · DEC refinement ({c.refine_epochs} epochs)" if c.refine_epochs else "")
    else:
        d = spec.detect
        extra = f"method {info.get('method', d.model)}" \
            + (f" · contamination {d.contamination}" if d.contamination else "")
    labels = f" · labels <b>{html.escape(spec.data.labels)}</b>" if spec.data.labels else ""
    return (f'<p class="muted">task <b>{spec.task}</b>{labels} · {profile.get("rows", 0):,} rows · '
            f'model {html.escape(model)} · {html.escape(extra)}</p>')


def write_mining_report(path: Path, spec, profile: dict, history: list[dict], metrics: dict, material: dict,
                        info: dict) -> None:
    """Write the run's report page (atomically) to ``path``."""
    task = spec.task
    parts = [f"<h1>{html.escape(spec.name)}</h1>", _header(spec, profile, info)]
    parts.append("<h2>Metrics</h2>")
    parts.append(_metrics_section(task, metrics))
    if spec.data.labels:
        parts.append(f'<p class="muted">Label-based metrics compare with the column '
                     f'<b>{html.escape(spec.data.labels)}</b>, which the model never saw.</p>')
    parts.extend(_cluster_sections(spec, metrics, material, info) if task == "cluster"
                 else _detect_sections(spec, metrics, material, info))

    parts.append("<h2>Learning curves</h2>")
    if history:
        parts.append('<p class="muted">One panel per training stage; their losses differ in kind and scale.</p>')
        parts.append(_stage_curves(history))

    parts.append("<h2>Data profile</h2>")
    parts.append(f'<p>{profile.get("rows", 0):,} rows × {profile.get("n_columns", 0)} columns; '
                 f'{len(info.get("feature_names", []))} encoded model inputs.</p>')
    parts.append(dropped_note(profile))
    if profile.get("class_balance"):
        parts.append(_class_balance(profile["class_balance"]))
    if profile.get("columns"):
        parts.append(_table(pd.DataFrame(profile["columns"]), left=("column", "type")))

    write_page(path, spec, parts)
