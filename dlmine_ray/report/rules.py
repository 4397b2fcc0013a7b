"""report.html for the rules task: the numbers, the top rules, a support-confidence plot."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from dlmine_ray.report.html import _png, _table, write_page


def _scatter(points: pd.DataFrame, n_rules: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    sc = ax.scatter(points["support"], points["confidence"], c=points["lift"], s=8, cmap="viridis", alpha=0.8)
    fig.colorbar(sc, ax=ax, label="lift")
    ax.set_xscale("log")
    ax.set_xlabel("support")
    ax.set_ylabel("confidence")
    ax.set_title(f"{n_rules:,} rules" + (f" ({len(points):,} shown, a random sample)" if len(points) < n_rules
                                         else ""))
    return _png(fig)


def write_rules_report(path: Path, spec, metrics: dict, top: pd.DataFrame, points: pd.DataFrame) -> None:
    """Write the run's report page to ``path`` (atomically): the numbers, the ``top`` rules by
    lift (rows of rules.parquet), a support-confidence plot of ``points`` (support, confidence,
    lift: all rules or a sample), the cut by max_rules and, with ``miner: both``, the comparison."""
    r = spec.rules
    parts = [f"<h1>{html.escape(spec.name)}</h1>",
             f'<p class="muted">task <b>rules</b> · {metrics["n_transactions"]:,} transactions · '
             f'{metrics["n_items"]:,} distinct items · min_support {r.min_support} ({metrics["min_count"]:,} '
             f'transactions) · min_confidence {r.min_confidence} · lift above {r.min_lift} · at most '
             f'{r.max_rules if r.max_rules is not None else "all"} rules kept</p>']
    if metrics.get("message"):
        parts.append(f"<p><b>{html.escape(metrics['message'])}</b>: lower rules.min_support.</p>")
    if metrics.get("rules_truncated"):
        parts.append(f"<p><b>{html.escape(metrics.get('rules_message', 'rules.max_rules cut the output'))}</b>.</p>")
    nums = pd.DataFrame([{"what": k, "value": v} for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)])
    parts += ["<h2>Numbers</h2>", _table(nums, left=("what",)),
              f"<p>Seconds exclude the one-off compile of the local miner (compile_seconds "
              f"{metrics.get('compile_seconds', float('nan')):.1f}: numba compiles it the first time after an install "
              "and loads it from its cache later), and the writing of the output files.</p>"]
    if len(top):
        top = top.copy()
        top["antecedent"] = top["antecedent"].map(lambda v: ", ".join(v))
        top["consequent"] = top["consequent"].map(lambda v: ", ".join(v))
        top["conviction"] = top["conviction"].replace(np.inf, np.nan)
        parts += [f"<h2>Top {len(top)} rules by lift</h2>",
                  "<p>conviction is shown as – where the confidence is 1 (infinite).</p>",
                  _table(top[["antecedent", "consequent", "support", "confidence", "lift", "leverage", "conviction"]],
                         left=("antecedent", "consequent")),
                  "<h2>Support and confidence</h2>", _scatter(points, metrics["n_rules"])]
    if r.miner == "both" and "n_rules_neural" in metrics:
        cmp = pd.DataFrame([
            {"miner": "exact (parallel FP-Growth)", "rules": metrics["n_rules"], "seconds": metrics["mining_seconds"]},
            {"miner": "neural (autoencoder, recounted)", "rules": metrics["n_rules_neural"],
             "seconds": metrics["neural_seconds"]}])
        recall = metrics.get("neural_top_recall", float("nan"))
        parts += ["<h2>Neural miner vs exact miner</h2>", _table(cmp, left=("miner",)),
                  "<p>Exact seconds: counting, mining and rule generation; neural seconds: training, probing and "
                  "the exact recount. Neither holds the compile.</p>",
                  f"<p>Top-rule recall {recall:.0%}: {html.escape(metrics.get('neural_top_recall_definition', ''))}. "
                  f"It proposed {metrics['n_candidates_neural']:,} candidates; every reported rule's support and "
                  "confidence are recounted on the data.</p>"]
    write_page(path, spec, parts)
