"""The job spec: one validated object, made from YAML, with a working default for every field.

Bad input is rejected here, at the boundary, with the offending field named. The sections every
job has (data, model, train, scaling, tune, explain) are declared here; each task's own section
(``cluster:``, ``detect:``, ``rules:``...) is the ``options`` class registered with the task, so
that the schema follows the registry. Checks that need the data are the task's, run once after
the profile pass (``Task.check_data``).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks import DEFAULT_TASK, TASKS, get_task
from dlmine_ray.tasks.base import AUGMENT_KINDS

#: the fields of ``data`` that only some tasks read (each task lists those it reads in ``data_fields``)
#: what a job's name may be (folders are named after it)
NAME_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TASK_DATA_FIELDS = ("target", "labels", "normal_when", "items", "transaction")


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
        None, description="detect: a filter (e.g. \"label == 0\") selecting the rows known to be normal; only "
                          "they train the model. It may use column names (`backticks` for other names), literals, "
                          "comparisons, in, & | ~, isnull(col), notnull(col): nothing else. Default: every row trains")
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
    features_from: Optional[str] = Field(None, description="the folder of a feature-selection run (task: select): "
                                                           "only the columns it chose are features")
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

    @field_validator("normal_when")
    @classmethod
    def _a_filter(cls, v):
        from dlmine_ray.tasks.rowfilter import RowFilter

        if v is not None:
            RowFilter("data.normal_when", v)  # refuses anything but the filter language, in one line
        return v

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


#: small local input stays in this process, without Ray: a job's ``scaling.driver_max_mb``
#: default, and ``dlmine predict``'s (``data.read.SMALL_INPUT_BYTES``). Chosen on this 2-core
#: machine: a 1M x 32 classify job (193 MB of Parquet) took 24.0 s and 1.31 GiB in the driver
#: against 51.8 s and 2.74 GiB through Ray (benchmarks/README.md)
DRIVER_MAX_MB = 256.0


class ScalingSpec(_Strict):
    """How many Ray Train workers, and on what."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: Optional[float] = Field(None, gt=0.0, description="default: the cluster's CPUs / workers")
    trainer: Literal["auto", "ray_train", "task"] = Field(
        "auto", description="ray_train: a TorchTrainer; task: one Ray task (one worker, small data); "
                            "auto: a TorchTrainer for several workers, GPUs or 256 MiB+ of training data")
    driver_max_mb: float = Field(DRIVER_MAX_MB, ge=0.0, description="a job whose input is local files (or a builtin "
                                 "dataset) of at most this many MiB, untuned, on one CPU worker with trainer auto, "
                                 "runs in the driver process without starting or joining Ray (the same pipeline, "
                                 "splits and loop; seconds faster); a run through Ray scores its encoded test split "
                                 "in the driver when it is at most this many MiB, or at any size on a one-node "
                                 "cluster; 0: always through Ray")
    max_failures: int = Field(2, ge=0, description="TorchTrainer runs: how many times a lost worker (a killed "
                                                   "process, a lost node) restarts the worker group, which "
                                                   "resumes from the last epoch's checkpoint")

    @model_validator(mode="after")
    def _task_is_single_worker(self):
        if self.trainer == "task" and self.num_workers > 1:
            raise ValueError("scaling.trainer 'task' trains on one worker; use ray_train for num_workers > 1")
        return self


class TuneSpec(_Strict):
    """Model selection with Ray Tune; keys of `space` are dotted job fields. Without `space`, the
    task's default search space; the first trials come from the knowledge base (``warm_start``)."""

    num_samples: int = Field(8, ge=1)
    time_budget_s: Optional[float] = Field(None, gt=0.0, description="stop starting trials after this many "
                                                                       "seconds (as well as after num_samples)")
    warm_start: bool = Field(True, description="begin with the best settings of this dataset's past runs and of "
                                               "the nearest past datasets (by meta-features) in the knowledge base; "
                                               "with none there, the settings of the shipped portfolio")
    scheduler: Literal["asha", "fifo"] = "asha"
    search: Literal["random", "optuna"] = "random"
    metric: Optional[str] = None
    mode: Optional[Literal["min", "max"]] = None
    max_concurrent: Optional[int] = Field(None, ge=1)
    grace_period: int = Field(2, ge=1)
    space: Optional[dict[str, Any]] = Field(None, description="dotted job field -> a list of choices or "
                                                                "{loguniform|uniform|randint: [low, high]}; "
                                                                "default: the task's search space")

    @field_validator("space")
    @classmethod
    def _space_shape(cls, space):
        if space is None:
            return space
        if not space:
            raise ValueError("tune.space is empty: name at least one job field to search over, or leave "
                             "tune.space out for the task's default search space")
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


