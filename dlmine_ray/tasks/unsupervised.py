"""What the unsupervised row tasks (cluster, detect) share: they learn from the features alone,
train on every non-validation row, score every row, and turn the scored rows into one result
table, metrics and report material. A ground-truth column (``data.labels``) is only scored against."""

from __future__ import annotations

import html
from typing import Any, Optional

import numpy as np
import torch

from dlmine_ray.tasks.base import StageSetup, Task

__all__ = ["UnsupervisedTask", "StageSetup", "header_line", "model_outputs"]


def model_outputs(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """``model(x)`` (its default output) for a numpy matrix, in eval mode, as numpy."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def header_line(spec, profile: Optional[dict], model: str, extra: str) -> str:
    """The report's header line of an unsupervised row task (cluster, detect)."""
    labels = f" · labels <b>{html.escape(spec.data.labels)}</b>" if spec.data.labels else ""
    return (f'<p class="muted">task <b>{spec.task}</b>{labels} · {(profile or {}).get("rows", 0):,} rows · '
            f'model {html.escape(model)} · {html.escape(extra)}</p>')


class UnsupervisedTask(Task):
    """Base of row tasks without a target: the loop gets a dummy target, validation reports the
    mean loss (``val_loss``), and every scored row goes to ``results``."""

    data_fields = ("labels",)
    scores_every_row = True

    def target_torch_dtype(self):
        return torch.int8

    def truth_column(self, spec):
        return spec.data.labels

    def check_spec(self, spec: Any) -> None:
        d = spec.data
        if d.labels is not None and (d.labels in d.ignore or d.labels == d.id):
            raise ValueError(f"data.labels '{d.labels}' is also data.id or listed in data.ignore")
        for name, col in (("labels", d.labels), ("id", d.id)):
            if col in self.result_columns:
                raise ValueError(f"data.{name} '{col}' has the name of a result column of task {self.name} "
                                 f"({', '.join(self.result_columns)}); rename it in the data")

    def initial_info(self, spec, feature_names, target_info):
        return {"feature_names": list(feature_names)}

    def stage_samples(self, spec):
        return {"train": 10_000}

