"""Every stage of a task, in order, with the task's ``after_stage`` between them: the one stage
loop that an untuned run (each stage in a Ray task or on TorchTrainer workers) and a whole-fit
tuning trial (each stage inside the trial's own process) both run."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from dlmine_ray.tasks.base import StageSetup
from dlmine_ray.train.loop import HISTORY, MODEL_STATE
from dlmine_ray.train.trainer import TrainOutcome, read_checkpoint


@dataclass
class StagesOutcome:
    """The finished model's weights (with the task's own tensors), the task's final ``info``, the
    per-epoch history of every stage (each epoch tagged with its stage), the last stage's training
    outcome, and the task's label-free scores of the whole fit (``fit_score``; empty when the task
    declares none)."""

    state: dict[str, torch.Tensor]
    info: dict[str, Any]
    history: list[dict]
    last: TrainOutcome
    scores: dict[str, float] = field(default_factory=dict)


def rows_dataset(x: np.ndarray, target: np.ndarray):
    """A Ray Dataset of (features, target) rows from numpy arrays."""
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    table = pa.table({"features": ArrowTensorArray.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                      "target": target})
    return ray.data.from_arrow(table).materialize()


class RowsInMemory:
    """(features, target) rows held in this process, read by the loop as a dataset shard is (its
    ``iter_torch_batches``): a stage inside a tuning trial trains on the task's chosen rows without
    a Ray Dataset, whose tasks would wait for the CPUs that the trials hold."""

    def __init__(self, x: np.ndarray, target: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.target = np.asarray(target)

    def iter_torch_batches(self, batch_size: int, dtypes: dict, device: str = "cpu", **_):
        for i in range(0, len(self.x), batch_size):
            yield {"features": torch.from_numpy(self.x[i:i + batch_size]).to(dtypes["features"]),
                   "target": torch.from_numpy(self.target[i:i + batch_size]).to(dtypes["target"])}


#: train_stage(index, stage, datasets, layout) -> (TrainOutcome, the model spec dict to rebuild it with)
StageTrainer = Callable[[int, str, dict, dict], tuple[TrainOutcome, dict]]


def run_stages(task, spec, sets: dict, n_features: int, info: dict, samples: dict, train_stage: StageTrainer,
               fit_ref: Optional[dict] = None, note: Optional[Callable[[str], None]] = None,
               rows_of: Callable = rows_dataset, stages: Optional[list[str]] = None,
               set_up: bool = True) -> StagesOutcome:
    """Train each of ``task.stages(spec)`` with ``train_stage``; between stages reload the weights
    into a plain model and let the task set up the next stage (rows it chooses to train on become
    a dataset with ``rows_of``); at the end, with ``fit_ref`` (the task's ``fit_reference``), score
    the whole fit with the task's label-free criteria. Each of the task's notes goes to ``note`` as
    soon as its stage is set up (a run prints it there, between that stage's epochs and the next's).
    ``stages``: only these of the task's stages (an in-run comparison that retrains one stage);
    ``set_up=False``: no ``after_stage`` between them (the ``info`` given already sets them up)."""
    info = dict(info)
    base_sets, history, state, outcome = dict(sets), [], None, None
    model_spec = spec.model.model_dump()
    for i, stage in enumerate(stages if stages is not None else task.stages(spec)):
        layout = {"n_features": n_features, "info": info, "has_valid": "valid" in sets, "stage": stage,
                  "init_state": state}
        outcome, model_spec = train_stage(i, stage, sets, layout)
        offset = len(history)
        history.extend({**h, "epoch": offset + h["epoch"], "stage": stage} for h in outcome.history)
        model = task.build_model(n_features, info, model_spec)
        model.load_state_dict(torch.load(outcome.state_path, map_location="cpu", weights_only=True), strict=False)
        model.eval()
        setup = task.after_stage(stage, model, samples or {}, info, spec) if set_up else StageSetup()
        info.update(setup.info)
        state = {**model.state_dict(), **setup.state}
        for line in setup.notes if note is not None else ():
            note(line)
        sets = dict(base_sets)
        if setup.train_on is not None:  # the next stage trains on the rows the task chose
            sets["train"] = rows_of(*setup.train_on)
    final = task.build_model(n_features, info, model_spec)
    final.load_state_dict(state, strict=False)
    final.eval()
    scores = task.fit_score(final, fit_ref, info, spec) if fit_ref is not None else {}
    return StagesOutcome({k: v.detach().cpu() for k, v in final.state_dict().items()}, info, history, outcome,
                         scores)


def fit_rows(task, spec, x: np.ndarray, y: np.ndarray, valid: Optional[tuple] = None, info: Optional[dict] = None,
             samples: Optional[dict] = None, names: Optional[list[str]] = None, stages: Optional[list[str]] = None,
             set_up: bool = True) -> tuple[torch.nn.Module, StagesOutcome]:
    """Train ``task``'s model on numpy rows ``x``/``y`` (``valid``: an (x, y) pair for its
    validation) through every stage, in this process with the run's own loop and this process's
    torch threads; returns the finished model (eval mode) and the outcome. ``info``: the task's
    starting info (default ``task.initial_info`` with ``names``); ``samples``: the rows
    ``after_stage`` reads (default: ``x`` for each one the task asks for); ``stages``/``set_up``:
    as for ``run_stages``."""
    threads = torch.get_num_threads()
    info = info if info is not None else task.initial_info(spec, names or [f"x{j}" for j in range(x.shape[1])], None)
    samples = samples if samples is not None else {k: x for k in task.stage_samples(spec)}
    sets = {"train": RowsInMemory(x, y)}
    if valid is not None and len(valid[0]):
        sets["valid"] = RowsInMemory(*valid)
    try:
        with tempfile.TemporaryDirectory() as keep:
            out = run_stages(task, spec, sets, x.shape[1], info, samples,
                             in_process_stage(spec, task, None, None, threads, keep), rows_of=RowsInMemory,
                             stages=stages, set_up=set_up)
    finally:
        torch.set_num_threads(threads)  # the loop sets its own
    model = task.build_model(x.shape[1], out.info, spec.model.model_dump())
    model.load_state_dict(out.state, strict=False)
    model.eval()
    return model, out


def write_whole_fit(out: StagesOutcome) -> str:
    """A checkpoint folder of a whole fit: the weights, the history, the scores (as ``best``) and
    the task's final ``info``; read back by ``read_checkpoint``."""
    d = tempfile.mkdtemp(prefix="dlmine_fit_")
    torch.save(out.state, os.path.join(d, MODEL_STATE))
    with open(os.path.join(d, HISTORY), "w") as f:
        json.dump({"history": out.history, "best": {**out.last.best, **out.scores}, "info": out.info}, f,
                  default=_plain)
    return d


def _plain(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-able: {type(v).__name__}")


def in_process_stage(spec, task, progress, trial: Optional[str], cpus: float, keep_in: str) -> StageTrainer:
    """A StageTrainer that runs each stage's loop in this process (inside a Tune trial)."""
    from dlmine_ray.train.loop import TaskEnv, run_loop
    from dlmine_ray.train.trainer import loop_config

    def train_stage(i, stage, sets, layout):
        layout = {**layout, "train": task.stage_train(spec, stage)}
        env = TaskEnv(sets, spec.scaling.use_gpu)
        run_loop(loop_config(spec, layout, progress, trial, cpus), env)
        if not env.last_checkpoint:
            raise RuntimeError(f"stage '{stage}' finished without a checkpoint")
        d = os.path.join(keep_in, f"stage-{i}")
        os.makedirs(d, exist_ok=True)
        for name, data in env.last_checkpoint.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        return read_checkpoint(d, os.path.join(keep_in, f"kept-{i}")), spec.model.model_dump()

    return train_stage
