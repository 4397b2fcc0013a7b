"""Neural rule mining (the approach of Aerial, Karabulut et al. 2024): an autoencoder over the
one-hot item vectors of transactions, trained with the generic loop; rules are read from it by
probing with partial item vectors: the antecedent's items are marked present, every other item
is set to its frequency in the data (nothing known about it), and A -> c is a candidate when the
reconstruction keeps A (every antecedent item's output >= ``antecedent_threshold``) and predicts
c with probability >= ``threshold``. The number of probes grows with the number of items (and
pairs of items for two-item antecedents), not with the number of itemsets. Candidates are only
candidates: the runner recounts every rule's support and confidence exactly on the data."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from dlmine_ray.tasks.unsupervised import UnsupervisedTask


class RulesTask(UnsupervisedTask):
    name = "rules"
    baseline_name = "exact FP-Growth"
    result_file = "rules.parquet"

    def build_model(self, n_features, info, model_spec):
        from dlmine_ray.models.autoencoder import AutoEncoder

        return AutoEncoder(n_features, model_spec["hidden"], model_spec["latent"], model_spec["dropout"])

    def initial_info(self, spec, feature_names):
        return {"feature_names": list(feature_names), "drop": 0.2}

    def step_loss(self, model, x, y, stage, ctx):
        # denoising: hide a fifth of each basket's items; the model must bring them back
        keep = (torch.rand_like(x) >= ctx["info"].get("drop", 0.2)).to(x.dtype)
        return F.binary_cross_entropy_with_logits(model(x * keep), x)

    def eval_sums(self, model, x, y, stage, ctx):
        loss = F.binary_cross_entropy_with_logits(model(x), x, reduction="none").mean(dim=1).sum().item()
        return {"loss_sum": loss, "n": float(x.shape[0])}


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
