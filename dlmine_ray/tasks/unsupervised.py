"""What the unsupervised tasks (cluster, detect) share: they learn from the features alone, score
every row, and mine the scored rows into one result table, metrics and report material."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
import torch

from dlmine_ray.tasks.base import Task


@dataclass
class StageSetup:
    """What ``after_stage`` hands the next stage: updates to the task's ``info``, tensors to load
    into the model, and optionally the rows (features, target) that the next stage trains on
    instead of the training split (e.g. a sample with pseudo-labels)."""

    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_on: Optional[tuple[np.ndarray, np.ndarray]] = None
    notes: list[str] = field(default_factory=list)


@dataclass
class MiningResult:
    """A task's result table (one row per input row), its metrics, and material for the report."""

    table: pd.DataFrame
    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def model_outputs(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """``model(x)`` (its default output) for a numpy matrix, in eval mode, as numpy."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


class UnsupervisedTask(Task):
    """Base of tasks without a target: the loop gets a dummy target, validation reports the mean
    loss (``val_loss``), and the runner mines every scored row with ``mine``."""

    target_kind = None
    val_metric = "val_loss"
    val_mode = "min"
    #: the file the mined table is written to
    result_file = "results.parquet"

    def target_torch_dtype(self):
        return torch.int8

    def epoch_metrics(self, sums, info):
        return {"val_loss": sums["loss_sum"] / max(sums["n"], 1.0)}

    def initial_info(self, spec: Any, feature_names: list[str]) -> dict:
        """The task's ``info`` before the first stage (JSON-able; saved with the model)."""
        return {"feature_names": list(feature_names)}

    def after_stage(self, stage, model, samples, info, spec) -> StageSetup:  # type: ignore[override]
        """Set up the next stage (or finish the model) from ``samples`` ("train": encoded training
        rows; "all": rows of all the data where the task asked for them)."""
        return StageSetup()

    def fit_baseline(self, x_train: np.ndarray, info: dict, spec: Any, seed: int):
        """A fitted scikit-learn baseline (used by ``mine``), or None."""
        return None

    def mine(self, batches: Iterable[dict], info: dict, spec: Any, baseline, n_rows: int) -> MiningResult:
        """Turn scored batches (numpy columns: ``features``, prediction columns, kept id/labels)
        into the result table, metrics (``baseline_*`` for the baseline) and report material."""
        raise NotImplementedError
