"""The job spec: one validated object, made from YAML, with a working default for every field.

Bad input is rejected here, at the boundary, with the offending field named; nothing past this
module re-checks the shape of a job.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlmine_ray.errors import DlmineError

TASKS = ("classify", "regress", "cluster", "detect", "rules")
#: tasks that learn a target column; the others learn from the features alone
SUPERVISED = ("classify", "regress")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitSpec(_Strict):
    """Fractions of rows held out for validation and test; the rest trains."""

    valid: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, gt=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _room_for_training(self):
        if self.valid + self.test >= 0.9:
            raise ValueError("split.valid + split.test must leave at least 10% of rows for training")
        return self


class DataSpec(_Strict):
    """Where the rows are and which columns mean what."""

    path: Union[str, list[str]] = "builtin:digits"
    format: Literal["auto", "parquet", "csv", "json"] = "auto"
    target: Optional[str] = Field(None, description="the column to learn (classify/regress; default 'label')")
    labels: Optional[str] = Field(None, description="cluster/detect: a ground-truth column used only for scoring")
    normal_when: Optional[str] = Field(
        None, description="detect: a pandas expression (e.g. \"label == 0\") selecting the rows known to be "
                          "normal; only they train the model. Default: every row trains")
    drop_constant: bool = Field(True, description="drop feature columns that hold one value (listed in the log "
                                                  "and the report); false: refuse such data")
    items: Optional[str] = Field(None, description="rules: the item column: a list column (one basket per "
                                                   "row), or with data.transaction one item per row. Default: "
                                                   "every column's column=value is an item")
    transaction: Optional[str] = Field(None, description="rules: the transaction id column of one-item-per-row data")
    id: Optional[str] = Field(None, description="a row identifier: kept in predictions, and its hash decides "
                                                "the row's split (unless data.group is given)")
    group: Optional[str] = Field(None, description="all rows with the same value of this column go to one split "
                                                   "(repeated measurements of one customer, patient...); not a "
                                                   "feature")
    na_values: list[Union[str, int, float]] = Field(
        default_factory=list, description="more values that mean 'missing' (empty CSV fields and NA/NaN/null "
                                          "always do)")
    ignore: list[str] = Field(default_factory=list)
    split: SplitSpec = Field(default_factory=SplitSpec)
    max_categories: int = Field(50, ge=1, description="one-hot width cap per categorical column")

    @property
    def split_key(self) -> Optional[str]:
        """The column whose values decide each row's split: data.group, else data.id, else none
        (then the row's file and position do)."""
        return self.group or self.id

    @field_validator("na_values")
    @classmethod
    def _as_text(cls, v):
        # the markers are compared as text (CSV) and, where they parse, as numbers
        return [str(int(x)) if isinstance(x, float) and x.is_integer() else str(x) for x in v]

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("data.path list is empty")
        if isinstance(v, str) and not v.strip():
            raise ValueError("data.path is empty")
        return v


class ModelSpec(_Strict):
    """The deep model: an MLP, or a residual MLP for deeper nets (classify/regress); for cluster
    and detect an autoencoder whose encoder has the ``hidden`` widths (the decoder mirrors them)
    and a ``latent`` code."""

    kind: Literal["mlp", "resmlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256, 128])
    latent: int = Field(10, ge=1, description="cluster/detect: width of the autoencoder's code")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    batch_norm: bool = False

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if not v or any(h <= 0 for h in v):
            raise ValueError("model.hidden must be a non-empty list of positive layer widths")
        return v


class TrainSpec(_Strict):
    """How to train: epochs, batches, optimiser, early stopping."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    early_stopping: int = Field(5, ge=0, description="epochs without improvement before stopping; 0 = off")
    seed: int = 0
    cache_mb: int = Field(1024, ge=0, description="per-worker memory for caching the shard after epoch 1")


class ScalingSpec(_Strict):
    """How many Ray Train workers, and on what."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: Optional[float] = Field(None, gt=0.0, description="default: the cluster's CPUs / workers")
    trainer: Literal["auto", "ray_train", "task"] = Field(
        "auto", description="ray_train: a TorchTrainer; task: one Ray task (one worker, small data); "
                            "auto: a TorchTrainer for several workers, GPUs or 64 MB+ of training data")

    @model_validator(mode="after")
    def _task_is_single_worker(self):
        if self.trainer == "task" and self.num_workers > 1:
            raise ValueError("scaling.trainer 'task' trains on one worker; use ray_train for num_workers > 1")
        return self


class ClusterSpec(_Strict):
    """Deep clustering: autoencoder pre-training (train.*), k-means on the codes, then DEC
    refinement (Xie et al. 2016) as a second stage of the same training loop."""

    k: Optional[int] = Field(None, ge=2, description="number of clusters; default: chosen over k_range")
    k_range: list[int] = Field(default_factory=lambda: [2, 12], description="[min, max] k tried by silhouette")
    init: Literal["kmeans", "umap"] = Field(
        "umap", description="initial clusters of the sampled codes: k-means on the codes, or k-means on a UMAP "
                            "embedding of them (then distilled into the centres)")
    init_on: Literal["codes", "features"] = Field(
        "features", description="what the initial clustering sees: the autoencoder's codes, or the preprocessed "
                             "features")
    noise: float = Field(0.2, ge=0.0, description="std of the denoising noise in pre-training")
    distill_epochs: int = Field(30, ge=0, description="umap init: epochs teaching the centres the sample's "
                                                      "clusters")
    refine_epochs: int = Field(30, ge=0, description="DEC epochs after pre-training; 0 = autoencoder + k-means")
    refine_lr: float = Field(1e-4, gt=0.0)
    alpha: float = Field(1.0, gt=0.0, description="degrees of freedom of DEC's Student-t kernel")
    sample_rows: int = Field(10_000, ge=100, description="rows sampled for silhouette and for choosing k")

    @field_validator("k_range")
    @classmethod
    def _k_range(cls, v):
        if len(v) != 2 or v[0] < 2 or v[1] < v[0]:
            raise ValueError("cluster.k_range must be [min, max] with 2 <= min <= max")
        return v


class DetectSpec(_Strict):
    """Deep anomaly detection: a denoising autoencoder (reconstruction error) or Deep SVDD
    (Ruff et al. 2018, distance to a centre in code space, after autoencoder pre-training)."""

    model: Literal["autoencoder", "deep_svdd"] = "autoencoder"
    contamination: Optional[float] = Field(
        None, gt=0.0, le=0.5, description="expected share of anomalies; sets the flag threshold. Default: a "
                                          "threshold from the score distribution (median + 3 MADs of log score)")
    noise: float = Field(0.1, ge=0.0, description="std of the Gaussian noise of the denoising autoencoder")
    svdd_epochs: int = Field(30, ge=1, description="deep_svdd: epochs of the SVDD stage after pre-training")
    top_features: int = Field(3, ge=1, description="features named per flagged row")


class RulesSpec(_Strict):
    """Association rules: exact frequent itemsets by parallel FP-Growth, then rules."""

    min_support: Union[int, float] = Field(0.01, description="a fraction of transactions in (0, 1], or a count "
                                                             "(an integer >= 1)")
    max_len: Optional[int] = Field(None, ge=1, description="largest itemset; default: no limit")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    min_lift: float = Field(1.0, ge=0.0, description="keep rules whose lift is above this; a rule whose lift is at "
                                                     "most 1 is not an association (0: every rule)")
    max_rules: Optional[int] = Field(1_000_000, ge=1, description="keep at most this many rules, those of highest "
                                                                  "lift (the run says when it cuts); null: all")
    groups: Optional[int] = Field(None, ge=1, description="item groups mined in parallel; default: the "
                                                         "cluster's CPUs")
    top: int = Field(20, ge=1, description="rules shown in the report")
    miner: Literal["exact", "neural", "both"] = Field(
        "exact", description="exact: parallel FP-Growth; neural: an autoencoder probed for rules (Aerial), "
                             "every rule recounted exactly; both: both, compared in the report")
    neural_antecedent: int = Field(2, ge=1, le=3, description="neural: largest antecedent probed")
    neural_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="neural: the probability the reconstruction "
                                                                     "must give the consequent")
    neural_sample: int = Field(200_000, ge=1, description="neural: the autoencoder trains on at most about this "
                                                          "many transactions (a random sample; the recount uses all)")

    @field_validator("min_support", mode="before")
    @classmethod
    def _support(cls, v):
        bad = ValueError(f"rules.min_support must be a fraction in (0, 1] or a count of transactions (an integer "
                         f">= 1), got {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad
        if isinstance(v, int):
            if v < 1:
                raise bad
            return v
        if 0.0 < v <= 1.0:
            return float(v)
        if v > 1.0 and float(v).is_integer():
            return int(v)
        raise bad


class TuneSpec(_Strict):
    """Model selection with Ray Tune; keys of `space` are dotted job fields."""

    num_samples: int = Field(8, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    search: Literal["random", "optuna"] = "random"
    metric: Optional[str] = None
    mode: Optional[Literal["min", "max"]] = None
    max_concurrent: Optional[int] = Field(None, ge=1)
    grace_period: int = Field(2, ge=1)
    space: dict[str, Any] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _space_shape(cls, space):
        if not space:
            raise ValueError("tune.space is empty: name at least one job field to search over")
        for key, dom in space.items():
            if isinstance(dom, list):
                if not dom:
                    raise ValueError(f"tune.space.{key}: empty list of choices")
                continue
            if isinstance(dom, dict) and len(dom) == 1:
                kind, args = next(iter(dom.items()))
                if kind in ("loguniform", "uniform", "randint", "quniform") and isinstance(args, list) and len(args) >= 2:
                    continue
                if kind == "choice" and isinstance(args, list) and args:
                    continue
            raise ValueError(
                f"tune.space.{key}: expected a list of choices or one of "
                "{loguniform|uniform|randint: [low, high]}, {choice: [...]}"
            )
        return space


class JobSpec(_Strict):
    """A whole job: data, model, training, scaling and optional tuning."""

    name: str = "job"
    task: Literal["classify", "regress", "cluster", "detect", "rules"] = "classify"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    detect: DetectSpec = Field(default_factory=DetectSpec)
    rules: RulesSpec = Field(default_factory=RulesSpec)
    tune: Optional[TuneSpec] = None
    compare_baselines: bool = True
    baseline_max_rows: int = Field(200_000, ge=100)
    storage: Optional[str] = Field(
        None, description="where Ray Train/Tune keep checkpoints: default a local temp folder; on a "
                          "multi-node cluster a folder every node shares, or a URI such as s3://bucket/dlmine")

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, doc):
        # supervised jobs learn 'label' unless told otherwise; cluster/detect have no target
        if isinstance(doc, dict) and doc.get("task", "classify") in SUPERVISED:
            data = doc.get("data")
            if data is None:
                doc = {**doc, "data": {"target": "label"}}
            elif isinstance(data, dict) and data.get("target") is None:
                doc = {**doc, "data": {**data, "target": "label"}}
        return doc

    @model_validator(mode="after")
    def _columns_distinct(self):
        d = self.data
        if self.task in SUPERVISED:
            if d.labels is not None:
                raise ValueError(f"data.labels is for the cluster and detect tasks; task {self.task} learns "
                                 f"data.target")
            if d.items is not None or d.transaction is not None:
                raise ValueError("data.items and data.transaction are for the rules task")
            if d.normal_when is not None:
                raise ValueError("data.normal_when is for the detect task")
        else:
            if d.target is not None:
                raise ValueError(f"data.target: task {self.task} learns without a target; name a ground-truth "
                                 "column in data.labels to score against")
            if d.normal_when is not None and self.task != "detect":
                raise ValueError("data.normal_when is for the detect task")
            if self.task == "rules" and d.transaction is not None and d.items is None:
                raise ValueError("data.transaction needs data.items: the column holding one item per row")
            if self.task != "rules" and (d.items is not None or d.transaction is not None):
                raise ValueError("data.items and data.transaction are for the rules task")
            if d.labels is not None and (d.labels in d.ignore or d.labels == d.id):
                raise ValueError(f"data.labels '{d.labels}' is also data.id or listed in data.ignore")
            from dlmine_ray.tasks import get_task

            taken = get_task(self.task).result_columns
            for field, col in (("labels", d.labels), ("id", d.id)):
                if col in taken:
                    raise ValueError(f"data.{field} '{col}' has the name of a result column of task {self.task} "
                                     f"({', '.join(taken)}); rename it in the data")
            if self.tune is not None:
                raise ValueError(f"tune: model selection is not supported for task {self.task} yet")
        if d.target is not None and d.target in d.ignore:
            raise ValueError(f"data.target '{d.target}' is also listed in data.ignore")
        if d.id is not None and d.id == d.target:
            raise ValueError(f"data.id and data.target are the same column '{d.target}'")
        if d.group is not None and d.group in (d.target, d.labels):
            raise ValueError(f"data.group '{d.group}' is also the target/labels column")
        if self.tune is not None:
            for key in self.tune.space:
                _check_dotted_field(self, key)
        return self


def _check_dotted_field(spec: BaseModel, dotted: str) -> None:
    obj: Any = spec
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = type(obj).model_fields if isinstance(obj, BaseModel) else {}
        if part not in fields:
            raise ValueError(f"tune.space key '{dotted}' is not a job field")
        obj = getattr(obj, part)
        if i < len(parts) - 1 and not isinstance(obj, BaseModel):
            raise ValueError(f"tune.space key '{dotted}' is not a job field")
    if parts[0] in ("tune", "data", "scaling", "task", "name"):
        raise ValueError(f"tune.space key '{dotted}': only model.*, train.* and similar fields can be tuned")


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "job"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"invalid job field '{loc}': {msg}{more}"


def set_dotted(doc: dict, dotted: str, value: Any) -> None:
    """Set ``doc[a][b][c] = value`` for ``dotted == 'a.b.c'``, creating dicts on the way."""
    parts = dotted.split(".")
    cur = doc
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise DlmineError(f"cannot set '{dotted}': '{p}' is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Turn ``["train.epochs=3", "model.hidden=[64]"]`` into (key, YAML-parsed value) pairs."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise DlmineError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise DlmineError(f"--set expects key=value, got '{pair}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


def spec_from_dict(doc: dict, overrides: Optional[list[tuple[str, Any]]] = None) -> JobSpec:
    """Validate a job given as a dict (plus dotted overrides); raise DlmineError naming the field."""
    if not isinstance(doc, dict):
        raise DlmineError("a job must be a YAML mapping of fields (name, task, data, ...)")
    doc = copy.deepcopy(doc)
    for key, value in overrides or []:
        set_dotted(doc, key, value)
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as err:
        raise DlmineError(_format_validation_error(err)) from None


def load_job(path: Union[str, os.PathLike], overrides: Optional[list[tuple[str, Any]]] = None) -> JobSpec:
    """Read and validate a YAML job file. Relative local data paths resolve against the current
    directory, as they would for any command-line tool."""
    p = Path(path)
    if not p.is_file():
        raise DlmineError(f"job file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "parse error"
        raise DlmineError(f"job file {p} is not valid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    return spec_from_dict(doc, overrides)


def coerce_spec(job: Union[JobSpec, dict, str, os.PathLike], overrides=None) -> JobSpec:
    """Accept a JobSpec, a dict or a YAML path; return a validated JobSpec."""
    if isinstance(job, JobSpec):
        if overrides:
            return spec_from_dict(job.model_dump(), overrides)
        return job
    if isinstance(job, dict):
        return spec_from_dict(job, overrides)
    return load_job(job, overrides)


def monitor_for(spec: JobSpec) -> tuple[str, str]:
    """The validation metric (name, mode) that early stopping and Tune optimise."""
    if spec.tune is not None and spec.tune.metric:
        mode = spec.tune.mode or ("max" if any(k in spec.tune.metric for k in ("acc", "auc", "r2", "f1")) else "min")
        return spec.tune.metric, mode
    return "val_loss", "min"
