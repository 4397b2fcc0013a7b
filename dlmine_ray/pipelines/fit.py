"""``fit_stages``: train a task's model, stage after stage, with the one training loop.

Each stage runs in this process (a small job without Ray: ``RunContext.on_driver``), in one Ray
task (a small single-worker job: no worker group to start) or on TorchTrainer workers (several
workers, GPUs, or a large training split), or, with ``tune:``, as the trials of a Ray Tune search
whose best trial is kept. After each stage the trained weights are reloaded into a plain model on
the driver and handed to the task (``after_stage``), which sets up the next stage or finishes the
model (k-means centres, the SVDD centre, the threshold)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd
import torch

from dlmine_ray.errors import failing_as
from dlmine_ray.runtime.progress import BoardWatcher, DirectBoard, make_board
from dlmine_ray.spec import JobSpec
from dlmine_ray.train.stages import RowsInMemory, StagesOutcome, in_process_stage, run_stages
from dlmine_ray.train.trainer import fit_in_task, fit_with_ray_train, use_ray_train


@dataclass
class Fitted:
    """A trained model: its weights (with the task's own tensors), the task's final ``info``, the
    per-epoch history of every stage, how it was trained (``trainer``: "task", "ray_train" or
    "tune"), the seconds it took, the job of the saved model (``run_spec``: after tuning, the best
    trial's), and for tuned runs the leaderboard."""

    state: dict[str, torch.Tensor]
    info: dict[str, Any]
    history: list[dict]
    best: dict[str, Any]
    stages: list[str]
    trainer: str
    seconds: float
    run_spec: JobSpec
    leaderboard: Optional[pd.DataFrame] = None
    #: tuned runs: every trial ({"trial", "status", "params", "value", "epochs", "seconds"})
    trials: Optional[list] = None
    #: tuned runs: what the trials (this run's and the past ones on this dataset) teach (tune/lessons.py)
    lessons: Optional[dict] = None
    #: tasks with label-free fit criteria: the sampled rows they are computed on (Task.fit_reference)
    fit_ref: Optional[dict] = None


def _run_name(ctx, name: str) -> str:
    """A Ray Train or Tune run's name, fixed for the run so that a ``--resume``d run finds the
    interrupted one's checkpoints: in its own storage (the staging folder) the part's ``name``; in
    a user's shared storage also the run's id (unique to a run, kept by the run that resumes it)."""
    return name if ctx.storage == ctx.scratch else f"{ctx.spec.name}-{ctx.folder.run_id}-{name}"


def _tune_stage(ctx, sets: dict, layout: dict, keep_in: str, board, name: str):
    """One stage as a Ray Tune search, its first trials from the knowledge base; returns the
    TuneOutcome and the best trial's job."""
    from dlmine_ray.tune.lessons import fixed_settings, lessons
    from dlmine_ray.tune.search import run_tune, trial_spec
    from dlmine_ray.tune.warm import warm_points

    spec, rep = ctx.spec, ctx.reporter
    t = spec.tune
    default = " (the task's default space)" if t.space is None else ""
    rep.stage("tuning", f"{t.num_samples} trials{default}, {t.scheduler} scheduler, {t.search} search"
                        + (f", at most {t.time_budget_s:g}s" if t.time_budget_s else ""))
    metric, mode = spec.selection()
    space, points, past = dict(spec.search_space()), [], pd.DataFrame()
    if ctx.knowledge is not None and ctx.dataset is not None:
        with failing_as("cannot read the knowledge base"):
            past = ctx.knowledge.trials(spec.task, [ctx.dataset["fingerprint"]])
        past = past[past["selection_metric"] == metric] if len(past) else past
        if t.space is None and len(past):  # the default space: what never mattered here is fixed
            fixed, imp = fixed_settings(past, space, mode)
            for key, value in fixed.items():
                share = float(imp.set_index("setting").loc[key, "importance"])
                rep.info(f"fixed {key}={value}: importance {share:.3f} over {len(past)} past trials on this dataset")
                space[key] = [value]
    if t.warm_start:  # the knowledge base's settings, else the portfolio's (also with knowledge: off)
        kb = ctx.knowledge if ctx.dataset is not None else None
        with failing_as("cannot read the knowledge base"):
            points, notes = warm_points(kb, spec.task, ctx.dataset or {}, space, metric, mode,
                                        max(1, t.num_samples // 2))
        for line in notes or ["warm start: neither the knowledge base nor the portfolio has settings to start from"]:
            rep.info(line)
    tuned = run_tune(spec, sets, layout, ctx.storage, board, ctx.cpus, keep_in, rep, points, space, len(past),
                     name=_run_name(ctx, name), resume=ctx.folder.resumed)
    top = tuned.leaderboard.iloc[0]
    rep.info(f"best trial: {top['trial']} ({top['status']}, {top['epochs']} epochs) "
             f"best {tuned.metric}={top[tuned.metric]:.4g} with {tuned.best_params}")
    learnt = lessons(pd.concat([past[["params", "value", "status"]] if len(past) else past,
                                pd.DataFrame(tuned.trials)], ignore_index=True), space, mode)
    if learnt is not None:
        learnt["past_trials"] = len(past)
        imp = learnt["importance"]
        if len(imp):
            rep.info("what mattered (fANOVA over " + f"{learnt['trials']} trials): "
                     + ", ".join(f"{s} {v:.2f}" for s, v in zip(imp["setting"][:3], imp["importance"][:3])))
        if len(learnt["trial_rules"]):
            r = learnt["trial_rules"].iloc[0]
            rep.info(f"trial rule: {r['rule']} (confidence {r['confidence']:.2f}, lift {r['lift']:.2f})")
    tuned.lessons = learnt
    return tuned, trial_spec({**spec.model_dump(), "tune": None}, tuned.best_params)


def fit_stages(ctx, sets: dict, n_features: int, info: dict, samples: Optional[dict] = None,
               name: str = "model") -> Fitted:
    """Train ``ctx.task``'s model on ``sets`` ("train", optionally "valid": Ray Datasets of
    ``features`` and ``target``) through every stage of the task; returns the Fitted model.
    ``samples`` are the encoded rows ``after_stage`` asked for (``Task.stage_samples``).

    A task that declares label-free ``fit_metrics`` (cluster, detect) is scored on them after its
    last stage; tuned, each trial is then a whole fit (every stage) selected by them. Otherwise a
    tuned stage is one Tune search selected by the validation metric."""
    spec, task, rep = ctx.spec, ctx.task, ctx.reporter
    samples = samples or {}
    stages = task.stages(spec)
    keep_in = os.path.join(ctx.scratch, name)
    if ctx.on_driver:  # rows held here (LocalRows): the loop runs in this process
        sets = {k: RowsInMemory(v.column("features"), v.column("target")) for k, v in sets.items()}
        big, place, trainer = False, "in this process", "driver"
    else:
        big = use_ray_train(spec, sets["train"].size_bytes())
        place = f"{spec.scaling.num_workers} Ray Train worker(s)" if big else "in one Ray task"
        trainer = "tune" if spec.tune is not None else "ray_train" if big else "task"
    where = place if big else f"{place} (small job)"
    fit_ref = task.fit_reference(samples, spec) if task.fit_metrics else None
    # a task keeps each epoch's checkpoint in the run's own storage when that is a local folder
    task_resumes = "://" not in ctx.storage
    if ctx.folder.resumed and (trainer == "driver" or (trainer == "task" and not task_resumes)):
        # (a tuned run's trials resume: a Tune experiment)
        rep.info(f"a small job trains {place}, which keeps no checkpoint: its training starts "
                 "again (TorchTrainer training resumes; scaling.trainer: ray_train asks for one)")
    board = DirectBoard(rep) if ctx.on_driver else make_board()
    t0 = time.perf_counter()
    run_spec, tuned, notes = spec, None, []

    def train_stage(i, stage, stage_sets, layout):
        nonlocal run_spec, tuned
        if spec.tune is not None:  # each trial trains with its own job's train settings
            tuned, run_spec = _tune_stage(ctx, stage_sets, layout, os.path.join(keep_in, stage), board,
                                          f"{name}-{stage}-tune")
            return tuned.best, run_spec.model.model_dump()
        layout["train"] = tr = task.stage_train(spec, stage)
        step = f"stage {i + 1}/{len(stages)} '{stage}': " if len(stages) > 1 else ""
        rep.stage("training", f"{step}{where}, up to {tr['epochs']} epochs")
        with failing_as("training failed", RuntimeError):
            if ctx.on_driver:
                return in_process_stage(spec, task, board, None, ctx.cpus, keep_in)(i, stage, stage_sets, layout)
            if big:
                out = fit_with_ray_train(spec, stage_sets, layout, ctx.storage, board, ctx.cpus,
                                         os.path.join(keep_in, stage), run_name=_run_name(ctx, f"{name}-{stage}"))
            else:
                resume_dir = os.path.join(ctx.storage, _run_name(ctx, f"{name}-{stage}")) if task_resumes else None
                out = fit_in_task(spec, stage_sets, layout, board, ctx.cpus, os.path.join(keep_in, stage),
                                  resume_dir=resume_dir)
        return out, spec.model.model_dump()

    try:
        with contextlib.nullcontext() if ctx.on_driver else BoardWatcher(board, rep):
            if spec.tune is not None and task.fit_metrics:
                layout = {"n_features": n_features, "info": dict(info), "has_valid": "valid" in sets,
                          "whole_fit": {"samples": samples, "fit_ref": fit_ref}}
                tuned, run_spec = _tune_stage(ctx, sets, layout, os.path.join(keep_in, "tune"), board,
                                              f"{name}-tune")
                best = tuned.best
                state = torch.load(best.state_path, map_location="cpu", weights_only=True)
                out = StagesOutcome(state, best.info or dict(info), best.history, best,
                                    {k: best.best[k] for k in task.fit_metrics if k in best.best})
                notes.append(f"the best trial's fit: {_scores_text(out.scores)}")
            else:
                out = run_stages(task, spec, sets, n_features, info, samples, train_stage, fit_ref, rep.info,
                                 **({"rows_of": RowsInMemory} if ctx.on_driver else {}))
                if out.scores:
                    notes.append(f"label-free fit criteria: {_scores_text(out.scores)}")
    finally:
        board.close()
    for line in notes:
        rep.info(line)
    return Fitted(out.state, out.info, out.history, {**out.last.best, **out.scores}, task.stages(run_spec),
                  trainer, time.perf_counter() - t0, run_spec, tuned.leaderboard if tuned else None,
                  tuned.trials if tuned else None, tuned.lessons if tuned else None, fit_ref)


def _scores_text(scores: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
