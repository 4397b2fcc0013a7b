"""report.html: one self-contained page per run, pictures embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import yaml

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5} td.l,th.l{text-align:left} .muted{color:#777} pre{background:#f7f7f7;padding:.8rem;overflow:auto}
.better{color:#0a7d28;font-weight:600} .worse{color:#b3261e} img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1rem}
"""

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"  # a count that a mixed table column turned into a float
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, left: tuple = ()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{_fmt(v)}</td>' for c, v in zip(df.columns, row)) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _learning_curves(history: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = pd.DataFrame(history)
    extra = [c for c in h.columns if c.startswith("val_") and c != "val_loss"]
    fig, axes = plt.subplots(1, 1 + bool(extra), figsize=(10 if extra else 5.5, 3.4))
    axes = np.atleast_1d(axes)
    axes[0].plot(h["epoch"], h["train_loss"], label="train loss")
    if "val_loss" in h:
        axes[0].plot(h["epoch"], h["val_loss"], label="validation loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    axes[0].set_title("loss")
    if extra:
        for c in extra:
            axes[1].plot(h["epoch"], h[c], label=c)
        axes[1].set_xlabel("epoch")
        axes[1].legend()
        axes[1].set_title("validation metric")
    return _png(fig)


def _confusion(pred: pd.DataFrame, target: str, classes: list) -> str:
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    labels = [str(c) for c in classes]
    cm = confusion_matrix(pred[target].astype(str), pred["prediction"].astype(str), labels=labels)
    size = min(9.0, 2.5 + 0.45 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 8 else 0)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title("confusion matrix (test split)")
    return _png(fig)


def _residuals(pred: pd.DataFrame, target: str) -> str:
    import matplotlib.pyplot as plt

    y = pred[target].to_numpy(float)
    p = pred["prediction"].to_numpy(float)
    if len(y) > 20000:
        idx = np.random.default_rng(0).choice(len(y), 20000, replace=False)
        y, p = y[idx], p[idx]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].scatter(y, p, s=6, alpha=0.5)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    axes[0].plot([lo, hi], [lo, hi], color="grey", lw=1)
    axes[0].set_xlabel("true")
    axes[0].set_ylabel("predicted")
    axes[0].set_title("predicted vs true (test split)")
    axes[1].scatter(p, y - p, s=6, alpha=0.5)
    axes[1].axhline(0, color="grey", lw=1)
    axes[1].set_xlabel("predicted")
    axes[1].set_ylabel("residual")
    axes[1].set_title("residuals")
    return _png(fig)


def _class_balance(balance: dict) -> str:
    import matplotlib.pyplot as plt

    keys = list(balance)[:50]
    fig, ax = plt.subplots(figsize=(min(10, 2 + 0.35 * len(keys)), 2.8))
    ax.bar(range(len(keys)), [balance[k] for k in keys])
    ax.set_xticks(range(len(keys)), keys, rotation=90 if len(keys) > 12 else 0)
    ax.set_title("class balance (all rows)")
    return _png(fig)


def metrics_table(metrics: dict) -> pd.DataFrame:
    """One row per test metric the task reports: the deep model's value and 95% interval, the
    baseline's, the paired interval of their difference, and the verdict ('better', 'worse' or
    'tie': better or worse only when that interval excludes zero; a metric without an interval is
    'tie' on equal values, else 'no interval'). Counts, seconds and settings are not metrics and are left out."""
    from dlmine_ray.tasks import get_task
    from dlmine_ray.tasks.bootstrap import verdict

    rows = []
    for k, mode in get_task(metrics["task"]).metric_modes.items():
        deep, base = metrics.get(k), metrics.get(f"baseline_{k}")
        if deep is None and base is None:
            continue
        diff = metrics.get(f"diff_{k}_ci")
        if not _finite(deep) or not _finite(base):
            call = ""
        elif diff:
            call = verdict(diff, mode == "max")
        else:  # no interval (a sample-based metric): equal values tie, and a gap is not called
            call = "tie" if deep == base else "no interval"
        rows.append({"metric": k, "deep model": deep, "deep CI": metrics.get(f"{k}_ci"), "baseline": base,
                     "baseline CI": metrics.get(f"baseline_{k}_ci"), "difference CI": diff, "verdict": call})
    return pd.DataFrame(rows, columns=["metric", "deep model", "deep CI", "baseline", "baseline CI",
                                       "difference CI", "verdict"])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def ci_text(ci) -> str:
    """'[low, high]' for an interval, '' for none."""
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def value_text(value, ci, digits: str = ".4g") -> str:
    """A metric and its interval for a summary table ('0.9717 [0.95, 0.99]'); '–' when missing."""
    return f"{value:{digits}} {ci_text(ci)}".strip() if _finite(value) else "–"


