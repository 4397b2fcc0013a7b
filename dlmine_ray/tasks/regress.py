"""Regression (prediction): a value per row."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from dlmine_ray.tasks.base import Task


class RegressTask(Task):
    name = "regress"
    target_kind = "numeric"
    val_metric = "val_rmse"
    val_mode = "min"
    metric_modes = {"rmse": "min", "mae": "min", "r2": "max"}

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

    def bootstrap_metrics(self, w, y_true, pred, info):
        """rmse, mae and r2 of each weighted draw of the test rows."""
        from dlmine_ray.tasks.bootstrap import regression

        return regression(w, np.asarray(y_true, dtype=np.float64), np.asarray(pred["prediction"], dtype=np.float64))

    def baseline_predictions(self, x_train, y_train, x_test, info, seed):
        from sklearn.ensemble import HistGradientBoostingRegressor

        model = HistGradientBoostingRegressor(random_state=seed)
        model.fit(x_train, y_train)
        return {"prediction": model.predict(x_test) * info["target_std"] + info["target_mean"]}


def _regression_metrics(y, p) -> dict[str, float]:
    from sklearn import metrics as skm

    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
        "mae": float(skm.mean_absolute_error(y, p)),
        "r2": float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
    }
