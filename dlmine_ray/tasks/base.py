"""The contract every mining task fulfils. A task knows nothing about Ray: it builds the model
from the feature layout, gives the loss of one batch, additive statistics from which the loop
computes validation metrics, and turns model outputs into predictions and test metrics.

A task may train in several stages (an autoencoder, then a clustering or SVDD objective): the
runner runs the same loop once per name in ``stages``, and between stages hands the task the
trained model and a sample of encoded rows (``UnsupervisedTask.after_stage``) to set up the
next stage.
Supervised tasks implement ``loss``/``batch_sums``; the defaults of ``step_loss``/``eval_sums``
call them with ``model(x)``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn


class Task:
    """Base class; subclasses set the class attributes and implement the methods."""

    name: str = ""
    #: "categorical" targets are encoded as class indices, "numeric" ones standardised; None
    #: for tasks that learn from the features alone (the loop then sees a dummy target).
    target_kind: str | None = "numeric"
    #: the validation metric shown next to val_loss, and its direction.
    val_metric: str = "val_loss"
    val_mode: str = "min"
    #: what the run compares the deep model with, for tables and reports
    baseline_name: str = "HGB"
    #: the columns the task writes beside the kept id (and labels) columns of each row
    result_columns: tuple[str, ...] = ()
    #: the test metrics the task reports, each with its direction ("max": higher is better)
    metric_modes: dict[str, str] = {}

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

    # -- stages (single-stage by default) --------------------------------------------------
    def stages(self, spec: Any) -> list[str]:
        """Names of the training stages, run in order by the same loop."""
        return ["fit"]

    def stage_train(self, spec: Any, stage: str) -> dict:
        """The train settings (``spec.train`` as a dict) for ``stage``."""
        return spec.train.model_dump()

    def start_stage(self, model: nn.Module, stage: str) -> None:
        """Prepare a model for a stage before it is wrapped for training (e.g. freeze parts that the
        stage's loss does not use, which DistributedDataParallel requires)."""

    def epoch_stats(self, model: nn.Module, x: torch.Tensor, stage: str, info: dict) -> Optional[dict[str, Any]]:
        """Additive statistics of one training batch gathered, without gradients, before each
        epoch (summed over batches and workers, then passed to ``step_loss`` as ``ctx``); None
        when the stage needs none."""
        return None

    def step_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: str, ctx: dict) -> torch.Tensor:
        """Mean training loss of one batch."""
        return self.loss(model(x), y)

    def eval_sums(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: str, ctx: dict) -> dict[str, float]:
        """Additive validation statistics of one batch."""
        return self.batch_sums(model(x), y)

    # -- supervised tasks --------------------------------------------------------------------
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

    def baseline_predictions(self, x_train, y_train, x_test, info: dict, seed: int) -> dict[str, np.ndarray]:
        """Fit the scikit-learn baseline on encoded features; return its prediction columns for
        ``x_test`` (the same columns as ``predict_columns``), scored by ``test_metrics`` too."""
        raise NotImplementedError

    def bootstrap_metrics(self, w: np.ndarray, y_true, pred, info: dict) -> dict[str, np.ndarray]:
        """The test metrics of each weighted draw of the test rows: ``w`` is (replicates, rows)
        (see ``tasks/bootstrap.py``); returns metric name -> (replicates,) values."""
        raise NotImplementedError