def metrics_html(metrics: dict, baseline_name: str) -> str:
    """The metrics table as HTML: the deep model's cell green when the paired interval says it
    is better, red when worse, and the word 'tie' otherwise."""
    mt = metrics_table(metrics)
    if mt.empty:
        return ""
    rows = []
    for r in mt.itertuples(index=False):
        cls = r.verdict if r.verdict in ("better", "worse") else ""
        rows.append(f'<tr><td class="l">{r.metric}</td><td class="{cls}">{_fmt(r[1])}</td>'
                    f'<td class="muted">{ci_text(r[2])}</td><td>{_fmt(r.baseline)}</td>'
                    f'<td class="muted">{ci_text(r[4])}</td><td class="muted">{ci_text(r[5])}</td>'
                    f'<td class="l {cls}">{r.verdict}</td></tr>')
    return (f'<table><tr><th class="l">metric</th><th>deep model</th><th>95% CI</th>'
            f'<th>baseline ({html.escape(baseline_name)})</th><th>95% CI</th><th>difference, paired 95% CI</th>'
            f'<th class="l">verdict</th></tr>{"".join(rows)}</table>'
            '<p class="muted">Intervals: percentile bootstrap over the scored rows, 1,000 draws; the difference '
            '(deep model minus baseline) is computed on the same draws. "tie": the difference interval contains 0.'
            '</p>')


def write_report(path: Path, spec, profile: dict, history: list[dict], metrics: dict, predictions: pd.DataFrame,
                 info: dict, leaderboard: Optional[pd.DataFrame] = None, feature_names: Optional[list] = None,
                 base_spec=None) -> None:
    """Write the run's report page (atomically) to ``path``; returns None.

    ``spec`` is the job of the saved model (after tuning, the best trial's); ``base_spec`` the
    tuned job as given, whose search space the leaderboard section shows."""
    target = spec.data.target
    tuned = f" · the best of {len(leaderboard)} tuning trials" if leaderboard is not None else ""
    parts = [f"<h1>{html.escape(spec.name)}</h1>",
             f'<p class="muted">task <b>{spec.task}</b> · target <b>{html.escape(target)}</b> · '
             f'{profile["rows"]:,} rows · model {spec.model.kind} {spec.model.hidden}{tuned}</p>']

    parts.append("<h2>Metrics on the test split</h2>")
    parts.append(metrics_html(metrics, "HistGradientBoosting"))
    parts.append(f'<p class="muted">train {metrics.get("rows_train", 0):,} rows · test {metrics.get("rows_test", 0):,} rows'
                 f' · training {metrics.get("train_seconds", 0):.1f}s · {metrics.get("epochs_run", "?")} epochs, '
                 f'best at epoch {metrics.get("best_epoch", "?")}</p>')

    parts.append("<h2>Learning curves</h2>")
    if history:
        parts.append(_learning_curves(history))
    parts.append("<h2>Test predictions</h2>")
    if spec.task == "classify":
        parts.append("<h3>Confusion matrix</h3>" + _confusion(predictions, target, info["classes"]))
    else:
        parts.append("<h3>Predicted vs true, and residuals</h3>" + _residuals(predictions, target))

    if leaderboard is not None:
        parts.append("<h2>Tuning leaderboard</h2>")
        parts.append(_table(leaderboard, left=("trial", "status")))
        parts.append('<p class="muted">status: <b>completed</b> (the trial ran its epochs or stopped early by '
                     'itself), <b>stopped by scheduler</b> (the scheduler ended it), <b>error</b>. The saved model is '
                     'the rank 1 trial; the Job below is its job (job.yaml); the job as given is job_base.yaml.</p>')
        if base_spec is not None and base_spec.tune is not None:
            parts.append("<h3>Search space</h3>"
                         f"<pre>{html.escape(yaml.safe_dump(base_spec.tune.model_dump(), sort_keys=False))}</pre>")

    parts.append("<h2>Data profile</h2>")
    parts.append(f'<p>{profile["rows"]:,} rows × {profile["n_columns"]} columns; split train/valid/test = '
                 f'{profile["rows_train"]:,} / {profile["rows_valid"]:,} / {profile["rows_test"]:,}</p>')
    if profile.get("class_balance"):
        parts.append(_class_balance(profile["class_balance"]))
    parts.append(dropped_note(profile))
    cols = pd.DataFrame(profile["columns"])
    parts.append(_table(cols, left=("column", "type")))
    if feature_names:
        parts.append(f'<p class="muted">{len(feature_names)} encoded model inputs.</p>')

    write_page(path, spec, parts)


def dropped_note(profile: dict) -> str:
    """A line naming the constant columns the run dropped (empty when none was)."""
    dropped = profile.get("dropped_constant") or []
    if not dropped:
        return ""
    return (f'<p>Dropped {len(dropped)} constant column(s), which cannot tell rows apart: '
            f'{html.escape(", ".join(dropped))}.</p>')


def write_page(path, spec, parts: list[str]) -> None:
    """Append the job's YAML to ``parts`` and write the page to ``path`` atomically (a temporary
    name, then a rename): the report of every task ends this way."""
    parts = parts + ["<h2>Job</h2>",
                     f"<pre>{html.escape(yaml.safe_dump(spec.model_dump(), sort_keys=False))}</pre>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)} · dlmine_ray</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.write_text(page)
    os.replace(tmp, path)
