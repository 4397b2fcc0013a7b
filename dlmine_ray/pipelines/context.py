"""What one run carries from stage to stage (``RunContext``) and what it returns (``RunResult``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from dlmine_ray.runtime.progress import Reporter
from dlmine_ray.spec import JobSpec
from dlmine_ray.tasks import Task


@dataclass
class RunResult:
    """What a run produced: its folder, flat metrics, the job of the model it saved (``spec``:
    after tuning, the best trial's job, with ``tune`` None), and for tuned runs the leaderboard."""

    output: Path
    metrics: dict[str, Any]
    spec: JobSpec
    leaderboard: Optional[pd.DataFrame] = None


@dataclass
class RunContext:
    """One run: the job as given and its task, the staging folder its files go to, the console,
    where Ray Train/Tune keep checkpoints (``storage``), a local scratch folder removed at the end,
    the cluster's CPUs, and the knowledge base with what the run adds to it."""

    spec: JobSpec
    task: Task
    folder: Any  # outputs.RunFolder
    reporter: Reporter
    storage: str
    scratch: str
    cpus: float
    started: float = field(default_factory=time.perf_counter)
    #: the open knowledge base (tune/knowledge.py), or None when the job records nothing
    knowledge: Any = None
    #: what the pipeline learnt for the knowledge base: the dataset (fingerprint, meta-features),
    #: the selection metric's value of the saved model, and the trials (settings and values)
    dataset: Optional[dict] = None
    selection: Optional[dict] = None
    trials: list = field(default_factory=list)
    #: the run goes on in this process without Ray (small input: ``scaling.driver_max_mb``); its
    #: rows are ``data.local.LocalRows`` instead of Ray Datasets
    on_driver: bool = False

    @property
    def options(self) -> Any:
        """The task's section of the job (None when it has none)."""
        return self.task.options_of(self.spec)

    def seconds(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started
