"""Regression (prediction): a value per row."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import SupervisedTask


class RegressTask(SupervisedTask):
    name = "regress"
    target_kind = "numeric"
    val_metrics = {"val_loss": "min", "val_rmse": "min"}
    metric_modes = {"rmse": "min", "mae": "min", "r2": "max"}
    headline = ("r2", "rmse")

    def check_data(self, profile, spec, trainable):
        target = spec.data.target
        st = profile.columns[target]
        if "nested" in st.dtypes or st.non_numeric:
            raise DlmineError(f"target column '{target}' must be numeric for task regress "
                              f"(found value '{st.example_bad}')")
        if st.nonfinite:
            raise DlmineError(f"target column '{target}' has {st.nonfinite} infinite values")
        if st.t_count and st.t_flat:
            raise DlmineError(f"target column '{target}' is constant in the training split")

    def output_dim(self, info):
        return 1

    def loss(self, outputs, target):
        return F.mse_loss(outputs.squeeze(-1), target)

    def batch_sums(self, outputs, target):
        sse = F.mse_loss(outputs.squeeze(-1), target, reduction="sum").item()
        return {"loss_sum": sse, "n": float(target.shape[0])}

    def epoch_metrics(self, sums, info):
        n = max(sums["n"], 1.0)
        mse = sums["loss_sum"] / n
        # the loop works in standardised target units; report RMSE in the target's own units
        return {"val_loss": mse, "val_rmse": float(np.sqrt(mse)) * info["target_std"]}

    def predict_columns(self, outputs, info):
        value = outputs[:, 0].astype(np.float64) * info["target_std"] + info["target_mean"]
        return {"prediction": value}

    def test_metrics(self, y_true, pred, info):
        return _regression_metrics(np.asarray(y_true, dtype=np.float64), pred["prediction"].to_numpy(np.float64))

    def bootstrap_scorer(self, y_true, pred, info):
        """rmse, mae and r2 of each weighted draw of the test rows."""
        from dlmine_ray.tasks.bootstrap import regression

        y, p = np.asarray(y_true, dtype=np.float64), np.asarray(pred["prediction"], dtype=np.float64)
        return lambda w: regression(w, y, p)

    def weighted_score(self, w, outputs, y):
        # r2 is the same in standardised target units as in the target's own
        from dlmine_ray.tasks.bootstrap import regression

        return regression(w, np.asarray(y, dtype=np.float64), outputs[:, 0].astype(np.float64))["r2"]

    def fit_baseline(self, x_train, y_train, info, spec):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=spec.train.seed).fit(x_train, y_train)

    def baseline_predict(self, baseline, x, info):
        return {"prediction": baseline.predict(x) * info["target_std"] + info["target_mean"]}

    def baseline_outputs(self, baseline, x, info):
        return baseline.predict(x).astype(np.float32)[:, None]

    def report_sections(self, spec, metrics, material, info):
        pred = material.get("predictions")
        if pred is None:
            return []
        return ["<h2>Test predictions</h2>", "<h3>Predicted vs true, and residuals</h3>"
                + _residuals(pred, spec.data.target)]


def _regression_metrics(y, p) -> dict[str, float]:
    from sklearn import metrics as skm

    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
        "mae": float(skm.mean_absolute_error(y, p)),
        "r2": float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
    }


def _residuals(pred, target: str) -> str:
    """An <img>: predicted against true values, and the residuals, on the test split."""
    from dlmine_ray.report.kit import plt, png

    y = pred[target].to_numpy(float)
    p = pred["prediction"].to_numpy(float)
    if len(y) > 20000:
        idx = np.random.default_rng(0).choice(len(y), 20000, replace=False)
        y, p = y[idx], p[idx]
    fig, axes = plt().subplots(1, 2, figsize=(10, 3.6))
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
    return png(fig)
