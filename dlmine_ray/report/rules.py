"""report.html for the rules task: the numbers, the top rules, a support-confidence plot."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from dlmine_ray.report.html import _png, _table, write_page


def _scatter(rules: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = rules if len(rules) <= 20000 else rules.sample(20000, random_state=0)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sc = ax.scatter(r["support"], r["confidence"], c=r["lift"], s=8, cmap="viridis", alpha=0.8)
    fig.colorbar(sc, ax=ax, label="lift")
    ax.set_xscale("log")
    ax.set_xlabel("support")
    ax.set_ylabel("confidence")
    ax.set_title(f"{len(rules):,} rules" + (" (20,000 shown)" if len(rules) > 20000 else ""))
    return _png(fig)


def write_rules_report(path: Path, spec, metrics: dict, rules: pd.DataFrame, neural=None) -> None:
    """Write the run's report page to ``path`` (atomically)."""
    r = spec.rules
    parts = [f"<h1>{html.escape(spec.name)}</h1>",
             f'<p class="muted">task <b>rules</b> · {metrics["n_transactions"]:,} transactions · '
             f'{metrics["n_items"]:,} distinct items · min_support {r.min_support} ({metrics["min_count"]:,} '
             f'transactions) · min_confidence {r.min_confidence}</p>']
    if metrics.get("message"):
        parts.append(f"<p><b>{html.escape(metrics['message'])}</b>: lower rules.min_support.</p>")
    nums = pd.DataFrame([{"what": k, "value": v} for k, v in metrics.items() if isinstance(v, (int, float))])
    parts += ["<h2>Numbers</h2>", _table(nums, left=("what",))]
    if len(rules):
        top = rules.head(r.top).copy()
        top["antecedent"] = top["antecedent"].map(lambda v: ", ".join(v))
        top["consequent"] = top["consequent"].map(lambda v: ", ".join(v))
        top["conviction"] = top["conviction"].replace(np.inf, np.nan)
        parts += [f"<h2>Top {len(top)} rules by lift</h2>",
                  "<p>conviction is shown as – where the confidence is 1 (infinite).</p>",
                  _table(top[["antecedent", "consequent", "support", "confidence", "lift", "leverage", "conviction"]],
                         left=("antecedent", "consequent")),
                  "<h2>Support and confidence</h2>", _scatter(rules)]
    if neural is not None and spec.rules.miner == "both":
        cmp = pd.DataFrame([
            {"miner": "exact (parallel FP-Growth)", "rules": metrics["n_rules"], "seconds": metrics["mining_seconds"]},
            {"miner": "neural (autoencoder, recounted)", "rules": metrics["n_rules_neural"],
             "seconds": metrics["neural_seconds"]}])
        parts += ["<h2>Neural miner vs exact miner</h2>", _table(cmp, left=("miner",)),
                  f"<p>The neural miner found {metrics.get('neural_top_recall', float('nan')):.0%} of the exact "
                  f"miner's {spec.rules.top} strongest rules by lift among those of the form it can find (one "
                  f"consequent, at most {spec.rules.neural_antecedent} antecedent items). It proposed "
                  f"{metrics['n_candidates_neural']:,} candidates; every reported rule's support and confidence "
                  "are recounted on the data.</p>"]
    write_page(path, spec, parts)
