"""The contract every mining task fulfils. A task knows nothing about Ray: it builds the model
from the feature layout, gives the loss of one batch, additive statistics from which the loop
computes validation metrics, and turns model outputs into predictions and test metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn


class Task:
    """Base class; subclasses set the class attributes and implement the methods."""

    name: str = ""
    #: "categorical" targets are encoded as class indices, "numeric" ones standardised.
    target_kind: str = "numeric"
    #: the validation metric shown next to val_loss, and its direction.
    val_metric: str = "val_loss"
    val_mode: str = "min"

    def target_torch_dtype(self) -> torch.dtype:
        """The dtype of the encoded target tensor."""
        return torch.float32

    def output_dim(self, info: dict) -> int:
        """Width of the model's head for this task and target layout."""
        raise NotImplementedError

    def build_model(self, n_features: int, info: dict, model_spec: Any) -> nn.Module:
        """Return a fresh plain ``nn.Module`` for ``n_features`` inputs."""
        from dlmine_ray.models import build_backbone

        return build_backbone(model_spec["kind"], n_features, self.output_dim(info), model_spec["hidden"],
                              model_spec["dropout"], model_spec.get("batch_norm", False))

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of one batch."""
        raise NotImplementedError

    def batch_sums(self, outputs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Additive statistics of one batch (summed across batches and workers)."""
        raise NotImplementedError

    def epoch_metrics(self, sums: dict[str, float], info: dict) -> dict[str, float]:
        """Validation metrics (``val_loss`` and ``self.val_metric``) from summed statistics."""
        raise NotImplementedError

    def predict_columns(self, outputs: np.ndarray, info: dict) -> dict[str, np.ndarray]:
        """Prediction columns for a batch of raw model outputs."""
        raise NotImplementedError

    def test_metrics(self, y_true: pd.Series, pred: pd.DataFrame, info: dict) -> dict[str, float]:
        """Test-split metrics from true targets (original units/labels) and prediction columns."""
        raise NotImplementedError

    def baseline_metrics(self, x_train, y_train, x_test, y_test_raw, info: dict, seed: int) -> dict[str, float]:
        """Fit the scikit-learn baseline on encoded features; return its test metrics."""
        raise NotImplementedError