class ExplainSpec(_Strict):
    """The explanations a run of a task that explains (classify, regress) adds to metrics.json and
    report.html (``explain.py``): their sizes, hence their cost in the driver, whatever the data's."""

    enabled: bool = Field(True, description="false: the run adds no explanations (no 'explaining' stage)")
    rows: int = Field(256, ge=1, description="test rows explained by integrated gradients (a seeded sample; "
                                             "metrics.json's explained_rows, fewer when the test split is smaller)")
    ig_steps: int = Field(48, ge=1, le=1000, description="integrated gradients' steps (Gauss-Legendre) per row; "
                                                         "more: a smaller completeness gap, a longer run")
    permutation_rows: int = Field(2000, ge=2, description="test rows (a seeded sample) that permutation importance "
                                                          "and the surrogate tree's fidelity are measured on")
    permutation_repeats: int = Field(5, ge=1, le=100, description="shuffles of each column in permutation "
                                                                   "importance (its mean and sd are over them)")
    surrogate_rows: int = Field(5000, ge=1, description="training rows (a seeded sample) the surrogate decision "
                                                        "tree is fitted on")
    surrogate_depth: int = Field(3, ge=1, le=12, description="the surrogate tree's depth: at most 2^depth rules")


class JobSpec(_Strict):
    """A whole job: data, model, training, scaling and optional tuning, and one section per
    registered task that has options (``spec.<task name>``, validated by the task's class)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field("job", description="the job's name: a slug (letters, digits, '.', '_', '-'; at most 64, "
                                          "starting with a letter or digit); checkpoint and output folders are "
                                          "named after it")
    task: str = DEFAULT_TASK
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    tune: Optional[TuneSpec] = None
    knowledge: Optional[str] = Field(
        None, description="the knowledge base every run is recorded in: a file path or a SQLAlchemy URL "
                          "(postgresql+psycopg://...); 'off' records nothing. Default: $DLMINE_KNOWLEDGE, else "
                          "~/.dlmine/knowledge.db")
    augment: list[Literal[AUGMENT_KINDS]] = Field(
        default_factory=list, description="features mined from the training split and added to a supervised "
                                          "model's inputs: soft cluster memberships, an anomaly score, hits of the "
                                          "top association rules (saved with the model, applied at scoring)")
    augment_gain: int = Field(
        3, ge=0, le=20, description="augment: training seeds over which the run compares its model with and without "
                                    "the mined columns on the test split (a paired difference with its interval, "
                                    "in metrics.json and the report); each seed trains the model twice. 0 = off")
    augment_models: Literal["tasks", "classic"] = Field(
        "tasks", description="augment: what mines the clusters and anomaly columns: the cluster and detect tasks' "
                             "own models (with this job's cluster: and detect: settings), or scikit-learn's k-means "
                             "and IsolationForest")
    explain: ExplainSpec = Field(default_factory=ExplainSpec,
                                 description="the sizes of a run's explanations (tasks that explain: classify, "
                                             "regress); other tasks ignore it")
    compare_baselines: bool = True
    baseline_max_rows: int = Field(200_000, ge=100)
    storage: Optional[str] = Field(
        None, description="where Ray Train/Tune keep checkpoints: default a local temp folder; on a "
                          "multi-node cluster a folder every node shares, or a URI such as s3://bucket/dlmine")

    @field_validator("name")
    @classmethod
    def _slug(cls, v):
        # folders are named after the job: '../x' or '/x' would put them outside their root
        if not NAME_SLUG.fullmatch(v) or ".." in v:
            raise ValueError(f"name {v!r} must be a slug: letters, digits, '.', '_' or '-', at most 64 characters, "
                             "starting with a letter or digit, without '..'")
        return v

    @field_validator("knowledge", mode="before")
    @classmethod
    def _knowledge_off(cls, v):
        # YAML reads a bare `knowledge: off` (or `no`, `false`) as False
        if isinstance(v, bool):
            return "off" if v is False else None
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_sections(cls, doc):
        """Validate each task section with its task's options class (errors located in it); refuse
        unknown top-level fields; give every task section its defaults; default the target."""
        if not isinstance(doc, dict):
            return doc
        doc = dict(doc)
        errors = []
        for key in list(doc):
            if key in cls.model_fields:
                continue
            task = TASKS.get(key)
            if task is None or task.options is None:
                errors.append(InitErrorDetails(type="extra_forbidden", loc=(key,), input=doc[key]))
                continue
            value = doc[key]
            if isinstance(value, task.options):
                continue
            try:
                doc[key] = task.options.model_validate({} if value is None else value)
            except ValidationError as err:
                errors += [InitErrorDetails(type=e["type"], loc=(key, *e["loc"]), input=e.get("input"),
                                            ctx=e.get("ctx", {})) for e in err.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        for task in TASKS.values():
            if task.options is not None:
                doc.setdefault(task.name, task.options())
        name = doc.get("task", DEFAULT_TASK)
        task = TASKS.get(name) if isinstance(name, str) else None  # not a name: the field's check says so
        if task is not None and task.default_target:
            data = doc.get("data")
            if data is None:
                doc["data"] = {"target": task.default_target}
            elif isinstance(data, dict) and data.get("target") is None:
                doc["data"] = {**data, "target": task.default_target}
        return doc

    @field_validator("task")
    @classmethod
    def _registered(cls, v):
        if v not in TASKS:
            raise ValueError(f"unknown task '{v}'; choose one of {', '.join(TASKS)}")
        return v

    @model_validator(mode="after")
    def _columns_distinct(self):
        d, task = self.data, get_task(self.task)
        for field in TASK_DATA_FIELDS:
            if getattr(d, field) is not None and field not in task.data_fields:
                users = [t.name for t in TASKS.values() if field in t.data_fields]
                hint = ("; name a ground-truth column in data.labels to score against"
                        if field == "target" and "labels" in task.data_fields else "")
                raise ValueError(f"data.{field} is for the {' and '.join(users)} task{'s' * (len(users) > 1)}; "
                                 f"task {self.task} {'learns without a target' if field == 'target' else 'does not read it'}"
                                 f"{hint}")
        task.check_spec(self)
        if self.augment and not task.augments:
            users = ", ".join(t.name for t in TASKS.values() if t.augments)
            raise ValueError(f"augment: adds features to a supervised model's inputs; task {self.task} has none "
                             f"(tasks that take it: {users})")
        if self.tune is not None and not task.tunable:
            raise ValueError(f"tune: model selection is not supported for task {self.task} yet")
        if d.target is not None and d.target in d.ignore:
            raise ValueError(f"data.target '{d.target}' is also listed in data.ignore")
        if d.id is not None and d.id == d.target:
            raise ValueError(f"data.id and data.target are the same column '{d.target}'")
        if d.group is not None and d.group in (d.target, d.labels):
            raise ValueError(f"data.group '{d.group}' is also the target/labels column")
        if self.tune is not None:
            if self.tune.space is None and not task.default_space(self):
                raise ValueError(f"tune.space: task {self.task} has no default search space; name the job fields "
                                 "to search over")
            for key in self.tune.space or {}:
                _check_dotted_field(self, key)
            choices = task.fit_metrics or task.val_metrics
            if self.tune.metric is not None and self.tune.metric not in choices:
                what = "label-free fit criterion" if task.fit_metrics else "validation metric"
                raise ValueError(f"tune.metric '{self.tune.metric}' is not a {what} of task {self.task}; "
                                 f"choose one of {', '.join(choices)}")
        return self

    def options(self) -> Any:
        """The section of this job's task (None when the task has none)."""
        return get_task(self.task).options_of(self)

    def field_value(self, dotted: str) -> Any:
        """The value of a dotted job field ('train.lr'); None where there is no such field."""
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        return obj

    def search_space(self) -> dict[str, Any]:
        """The tuned space: ``tune.space``, else the task's default search space."""
        space = self.tune.space if self.tune is not None else None
        return space if space is not None else get_task(self.task).default_space(self)

    def selection(self) -> tuple[str, str]:
        """The metric (name, mode) that selects the model among runs and trials: ``tune.metric``
        (and ``tune.mode``), else the task's first label-free fit criterion, else its selection
        metric; the direction is the one the task declares."""
        task = get_task(self.task)
        default = next(iter(task.fit_metrics), task.selection_metric)
        metric = (self.tune.metric if self.tune is not None else None) or default
        mode = (self.tune.mode if self.tune is not None else None) or {**task.val_metrics, **task.fit_metrics}[metric]
        return metric, mode


def _check_dotted_field(spec: BaseModel, dotted: str) -> None:
    obj: Any = spec
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = {**type(obj).model_fields, **(obj.__pydantic_extra__ or {})} if isinstance(obj, BaseModel) else {}
        if part not in fields:
            raise ValueError(f"tune.space key '{dotted}' is not a job field")
        obj = getattr(obj, part)
        if i < len(parts) - 1 and not isinstance(obj, BaseModel):
            raise ValueError(f"tune.space key '{dotted}' is not a job field")
    if parts[0] in ("tune", "data", "scaling", "task", "name", "explain"):
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
