"""Neural rule mining (the approach of Aerial, Karabulut et al. 2024): an autoencoder over the
one-hot item vectors of transactions, trained with the generic loop; rules are read from it by
probing with partial item vectors: the antecedent's items are marked present, every other item
is set to its frequency in the data (nothing known about it), and A -> c is a candidate when the
reconstruction keeps A (every antecedent item's output >= ``antecedent_threshold``) and predicts
c with probability >= ``threshold``. The number of probes grows with the number of items (and
pairs of items for two-item antecedents), not with the number of itemsets. Candidates are only
candidates: the runner recounts every rule's support and confidence exactly on the data."""

from __future__ import annotations

import html
from itertools import combinations
from typing import Literal, Optional, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from dlmine_ray.tasks.base import Options, Task


class RulesOptions(Options):
    """Association rules: exact frequent itemsets by parallel FP-Growth, then rules."""

    min_support: Union[int, float] = Field(0.01, description="a fraction of transactions in (0, 1], or a count "
                                                             "(an integer >= 1)")
    max_len: Optional[int] = Field(None, ge=1, description="largest itemset; default: no limit")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    min_lift: float = Field(1.0, ge=0.0, description="keep rules whose lift is above this; a rule whose lift is at "
                                                     "most 1 is not an association (0: every rule)")
    max_rules: Optional[int] = Field(1_000_000, ge=1, description="keep at most this many rules, those of highest "
                                                                  "lift (the run says when it cuts); null: all")
    groups: Optional[int] = Field(None, ge=1, description="item groups mined in parallel; default: the "
                                                         "cluster's CPUs")
    top: int = Field(20, ge=1, description="rules shown in the report")
    miner: Literal["exact", "neural", "both"] = Field(
        "exact", description="exact: parallel FP-Growth (small input: in the driver); neural: an autoencoder probed for rules (Aerial), "
                             "every rule recounted exactly; both: both, compared in the report")
    neural_antecedent: int = Field(2, ge=1, le=3, description="neural: largest antecedent probed")
    neural_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="neural: the probability the reconstruction "
                                                                     "must give the consequent")
    neural_sample: int = Field(200_000, ge=1, description="neural: the autoencoder trains on at most about this "
                                                          "many transactions (a random sample; the recount uses all)")

    @field_validator("min_support", mode="before")
    @classmethod
    def _support(cls, v):
        bad = ValueError(f"rules.min_support must be a fraction in (0, 1] or a count of transactions (an integer "
                         f">= 1), got {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad
        if isinstance(v, int):
            if v < 1:
                raise bad
            return v
        if 0.0 < v <= 1.0:
            return float(v)
        if v > 1.0 and float(v).is_integer():
            return int(v)
        raise bad


class RulesTask(Task):
    """Frequent itemsets and association rules of transactions; the deep model (with ``miner``
    neural or both) is an item autoencoder trained with the same loop."""

    name = "rules"
    data_kind = "transactions"
    options = RulesOptions
    data_fields = ("items", "transaction")
    baseline_name = "exact FP-Growth"
    headline = ("n_itemsets", "n_rules")

    def runs_in_driver(self, spec):
        # the exact miner mines small input in the driver; the neural one trains through Ray
        return spec.rules.miner == "exact"

    def check_spec(self, spec):
        d = spec.data
        if d.transaction is not None and d.items is None:
            raise ValueError("data.transaction needs data.items: the column holding one item per row")

    def target_torch_dtype(self):
        return torch.int8

    def build_model(self, n_features, info, model_spec):
        from dlmine_ray.models.autoencoder import AutoEncoder

        return AutoEncoder(n_features, model_spec["hidden"], model_spec["latent"], model_spec["dropout"])

    def initial_info(self, spec, feature_names, target_info):
        return {"feature_names": list(feature_names), "drop": 0.2}

    def step_loss(self, model, x, y, stage, ctx):
        # denoising: hide a fifth of each basket's items; the model must bring them back
        keep = (torch.rand_like(x) >= ctx["info"].get("drop", 0.2)).to(x.dtype)
        return F.binary_cross_entropy_with_logits(model(x * keep), x)

    def eval_sums(self, model, x, y, stage, ctx):
        loss = F.binary_cross_entropy_with_logits(model(x), x, reduction="none").mean(dim=1).sum().item()
        return {"loss_sum": loss, "n": float(x.shape[0])}

    def propose_rules(self, model, priors: np.ndarray, spec) -> list[tuple[tuple, int]]:
        """Candidate rules (antecedent item indices, consequent index) read from the trained
        autoencoder (``candidate_rules``); the pipeline recounts each exactly."""
        return candidate_rules(model, priors, spec.rules.neural_antecedent, spec.rules.neural_threshold)

    # -- what the user sees ------------------------------------------------------------------------
    def summary_text(self, m):
        return (f"{m['n_transactions']:,} transactions, {m['n_frequent_items']:,} frequent items, "
                f"{m['n_itemsets']:,} itemsets, {m['n_rules']:,} rules in {m['mining_seconds']:.1f}s")

    def scale_text(self, m):
        return f"{m['n_transactions']:,} transactions"

    def header_html(self, spec, info, metrics, profile, trials=0):
        r = spec.rules
        return (f'<p class="muted">task <b>rules</b> · {metrics["n_transactions"]:,} transactions · '
                f'{metrics["n_items"]:,} distinct items · min_support {r.min_support} ({metrics["min_count"]:,} '
                f'transactions) · min_confidence {r.min_confidence} · lift above {r.min_lift} · at most '
                f'{r.max_rules if r.max_rules is not None else "all"} rules kept</p>')

    def report_sections(self, spec, metrics, material, info):
        """The numbers, the ``top`` rules by lift (rows of rules.parquet), a support-confidence plot
        of ``points`` (support, confidence, lift: all rules or a sample), the cut by max_rules and,
        with ``miner: both``, the comparison of the two miners."""
        from dlmine_ray.report.kit import table

        r = spec.rules
        top, points = material.get("top", pd.DataFrame()), material.get("points")
        parts = []
        if metrics.get("message"):
            parts.append(f"<p><b>{html.escape(metrics['message'])}</b>: lower rules.min_support.</p>")
        if metrics.get("rules_truncated"):
            parts.append(f"<p><b>{html.escape(metrics.get('rules_message', 'rules.max_rules cut the output'))}"
                         "</b>.</p>")
        nums = pd.DataFrame([{"what": k, "value": v} for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)])
        parts += ["<h2>Numbers</h2>", table(nums, left=("what",)),
                  f"<p>Seconds exclude the one-off compile of the local miner (compile_seconds "
                  f"{metrics.get('compile_seconds', float('nan')):.1f}: numba compiles it the first time after an "
                  "install and loads it from its cache later), and the writing of the output files.</p>"]
        if len(top):
            top = top.copy()
            top["antecedent"] = top["antecedent"].map(lambda v: ", ".join(v))
            top["consequent"] = top["consequent"].map(lambda v: ", ".join(v))
            top["conviction"] = top["conviction"].replace(np.inf, np.nan)
            parts += [f"<h2>Top {len(top)} rules by lift</h2>",
                      "<p>conviction is shown as – where the confidence is 1 (infinite).</p>",
                      table(top[["antecedent", "consequent", "support", "confidence", "lift", "leverage",
                                 "conviction"]], left=("antecedent", "consequent")),
                      "<h2>Support and confidence</h2>", _scatter(points, metrics["n_rules"])]
        if r.miner == "both" and "n_rules_neural" in metrics:
            cmp = pd.DataFrame([
                {"miner": "exact (parallel FP-Growth)", "rules": metrics["n_rules"],
                 "seconds": metrics["mining_seconds"]},
                {"miner": "neural (autoencoder, recounted)", "rules": metrics["n_rules_neural"],
                 "seconds": metrics["neural_seconds"]}])
            recall = metrics.get("neural_top_recall", float("nan"))
            parts += ["<h2>Neural miner vs exact miner</h2>", table(cmp, left=("miner",)),
                      "<p>Exact seconds: counting, mining and rule generation; neural seconds: training, probing "
                      "and the exact recount. Neither holds the compile.</p>",
                      f"<p>Top-rule recall {recall:.0%}: "
                      f"{html.escape(metrics.get('neural_top_recall_definition', ''))}. It proposed "
                      f"{metrics['n_candidates_neural']:,} candidates; every reported rule's support and "
                      "confidence are recounted on the data.</p>"]
        return parts


