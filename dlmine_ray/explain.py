"""Explanations of a trained deep model: what a run of a task that ``explains`` (classify, regress)
adds to its metrics and report, and what ``dlmine explain`` writes per row. A task-agnostic layer
over the plain torch module of a model folder (``infer.LoadedModel``), run in the driver.

- Integrated gradients (captum) of the output that the task says each row's explanation
  attributes (``Task.explained_output``: the predicted class's logit, or the one value), from one
  fixed baseline row: every numeric column at its training mean (0 once standardised) and every
  one-hot group at 1/k for each of its k categories. The uniform group is chosen over the all-zero
  one (an unknown category), whose attribution would carry the input weights' common part, a bias
  that moves the output for every row whatever the category; and it needs no saved state (unlike
  category frequencies), so a run and a later ``dlmine explain`` attribute from the same point.
  The attributions of a categorical column's one-hot group
  are summed into one number per original column, which keeps completeness (a row's attributions
  add up to f(x) - f(baseline)); how far they miss, relative to that difference, is the
  completeness gap.
- Permutation importance on test rows: the rise of the task's own loss (``Task.eval_sums``) when
  one original column (a one-hot group together) is shuffled across rows.
- A surrogate decision tree fitted to the deep model's predictions on training rows, with numeric
  columns back in their original units, written as rules; its fidelity is its agreement with the
  deep model on test rows (accuracy for classes, R^2 for values).

Costs are bounded, whatever the size of the data, by the job's ``explain:`` fields
(``spec.ExplainSpec``: rows, ig_steps, permutation_rows and _repeats, surrogate_rows and _depth).
``dlmine explain`` integrates over their default steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from dlmine_ray.spec import ExplainSpec

#: where no job says: the defaults of its ``explain.ig_steps`` (integrated gradients' Gauss-Legendre
#: steps), ``explain.permutation_repeats`` and ``explain.surrogate_depth``
IG_STEPS = ExplainSpec.model_fields["ig_steps"].default
PERMUTATION_REPEATS = ExplainSpec.model_fields["permutation_repeats"].default
SURROGATE_DEPTH = ExplainSpec.model_fields["surrogate_depth"].default
#: the rows of one integrated-gradients step batch
IG_CHUNK = 64
#: how many top features metrics.json names
TOP = 5


@dataclass
class Layout:
    """The original columns behind the encoded features: ``columns`` in order, ``groups[i]`` the
    encoded positions of column i (one for a numeric column, its one-hot group for a categorical
    one), ``units[j]`` (mean, std) of each standardised numeric position, ``onehot[j]`` (column,
    value) of each one-hot position."""

    columns: list[str]
    groups: list[np.ndarray]
    units: dict[int, tuple[float, float]] = field(default_factory=dict)
    onehot: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: the baseline's values of the augmented positions (``augment``), which follow the encoded ones
    augmented: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    @classmethod
    def of(cls, prep) -> "Layout":
        """The layout of a fitted ``TabularPreprocessor`` (numeric columns first, then one-hot groups,
        as ``transform_features`` writes them)."""
        out = cls([], [])
        j = 0
        for c, mean, std in prep.numeric_:
            out.columns.append(c)
            out.groups.append(np.array([j]))
            out.units[j] = (float(mean), float(std))
            j += 1
        for c, cats in prep.categorical_:
            out.columns.append(c)
            out.groups.append(np.arange(j, j + len(cats)))
            out.onehot.update({j + k: (c, v) for k, v in enumerate(cats)})
            j += len(cats)
        if prep.augment_ is not None:
            # each mined column is a model input of its own, attributed from the mined features
            # of the baseline row (a function of the encoded columns, not differentiable)
            encoded_base = out.baseline()
            out.augmented = prep.augment_.transform(encoded_base[None])[0]
            for k, name in enumerate(prep.augment_.names_):
                out.columns.append(name)
                out.groups.append(np.array([j + k]))
        return out

    def baseline(self) -> np.ndarray:
        """The encoded row attributions start from: 0 (the training mean) for a numeric position,
        1/k in a one-hot group of k, and the mined features of that row at augmented positions."""
        out = np.zeros(sum(len(g) for g in self.groups), dtype=np.float32)
        for g in self.groups:
            if g[0] in self.onehot:
                out[g] = 1.0 / len(g)
        if len(self.augmented):
            out[len(out) - len(self.augmented):] = self.augmented
        return out

    def grouped(self, a: np.ndarray) -> np.ndarray:
        """Encoded attributions (rows, encoded features) summed per original column: (rows, columns)."""
        return np.column_stack([a[:, g].sum(axis=1) for g in self.groups]) if self.groups else a[:, :0]

    def decoded(self, x: np.ndarray) -> np.ndarray:
        """Encoded rows with numeric columns back in original units (one-hot columns stay 0/1)."""
        out = np.array(x, dtype=np.float64, copy=True)
        for j, (mean, std) in self.units.items():
            out[:, j] = out[:, j] * std + mean
        return out


class Explainer:
    """A loaded model (``infer.LoadedModel``) and its task, ready to explain encoded rows."""

    def __init__(self, loaded):
        self.model = loaded.model.cpu().eval()
        self.task = loaded.task
        self.info = loaded.info
        self.layout = Layout.of(loaded.prep)
        self.labels = self.task.output_labels(self.info)
        self.stage = (loaded.meta.get("stages") or ["fit"])[-1]

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's raw outputs for encoded rows."""
        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """The task's ``prediction`` column for raw outputs (a class as text, or a value)."""
        p = np.asarray(self.task.predict_columns(outputs, self.info)["prediction"])
        return p.astype(str) if self.labels is not None else p.astype(np.float64)

    def attributions(self, x: np.ndarray, n_steps: int = IG_STEPS) -> dict[str, np.ndarray]:
        """Integrated gradients of encoded rows ``x``: ``attr`` (rows, original columns), ``target``
        (the attributed output of each row), ``outputs`` (raw), ``gap`` (each row's |sum of
        attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|)."""
        from captum.attr import IntegratedGradients

        x = np.asarray(x, dtype=np.float32)
        outputs = self.outputs(x)
        target = self.task.explained_output(outputs, self.info)
        base = self.layout.baseline()
        base_out = self.outputs(base[None, :])[0]
        ig = IntegratedGradients(self.model)
        parts, deltas = [], []
        for s in range(0, len(x), IG_CHUNK):
            xi = torch.from_numpy(x[s:s + IG_CHUNK])
            a, d = ig.attribute(xi, baselines=torch.from_numpy(base)[None, :].expand_as(xi),
                                target=torch.from_numpy(target[s:s + IG_CHUNK]), n_steps=n_steps,
                                internal_batch_size=IG_CHUNK * n_steps, return_convergence_delta=True)
            parts.append(a.detach().double().numpy())
            deltas.append(d.detach().double().numpy())
        a = np.concatenate(parts) if parts else np.zeros((0, x.shape[1]))
        delta = np.concatenate(deltas) if deltas else np.zeros(0)
        diff = outputs[np.arange(len(x)), target].astype(np.float64) - base_out[target]
        gap = np.abs(delta) / np.maximum(np.abs(diff), 1e-12)
        return {"attr": self.layout.grouped(a), "target": target, "outputs": outputs, "gap": gap}

    def permutation(self, x: np.ndarray, y: np.ndarray, repeats: int = PERMUTATION_REPEATS,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
        """Permutation importance on encoded rows ``x`` with encoded targets ``y``: the mean and
        standard deviation over ``repeats`` of the rise of the task's loss when each original
        column is shuffled, and the loss unshuffled."""
        task, rng = self.task, np.random.default_rng(seed)
        target = torch.from_numpy(np.asarray(y)).to(task.target_torch_dtype())

        # the validation statistics of the model's last stage, as the loop computes them (a task may
        # define eval_sums without batch_sums)
        stage, ctx = self.stage, {"info": self.info, "epoch": None}

        def loss(rows: np.ndarray) -> float:
            with torch.no_grad():
                sums = task.eval_sums(self.model, torch.from_numpy(rows), target, stage, ctx)
            return sums["loss_sum"] / max(sums["n"], 1.0)

        x = np.asarray(x, dtype=np.float32)
        base = loss(x)
        rises = np.zeros((len(self.layout.groups), repeats))
        for i, g in enumerate(self.layout.groups):
            for r in range(repeats):
                shuffled = x.copy()
                shuffled[:, g] = x[rng.permutation(len(x))][:, g]  # a one-hot group moves together
                rises[i, r] = loss(shuffled) - base
        return rises.mean(axis=1), rises.std(axis=1), base

    def surrogate(self, x_fit: np.ndarray, x_test: np.ndarray, depth: int = SURROGATE_DEPTH,
                  seed: int = 0) -> dict[str, Any]:
        """A decision tree of ``depth`` fitted to the deep model's predictions on encoded rows
        ``x_fit`` (numeric columns in original units): its ``leaf_rules`` (a list of dicts: rule, then,
        rows, share of the rows, and purity for classes), its ``fidelity`` on ``x_test`` (accuracy of
        the tree against the deep model for classes, R^2 for values) and the ``metric``'s name."""
        from sklearn.metrics import accuracy_score, r2_score
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        classes = self.labels is not None
        kind = DecisionTreeClassifier if classes else DecisionTreeRegressor
        tree = kind(max_depth=depth, min_samples_leaf=max(5, len(x_fit) // 100), random_state=seed)
        tree.fit(self.layout.decoded(x_fit), self.predictions(self.outputs(x_fit)))
        deep_test = self.predictions(self.outputs(x_test))
        tree_test = tree.predict(self.layout.decoded(x_test))
        if classes:
            fidelity, metric = float(accuracy_score(deep_test, tree_test)), "accuracy"
        else:
            fidelity = float(r2_score(deep_test, tree_test)) if len(x_test) > 1 else float("nan")
            metric = "r2"
        return {"leaf_rules": tree_rules(tree, self.layout, classes), "fidelity": fidelity, "metric": metric,
                "depth": depth, "rows_fit": int(len(x_fit)), "rows_test": int(len(x_test))}


def tree_rules(tree, layout: Layout, classes: bool) -> list[dict[str, Any]]:
    """The leaves of a fitted sklearn tree as readable rules, the largest leaf first: each leaf's
    path with the bounds of a numeric column merged ('0.5 < a <= 2') and one-hot splits written as
    'color = red' / 'color not in {red, blue}'."""
    t = tree.tree_
    total = float(t.n_node_samples[0])
    out = []

    def walk(node: int, path: list[tuple[int, bool, float]]):
        if t.children_left[node] == -1:
            value = t.value[node][0]
            if classes:
                then, purity = str(tree.classes_[int(np.argmax(value))]), float(value.max() / value.sum())
            else:
                then, purity = f"{float(value[0]):.4g}", None
            out.append({"rule": _conditions(path, layout), "then": then, "rows": int(t.n_node_samples[node]),
                        "share": float(t.n_node_samples[node] / total),
                        **({"purity": purity} if purity is not None else {})})
            return
        j, thr = int(t.feature[node]), float(t.threshold[node])
        walk(int(t.children_left[node]), path + [(j, False, thr)])
        walk(int(t.children_right[node]), path + [(j, True, thr)])

    walk(0, [])
    return sorted(out, key=lambda r: -r["rows"])


def _conditions(path: list[tuple[int, bool, float]], layout: Layout) -> str:
    """'a > 0.5 and color = red' for a tree path of (encoded position, went right, threshold)."""
    numeric: dict[str, list] = {}  # column -> [low, high]
    equal: dict[str, str] = {}
    not_in: dict[str, list[str]] = {}
    names = {j: layout.columns[i] for i, g in enumerate(layout.groups) for j in g}
    order: list[str] = []
    for j, right, thr in path:
        col = names[j]
        if col not in order:
            order.append(col)
        if j in layout.onehot:
            value = layout.onehot[j][1]
            if right:  # the indicator is 1
                equal[col] = value
            else:
                not_in.setdefault(col, []).append(value)
        else:
            lo_hi = numeric.setdefault(col, [None, None])
            if right:
                lo_hi[0] = thr if lo_hi[0] is None else max(lo_hi[0], thr)
            else:
                lo_hi[1] = thr if lo_hi[1] is None else min(lo_hi[1], thr)
    parts = []
    for col in order:
        if col in numeric:
            lo, hi = numeric[col]
            parts.append(f"{lo:.4g} < {col} <= {hi:.4g}" if lo is not None and hi is not None
                         else f"{col} > {lo:.4g}" if lo is not None else f"{col} <= {hi:.4g}")
        elif col in equal:
            parts.append(f"{col} = {equal[col]}")
        else:
            vals = not_in[col]
            parts.append(f"{col} != {vals[0]}" if len(vals) == 1 else f"{col} not in {{{', '.join(vals)}}}")
    return " and ".join(parts) or "always"


@dataclass
class Explanation:
    """What a run adds: ``metrics`` for metrics.json (small) and ``report`` material for report.html."""

    metrics: dict[str, Any]
    report: dict[str, Any]


def explain_run(loaded, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int = 0,
                settings: Optional[ExplainSpec] = None) -> Optional[Explanation]:
    """Explain a run's model (``infer.LoadedModel``) from encoded samples, sized by ``settings``
    (the job's ``explain:``; default its defaults): training rows (the surrogate's, all of them),
    test rows with their encoded targets (integrated gradients on up to ``settings.rows`` of them,
    permutation importance and the surrogate's fidelity on up to ``settings.permutation_rows``).
    None when there are no test rows."""
    if len(x_test) == 0 or len(x_train) == 0:
        return None
    s = settings if settings is not None else ExplainSpec()
    ex = Explainer(loaded)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x_test), min(s.rows, len(x_test)), replace=False))
    ig = ex.attributions(x_test[pick], s.ig_steps)
    if len(x_test) > s.permutation_rows:  # the test sample also served integrated gradients' rows
        part = np.sort(rng.choice(len(x_test), s.permutation_rows, replace=False))
        x_test, y_test = x_test[part], y_test[part]
    perm, perm_sd, base_loss = ex.permutation(x_test, y_test, s.permutation_repeats, seed=seed)
    sur = ex.surrogate(x_train, x_test, s.surrogate_depth, seed=seed)

    cols = ex.layout.columns
    ig_mean = np.abs(ig["attr"]).mean(axis=0)
    table = pd.DataFrame({"feature": cols, "ig": ig_mean, "ig_share": ig_mean / max(ig_mean.sum(), 1e-12),
                          "permutation": perm, "permutation_sd": perm_sd})
    table["ig_rank"] = table["ig"].rank(ascending=False, method="first").astype(int)
    table["permutation_rank"] = table["permutation"].rank(ascending=False, method="first").astype(int)
    table = table.sort_values("ig_rank").reset_index(drop=True)
    per_class = None
    if ex.labels is not None:  # mean |attribution| of the rows predicted as each class
        per_class = pd.DataFrame({"feature": cols})
        for k, label in enumerate(ex.labels):
            rows = ig["target"] == k
            per_class[str(label)] = np.abs(ig["attr"][rows]).mean(axis=0) if rows.any() else np.nan
        per_class = per_class.set_index("feature").loc[table["feature"]].reset_index()
    gap = float(np.median(ig["gap"]))
    by_perm = table.sort_values("permutation_rank")["feature"]
    metrics = {"explained_rows": int(len(pick)), "ig_completeness_gap": gap,
               "surrogate_fidelity": sur["fidelity"], "surrogate_fidelity_metric": sur["metric"],
               "surrogate_rules": [f"if {r['rule']} then {r['then']}" for r in sur["leaf_rules"]],
               "top_features_ig": list(table["feature"][:TOP]), "top_features_permutation": list(by_perm[:TOP])}
    report = {"rows": int(len(pick)), "steps": s.ig_steps, "gap": gap, "importance": table, "per_class": per_class,
              "predicted_rows": ({str(label): int((ig["target"] == k).sum()) for k, label in enumerate(ex.labels)}
                                 if ex.labels is not None else None),
              "permutation_rows": int(len(x_test)), "permutation_repeats": s.permutation_repeats,
              "base_loss": base_loss, "surrogate": sur}
    return Explanation(metrics, report)


def explain_frame(loaded, df: pd.DataFrame, n_steps: int = IG_STEPS) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-row attributions of raw rows ``df`` (preprocessed as for scoring): a frame with
    ``prediction`` and one column per original feature, and each row's completeness gap."""
    ex = Explainer(loaded)
    x = loaded.prep.transform_features(df)
    ig = ex.attributions(x, n_steps)
    out = pd.DataFrame({"prediction": loaded.task.predict_columns(ig["outputs"], loaded.info)["prediction"]})
    attr = pd.DataFrame(ig["attr"], columns=ex.layout.columns)
    return pd.concat([out, attr], axis=1), ig["gap"]
