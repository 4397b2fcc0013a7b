"""The contract every mining task fulfils: the unit of extension. A task knows nothing about Ray.

A task declares what kind of data it reads (``data_kind``, which picks the pipeline), its section
of the job spec (``options``: a pydantic class, registered with the task, from which the job
schema is built), the data fields it reads, its data checks, its validation metrics and the one
that selects the model (early stopping, the kept checkpoint, Tune's default), its test metrics
with their directions, its outputs and its report sections. It builds the model from the feature
layout, gives the loss of one batch and additive statistics from which the loop computes
validation metrics, and turns scored rows into its result table and metrics (``results``).

A task may train in several stages (an autoencoder, then a clustering or SVDD objective): the
pipeline runs the same loop once per name in ``stages``, and between stages hands the task the
trained model and a sample of encoded rows (``after_stage``) to set up the next stage.
The defaults make the simple case short: ``step_loss``/``eval_sums`` call ``loss``/``batch_sums``
with ``model(x)``; a supervised task (``SupervisedTask``) only says its loss, metrics, prediction
columns and baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn


#: the miners a supervised job's ``augment`` may name (mining/augment.py): soft cluster
#: memberships, an anomaly score, hits of the top association rules
AUGMENT_KINDS = ("clusters", "anomaly", "rules")


class Options(BaseModel):
    """Base of a task's section of the job spec (``job.<task name>.*``): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
