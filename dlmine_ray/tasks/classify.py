"""Classification: a class and its probabilities per row."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import SupervisedTask


def _proba_column(cls) -> str:
    return f"proba_{cls}"


class ClassifyTask(SupervisedTask):
    name = "classify"
    target_kind = "categorical"
    val_metrics = {"val_loss": "min", "val_accuracy": "max"}
    metric_modes = {"accuracy": "max", "f1_macro": "max", "roc_auc": "max", "log_loss": "min"}
    headline = ("accuracy", "roc_auc")

    def check_data(self, profile, spec, trainable):
        target = spec.data.target
        st = profile.columns[target]
        if st.nonfinite:
            raise DlmineError(f"target column '{target}' has {st.nonfinite} infinite values")
        if len(st.all_counts) < 2:
            only = next(iter(st.all_counts), None)
            raise DlmineError(f"target column '{target}' has only one class ({only!r}); classification needs two "
                              "or more")
        if len(profile.target_by_split[0]) < 2:
            raise DlmineError(f"target column '{target}' has only one class in the training split")
        for i, split in ((1, "validation"), (2, "test")):
            unseen = [c for c in profile.target_by_split[i] if c not in profile.target_by_split[0]]
            if unseen:  # the model cannot predict them, and its metrics could not say so
                shown = ", ".join(repr(str(c)) for c in unseen[:3]) + (", ..." if len(unseen) > 3 else "")
                raise DlmineError(f"target column '{target}' has {len(unseen)} class(es) in the {split} split that the "
                                  f"training split lacks ({shown}); classes need training rows: merge or drop rare "
                                  "classes, or change data.split")

    def target_torch_dtype(self):
        return torch.int64

    def output_dim(self, info):
        return len(info["classes"])

    def loss(self, outputs, target):
        return F.cross_entropy(outputs, target)

    def batch_sums(self, outputs, target):
        loss = F.cross_entropy(outputs, target, reduction="sum").item()
        correct = (outputs.argmax(dim=1) == target).sum().item()
        return {"loss_sum": loss, "correct": float(correct), "n": float(target.shape[0])}

    def epoch_metrics(self, sums, info):
        n = max(sums["n"], 1.0)
        return {"val_loss": sums["loss_sum"] / n, "val_accuracy": sums["correct"] / n}

    def predict_columns(self, outputs, info):
        classes = info["classes"]
        z = outputs - outputs.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        cols = {"prediction": np.asarray(classes, dtype=object)[p.argmax(axis=1)]}
        if all(isinstance(c, (int, np.integer)) for c in classes):
            cols["prediction"] = cols["prediction"].astype(np.int64)
        for j, c in enumerate(classes):
            cols[_proba_column(c)] = p[:, j].astype(np.float32)
        return cols

    def explained_output(self, outputs, info):
        # the predicted class's logit: what made the model choose the class it chose
        return np.asarray(outputs).argmax(axis=1).astype(np.int64)

    def output_labels(self, info):
        return list(info["classes"])

    def test_metrics(self, y_true, pred, info):
        classes = info["classes"]
        return _classification_metrics(np.asarray(y_true), pred["prediction"].to_numpy(), _proba(pred, classes),
                                       classes)

    def bootstrap_scorer(self, y_true, pred, info):
        """accuracy, f1_macro, log_loss and roc_auc of each weighted draw of the test rows."""
        from dlmine_ray.tasks import bootstrap as bs

        classes = info["classes"]
        y = _class_indices(y_true, classes)
        guess = _class_indices(pred["prediction"].to_numpy(), classes)
        proba = _normalised(_proba(pred, classes))
        p_true = proba[np.arange(len(y)), y]
        present = np.unique(y)
        labels = np.union1d(present, np.unique(guess))
        rankings = y_present = None
        if len(present) >= 2:  # the same classes as the point estimate: those of the test split
            p = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
            rankings, y_present = bs.ovr_rankings(p), np.searchsorted(present, y)

        def score(w):
            out = {"accuracy": bs.accuracy(w, y, guess), "f1_macro": bs.f1_macro(w, y, guess, labels),
                   "log_loss": bs.log_loss(w, p_true)}
            if rankings is not None:
                out["roc_auc"] = bs.macro_ovr_auc(w, y_present, rankings)
            return out

        return score

    def weighted_score(self, w, outputs, y):
        from dlmine_ray.tasks.bootstrap import accuracy

        return accuracy(w, np.asarray(y).astype(np.int64), outputs.argmax(axis=1))

    def fit_baseline(self, x_train, y_train, info, spec):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=spec.train.seed).fit(x_train, y_train)

    def baseline_predict(self, baseline, x, info):
        proba_present = baseline.predict_proba(x)
        classes = info["classes"]
        proba = np.zeros((x.shape[0], len(classes)))
        proba[:, baseline.classes_.astype(int)] = proba_present
        cols = {"prediction": np.asarray(classes, dtype=object)[proba.argmax(axis=1)]}
        cols.update({_proba_column(c): proba[:, j] for j, c in enumerate(classes)})
        return cols

    def baseline_outputs(self, baseline, x, info):
        proba = np.zeros((x.shape[0], len(info["classes"])))
        proba[:, baseline.classes_.astype(int)] = baseline.predict_proba(x)
        return np.log(np.clip(proba, 1e-12, 1.0)).astype(np.float32)

    def report_sections(self, spec, metrics, material, info):
        pred = material.get("predictions")
        if pred is None:
            return []
        return ["<h2>Test predictions</h2>", "<h3>Confusion matrix</h3>" + _confusion(pred, spec.data.target,
                                                                                   info["classes"])]


def _class_indices(values, classes) -> np.ndarray:
    """The position in ``classes`` of each value (compared as text, as labels are written)."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in np.asarray(values, dtype=object)], dtype=np.int64)


def _proba(pred, classes) -> np.ndarray:
    return np.column_stack([np.asarray(pred[_proba_column(c)], dtype=np.float64) for c in classes])


def _normalised(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(proba, 1e-12, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def _classification_metrics(y_true, y_pred, proba, classes) -> dict[str, float]:
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    out = {
        "accuracy": float(skm.accuracy_score(y_true.astype(str), y_pred.astype(str))),
        "f1_macro": float(skm.f1_score(y_true.astype(str), y_pred.astype(str), average="macro")),
    }
    y_idx = _class_indices(y_true, classes)
    proba = _normalised(proba)
    out["log_loss"] = float(skm.log_loss(y_idx, proba, labels=list(range(len(classes)))))
    present = np.unique(y_idx)
    if len(present) < 2:
        out["roc_auc"] = float("nan")
    elif len(classes) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_idx, proba[:, 1]))
    else:
        # macro one-vs-rest over the classes present in the test split
        p = proba[:, present]
        p = p / p.sum(axis=1, keepdims=True)
        remap = {c: i for i, c in enumerate(present)}
        out["roc_auc"] = float(skm.roc_auc_score(np.array([remap[v] for v in y_idx]), p,
                                                 multi_class="ovr", average="macro"))
    return out


def _confusion(pred, target: str, classes: list) -> str:
    """An <img>: the test split's confusion matrix."""
    from sklearn.metrics import confusion_matrix

    from dlmine_ray.report.kit import plt, png

    labels = [str(c) for c in classes]
    cm = confusion_matrix(pred[target].astype(str), pred["prediction"].astype(str), labels=labels)
    size = min(9.0, 2.5 + 0.45 * len(labels))
    fig, ax = plt().subplots(figsize=(size, size * 0.85))
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
    return png(fig)
