"""The report's "Explanations" section: the material of ``explain.explain_run`` (top features by
integrated gradients and by permutation importance side by side, the per-class view of a
classifier, the surrogate tree's rules and fidelity)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from dlmine_ray.report.kit import fmt, plt, png, table

#: features shown in the section's table and plot
SHOWN = 15


def explanation_section(ex: dict) -> list[str]:
    """The section's HTML parts (opening with its <h2>) for ``ex``, the run's explanation material."""
    imp: pd.DataFrame = ex["importance"].head(SHOWN)
    sur = ex["surrogate"]
    parts = ["<h2>Explanations</h2>",
             f'<p class="muted">Integrated gradients (captum, {ex["steps"]} steps) on {ex["rows"]:,} test rows, '
             'from a baseline row with numeric columns at their training mean and each category at 1/k of its '
             'k; a '
             "categorical column's one-hot group is summed into one feature. Completeness gap (median over the "
             'rows of |sum of attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|): '
             f'<b>{fmt(ex["gap"])}</b>. Permutation importance: the rise of the model\'s loss (from '
             f'{fmt(ex["base_loss"])}) when a column is shuffled, {ex["permutation_rows"]:,} test rows, mean of '
             f'{ex["permutation_repeats"]} shuffles.</p>',
             "<h3>Top features</h3>", _bars(imp),
             table(imp[["feature", "ig_rank", "ig", "ig_share", "permutation_rank", "permutation",
                        "permutation_sd"]].rename(columns={"ig_rank": "IG rank", "ig": "IG mean |attribution|",
                                                           "ig_share": "IG share",
                                                           "permutation_rank": "permutation rank",
                                                           "permutation": "permutation: loss rise",
                                                           "permutation_sd": "sd"}), left=("feature",))]
    if ex.get("per_class") is not None:
        counts = ex.get("predicted_rows") or {}
        per = ex["per_class"].head(SHOWN).rename(columns={c: f"{c} ({counts[c]:,} rows)" for c in counts})
        parts += ["<h3>Per class</h3>",
                  '<p class="muted">Mean |attribution| of the predicted class\'s logit, over the explained rows '
                  "predicted as each class.</p>", table(per, left=("feature",))]
    parts += ["<h3>Surrogate rules</h3>",
              f'<p>A decision tree of depth {sur["depth"]} fitted to the deep model\'s predictions on '
              f'{sur["rows_fit"]:,} training rows (numeric columns in their original units). Fidelity, its '
              f'agreement with the deep model on {sur["rows_test"]:,} test rows ({html.escape(sur["metric"])}): '
              f'<b>{fmt(sur["fidelity"])}</b>.</p>',
              table(pd.DataFrame(sur["leaf_rules"]).rename(columns={"share": "share of rows"}),
                    left=("rule", "then"))]
    return parts


def _bars(imp: pd.DataFrame) -> str:
    """An <img>: the top features' IG and permutation importance, side by side, as shares of their totals."""
    if imp.empty:
        return ""
    names = imp["feature"].astype(str).tolist()[::-1]
    fig, axes = plt().subplots(1, 2, figsize=(10, 0.9 + 0.3 * len(names)), sharey=True)
    for ax, col, title in ((axes[0], "ig", "integrated gradients: mean |attribution|"),
                           (axes[1], "permutation", "permutation: loss rise")):
        v = imp[col].to_numpy(float)[::-1]
        ax.barh(np.arange(len(names)), v)
        ax.set_title(title, fontsize=10)
        ax.axvline(0, color="grey", lw=0.8)
    axes[0].set_yticks(np.arange(len(names)), names)
    fig.tight_layout()
    return png(fig)