class Results:
    """A task's result table (one row per scored row), its metrics, and material for the report."""

    table: pd.DataFrame
    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class; subclasses set the class attributes and implement the methods."""

    name: str = ""
    #: the kind of data the task reads: "rows" (a table) or "transactions" (baskets); picks the pipeline
    data_kind: str = "rows"
    #: the task's section of the job spec (``job.<name>``), or None when it has no options
    options: Optional[type[Options]] = None
    #: the task-specific fields of ``data`` it reads (target, labels, normal_when, items, transaction)
    data_fields: tuple[str, ...] = ()
    #: "categorical" targets are encoded as class indices, "numeric" ones standardised; None
    #: for tasks that learn from the features alone (the loop then sees a dummy target).
    target_kind: Optional[str] = None
    #: the target column when the job names none (supervised tasks)
    default_target: Optional[str] = None
    #: True: every non-validation row trains and every row is scored (no test split); False:
    #: the training split trains and the test split is scored
    scores_every_row: bool = False
    #: whether ``tune:`` can select this task's model
    tunable: bool = False
    #: the validation metrics each epoch reports, each with its direction
    val_metrics: dict[str, str] = {"val_loss": "min"}
    #: the validation metric that selects the model: early stopping, the kept checkpoint, Tune's default
    selection_metric: str = "val_loss"
    #: label-free criteria of the whole fitted model (after its last stage), each with its direction,
    #: computed by ``fit_score`` on rows of ``fit_reference``. When a task declares them, a tuning
    #: trial runs every stage and the first of them selects the model (a task whose validation loss
    #: changes meaning from stage to stage, or between models, selects by these instead).
    fit_metrics: dict[str, str] = {}
    #: what the run compares the deep model with, for tables and reports
    baseline_name: str = ""
    #: the columns the task writes beside the kept id (and truth) columns of each row
    result_columns: tuple[str, ...] = ()
    #: the file the result table is written to
    result_file: str = "results.parquet"
    #: the test metrics the task reports, each with its direction ("max": higher is better)
    metric_modes: dict[str, str] = {}
    #: the metrics the demo's summary shows
    headline: tuple[str, ...] = ()
    #: whether a run explains the deep model (integrated gradients, permutation importance and a
    #: surrogate tree: ``explain.py``) and ``dlmine explain`` accepts the task's models; such a task
    #: says which output each row's explanation attributes (``explained_output``)
    explains: bool = False
    #: whether ``info`` gets ``feature_columns`` (the raw column of each encoded feature) before
    #: the first stage
    uses_feature_columns: bool = False
    #: whether a job may add mined features (``augment``: cluster memberships, anomaly score,
    #: rule hits) to the model's inputs: a task that learns a target from them
    augments: bool = False
    #: the ``augment`` kind this task's model mines for supervised jobs (mining/augment.py), or None
    augment_kind: Optional[str] = None

    def comparison_seeds(self, spec: Any) -> int:
        """How many seeds of in-run comparisons (``compare``) the job asks for; 0: none."""
        return 0

    # -- the job ---------------------------------------------------------------------------------
    def options_of(self, spec: Any) -> Optional[Options]:
        """This task's section of ``spec`` (None when the task has no options)."""
        return getattr(spec, self.name) if self.options is not None else None

    def check_spec(self, spec: Any) -> None:
        """Cross-field rules of a job of this task that need no data; raise ValueError naming the field."""

    def default_space(self, spec: Any) -> dict[str, Any]:
        """The search space of ``tune:`` without ``space`` (dotted job field -> a list of choices
        or {loguniform|uniform|randint: [low, high]}); empty when the task has none."""
        return {}

    def quick_overrides(self, spec: Any) -> list[tuple[str, Any]]:
        """The dotted overrides of a smoke run (``dlmine demo --quick``): two epochs, two trials."""
        return [("train.epochs", 2)] + ([("tune.num_samples", 2)] if spec.tune is not None else [])

    def truth_column(self, spec: Any) -> Optional[str]:
        """The column the task's metrics compare with: the target, or a ground-truth labels column."""
        return None

    # -- the data --------------------------------------------------------------------------------
    def check_data(self, profile: Any, spec: Any, trainable: int) -> None:
        """Task-specific checks on the profiled data (``trainable``: rows that train); raise DlmineError."""

    def filters_rows(self, spec: Any) -> bool:
        """Whether ``train_mask`` keeps some rows from training in this job."""
        return False

    def runs_in_driver(self, spec: Any) -> bool:
        """Whether this job, given small local input, may run in the driver without Ray (see
        ``pipelines.driver_reason``); False for what only the Ray path does."""
        return True

    def train_mask(self, df: pd.DataFrame, spec: Any) -> Optional[np.ndarray]:
        """Of a batch of raw rows, those that may train (the others are only scored); None: all."""
        return None

    # -- the model and the loop --------------------------------------------------------------------
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

    def initial_info(self, spec: Any, feature_names: list[str], target_info: dict) -> dict:
        """The task's ``info`` before the first stage (JSON-able; saved with the model): by default
        the preprocessor's target layout (classes, or the target's mean and std)."""
        return dict(target_info)

    def stages(self, spec: Any) -> list[str]:
        """Names of the training stages, run in order by the same loop."""
        return ["fit"]

    def stage_train(self, spec: Any, stage: str) -> dict:
        """The train settings (``spec.train`` as a dict) for ``stage``."""
        return spec.train.model_dump()

    def stage_samples(self, spec: Any) -> dict[str, int]:
        """How many encoded rows ``after_stage`` wants: {"train": n} of the training rows, {"all": n}
        of all rows, {"train_xy": n} / {"valid_xy": n} training / validation rows with their encoded
        target (a (features, target) pair); empty when it needs none."""
        return {}

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

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of one batch."""
        raise NotImplementedError

    def batch_sums(self, outputs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Additive statistics of one batch (summed across batches and workers)."""
        raise NotImplementedError

    def epoch_metrics(self, sums: dict[str, float], info: dict) -> dict[str, float]:
        """Validation metrics (the keys of ``val_metrics``) from summed statistics."""
        return {"val_loss": sums["loss_sum"] / max(sums["n"], 1.0)}

    def after_stage(self, stage: str, model: nn.Module, samples: dict, info: dict, spec: Any) -> StageSetup:
        """Set up the next stage (or finish the model) from ``samples`` ("train": encoded training
        rows; "all": rows of all the data, where ``stage_samples`` asked for them)."""
        return StageSetup()

    def compare(self, spec: Any, info: dict, rows: dict, retrain: Callable, seeds: list[int]) -> dict[str, Any]:
        """In-run comparisons, after the saved model is fitted: the task retrains its model in this
        process on sampled rows with other settings and reports how they compare (metrics.json's
        ``comparison``; the report shows it with ``report_sections``). ``rows``: "train", "valid"
        (where there is a validation split) and "test" (x, encoded y) pairs; ``retrain(info, stages,
        seed)``: the task's model trained on rows["train"] (validated on rows["valid"]) through
        ``stages`` with ``info`` (no ``after_stage``: ``info`` sets the stages up) and ``seed``,
        returned finished. Called only when ``comparison_seeds`` > 0."""
        return {}

    def fit_reference(self, samples: dict, spec: Any) -> dict[str, Any]:
        """What ``fit_score`` scores every fit on, computed once per run from ``samples`` (the
        rows ``stage_samples`` asked for): sampled rows and any fixed reference on them."""
        return {}

    def fit_score(self, model: nn.Module, ref: dict, info: dict, spec: Any) -> dict[str, float]:
        """The ``fit_metrics`` of a finished model on ``ref`` (``fit_reference``)."""
        return {}

    def baseline_fit_score(self, baseline, ref: dict, info: dict, spec: Any) -> Optional[dict[str, float]]:
        """The ``fit_metrics`` of the baseline on ``ref``, for its row of the leaderboard; None when
        they would not be comparable with the deep model's."""
        return None

    # -- scoring and mining ------------------------------------------------------------------------
    def predict_columns(self, outputs: np.ndarray, info: dict) -> dict[str, np.ndarray]:
        """Prediction columns for a batch of raw model outputs."""
        raise NotImplementedError

    def weighted_score(self, w: np.ndarray, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The first ``headline`` metric of raw model ``outputs`` against the encoded target ``y``,
        for each row-weight vector of ``w`` (replicates, rows); a supervised task says how."""
        raise NotImplementedError(f"task {self.name} has no weighted score")

    def fit_baseline(self, x_train: np.ndarray, y_train: np.ndarray, info: dict, spec: Any):
        """The classic model the deep one is compared with, fitted on encoded training rows (used by
        ``results``), or None."""
        return None

    def results(self, batches: Iterable[dict], info: dict, spec: Any, baseline, n_rows: int) -> Results:
        """Turn scored batches (numpy columns: ``features``, prediction columns, the kept id and
        truth columns) into the result table, metrics (``baseline_*`` for the baseline) and report
        material."""
        raise NotImplementedError

    # -- what the user sees ------------------------------------------------------------------------
    def header_html(self, spec: Any, info: dict, metrics: dict, profile: Optional[dict], trials: int = 0) -> str:
        """The report's line under the title: what ran on what (``trials``: tuning trials, 0 untuned)."""
        return ""

    def report_sections(self, spec: Any, metrics: dict, material: dict, info: dict) -> list[str]:
        """The task's own sections of report.html (HTML strings, each opening with an <h2>)."""
        return []

    def explained_output(self, outputs: np.ndarray, info: dict) -> np.ndarray:
        """For a task that ``explains``: the column of the model's raw ``outputs`` that each row's
        explanation attributes (an int64 array, one per row); by default the first (a single output)."""
        return np.zeros(len(outputs), dtype=np.int64)

    def output_labels(self, info: dict) -> Optional[list]:
        """Names of the model's output columns when they are classes (the per-class view of an
        explanation groups rows by them), else None."""
        return None

    def summary_text(self, metrics: dict) -> Optional[str]:
        """A one-line summary for the console instead of the metrics table, or None for the table."""
        return None

    def scale_text(self, metrics: dict) -> str:
        """How much data the run learnt from and scored, for summary tables."""
        scored = metrics["rows"] if self.scores_every_row else metrics["rows_test"]
        return f"{metrics['rows_train']:,}/{scored:,}"


class SupervisedTask(Task):
    """Base of tasks that learn a target column: the training split trains, the test split is
    scored; ``results`` compares the predictions and the baseline's on the same rows, with paired
    bootstrap intervals. Subclasses give the loss, metrics, prediction columns and baseline."""

    data_fields = ("target",)
    default_target = "label"
    tunable = True
    explains = True
    augments = True
    baseline_name = "HGB"
    result_file = "predictions.parquet"

    def truth_column(self, spec):
        return spec.data.target

    def default_space(self, spec):
        # the model family and its shape, regularisation and the optimiser: what an MLP's result
        # depends on most; ranges as in common tabular deep-learning practice
        return {"model.kind": ["mlp", "resmlp"], "model.hidden": [[64], [128, 64], [256, 128], [256, 256, 128]],
                "model.dropout": [0.0, 0.1, 0.2, 0.3], "model.batch_norm": [False, True],
                "train.lr": {"loguniform": [1e-4, 1e-2]}, "train.weight_decay": [0.0, 1e-5, 1e-4, 1e-3],
                "train.batch_size": [64, 128, 256, 512]}

    def baseline_outputs(self, baseline, x: np.ndarray, info: dict) -> np.ndarray:
        """The baseline's predictions in the deep model's output space (logits, standardised
        values), so that its validation metrics come from the same ``batch_sums``."""
        raise NotImplementedError

    def test_metrics(self, y_true, pred: pd.DataFrame, info: dict) -> dict[str, float]:
        """Test-split metrics from true targets (original units/labels) and prediction columns."""
        raise NotImplementedError

    def baseline_predict(self, baseline, x: np.ndarray, info: dict) -> dict[str, np.ndarray]:
        """The baseline's prediction columns for encoded rows (the columns of ``predict_columns``)."""
        raise NotImplementedError

    def bootstrap_scorer(self, y_true, pred, info: dict) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        """The test metrics of weighted draws of the test rows, for one model's prediction columns:
        prepares what every draw shares (encoded truth, sorted scores) once, and returns a function
        of ``w`` (replicates, rows; see ``tasks/bootstrap.py``) -> metric name -> (replicates,)
        values. It is called for chunks of draws, hundreds of times on a large test split."""
        raise NotImplementedError

    def results(self, batches, info, spec, baseline, n_rows):
        from dlmine_ray.tasks.bootstrap import paired_intervals

        d = spec.data
        parts: dict[str, list] = {}
        for b in batches:
            for k, v in b.items():
                parts.setdefault(k, []).append(v)
        cols = {k: np.concatenate(v) for k, v in parts.items()}
        x = cols.pop("features")
        y_true = cols[d.target]
        pred = pd.DataFrame({**({d.id: cols.pop(d.id)} if d.id else {}), **cols})
        metrics = dict(self.test_metrics(y_true, pred, info))
        base_pred = None
        if baseline is not None:
            base_pred = pd.DataFrame(self.baseline_predict(baseline, x, info))
            metrics.update({f"baseline_{k}": v for k, v in self.test_metrics(y_true, base_pred, info).items()})
        scorers = {which: self.bootstrap_scorer(y_true, p, info)
                   for which, p in (("deep", pred), ("baseline", base_pred)) if p is not None}
        metrics.update(paired_intervals(lambda w, which: scorers[which](w), len(pred), base_pred is not None,
                                        spec.train.seed))
        return Results(pred, metrics, {"predictions": pred})

    def header_html(self, spec, info, metrics, profile, trials=0):
        import html

        tuned = f" · the best of {trials} tuning trials" if trials else ""
        return (f'<p class="muted">task <b>{spec.task}</b> · target <b>{html.escape(spec.data.target)}</b> · '
                f'{(profile or {}).get("rows", 0):,} rows · model {spec.model.kind} {spec.model.hidden}{tuned}</p>')