def _scatter(points: pd.DataFrame, n_rules: int) -> str:
    """An <img>: support against confidence of the plotted rules, coloured by lift."""
    from dlmine_ray.report.kit import plt, png

    fig, ax = plt().subplots(figsize=(6.5, 4))
    sc = ax.scatter(points["support"], points["confidence"], c=points["lift"], s=8, cmap="viridis", alpha=0.8)
    fig.colorbar(sc, ax=ax, label="lift")
    ax.set_xscale("log")
    ax.set_xlabel("support")
    ax.set_ylabel("confidence")
    ax.set_title(f"{n_rules:,} rules" + (f" ({len(points):,} shown, a random sample)" if len(points) < n_rules
                                         else ""))
    return png(fig)


def candidate_rules(model: torch.nn.Module, priors: np.ndarray, max_antecedent: int, threshold: float,
                    antecedent_threshold: float = 0.5, batch_size: int = 4096) -> list[tuple[tuple, int]]:
    """(antecedent item indices, consequent item index) pairs the trained autoencoder proposes."""
    n = len(priors)
    antecedents = [a for k in range(1, max_antecedent + 1) for a in combinations(range(n), k)]
    out: list[tuple[tuple, int]] = []
    model.eval()
    base = torch.from_numpy(np.asarray(priors, dtype=np.float32))
    with torch.no_grad():
        for i in range(0, len(antecedents), batch_size):
            chunk = antecedents[i:i + batch_size]
            x = base.repeat(len(chunk), 1)
            for row, a in enumerate(chunk):
                x[row, list(a)] = 1.0
            p = torch.sigmoid(model(x)).numpy()
            for row, a in enumerate(chunk):
                if p[row, list(a)].min() < antecedent_threshold:
                    continue
                for c in np.nonzero(p[row] >= threshold)[0]:
                    if c not in a:
                        out.append((a, int(c)))
    return out
