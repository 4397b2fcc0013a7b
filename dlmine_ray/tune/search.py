"""Ray Tune model selection over dotted job fields.

Each trial runs the same generic loop as an untuned run. With one worker per trial the loop runs
directly inside the Tune trial (a TorchTrainer per trial costs more than a small trial itself:
about 44 s against 13 s for four trials, measured on a 2-core machine with Ray 2.60); with several workers per trial, the
trial starts a TorchTrainer and relays its reports through ``TuneReportCallback``, the pattern
Train V2 documents. The best trial's checkpoint becomes the run's model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from dlmine_ray.errors import DlmineError
from dlmine_ray.runtime.progress import COMPLETED, ERROR, STOPPED, trial_value
from dlmine_ray.spec import JobSpec, spec_from_dict
from dlmine_ray.tasks import get_task
from dlmine_ray.train.loop import TuneEnv, run_loop
from dlmine_ray.train.trainer import TrainOutcome, fit_with_ray_train, loop_config, read_checkpoint

_JSON_PREFIX = "json:"


def _domain(dom: Any):
    from ray import tune

    if isinstance(dom, dict):
        kind, args = next(iter(dom.items()))
        if kind == "choice":
            dom = args
        else:
            return {"loguniform": tune.loguniform, "uniform": tune.uniform,
                    "randint": tune.randint, "quniform": tune.quniform}[kind](*args)
    # Optuna only accepts scalar categories: carry lists (layer widths) as JSON strings.
    return tune.choice([_JSON_PREFIX + json.dumps(v) if isinstance(v, (list, dict)) else v for v in dom])


def param_space(spec: JobSpec, space: Optional[dict] = None) -> dict:
    """Tune's search space: one entry per dotted job field of ``space`` (default: the job's,
    ``tune.space``, else the task's)."""
    return {key: _domain(dom) for key, dom in (space or spec.search_space()).items()}


def encode_point(point: dict) -> dict:
    """A configuration (dotted field -> value) as Tune's space carries it (lists as JSON strings)."""
    return {k: _JSON_PREFIX + json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in point.items()}


def decode_params(config: dict) -> dict:
    """Undo the JSON carriage of list-valued choices."""
    return {k: json.loads(v[len(_JSON_PREFIX):]) if isinstance(v, str) and v.startswith(_JSON_PREFIX) else v
            for k, v in config.items()}


def trial_spec(spec_doc: dict, params: dict) -> JobSpec:
    """The job spec of one trial: the base job with the trial's parameters set."""
    return spec_from_dict(spec_doc, list(decode_params(params).items()))


def _trial_direct(config, datasets=None, base=None, layout=None, progress=None, cpus=1.0):
    from ray import tune

    spec = trial_spec(base, config)
    cfg = loop_config(spec, layout, progress, tune.get_context().get_trial_id(), cpus)
    run_loop(cfg, TuneEnv(datasets, spec.scaling.use_gpu))


def _trial_whole(config, datasets=None, base=None, layout=None, progress=None, cpus=1.0):
    """A trial that is a whole fit: every stage of the task in this process, then its label-free
    fit criteria, reported once with the finished model as the checkpoint."""
    import shutil

    from ray import tune

    from dlmine_ray.train.stages import RowsInMemory, in_process_stage, run_stages, write_whole_fit

    spec = trial_spec(base, config)
    task = get_task(spec.task)
    whole = layout["whole_fit"]
    with tempfile.TemporaryDirectory() as keep:
        stage = in_process_stage(spec, task, progress, tune.get_context().get_trial_id(), cpus, keep)
        out = run_stages(task, spec, datasets, layout["n_features"], layout["info"], whole["samples"], stage,
                         whole["fit_ref"], rows_of=RowsInMemory)
    d = write_whole_fit(out)
    try:
        tune.report({"epoch": len(out.history), **out.scores, **{f"best_{k}": v for k, v in out.scores.items()},
                     "done": True}, checkpoint=tune.Checkpoint.from_directory(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _trial_trainer(config, datasets=None, base=None, layout=None, progress=None, cpus=1.0, storage=""):
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = trial_spec(base, config)
    with tempfile.TemporaryDirectory() as keep:
        fit_with_ray_train(spec, datasets, layout, storage, progress, cluster_cpus=cpus, keep_in=keep,
                           callbacks=[TuneReportCallback()])


class _RecordingASHA(ASHAScheduler):
    """ASHA that adds each trial it stops early to its search's ``stopped`` (see ``_scheduler``).

    The search is named by ``key`` (its experiment name) in ``_LIVE``: Tune pickles its scheduler
    and callbacks with the experiment, and a restored experiment's copies find the live run's state
    by name (this class is importable, so it is pickled by reference, not by value)."""

    def __init__(self, key: str, **kw):
        super().__init__(**kw)
        self.key = key

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        # a STOP at max_t (all the epochs run) ends nothing early
        if decision == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t and self.key in _LIVE:
            _LIVE[self.key].stopped.add(trial.trial_id)
        return decision


def _scheduler(spec: JobSpec, key: str):
    """The trial scheduler of ``spec.tune``; every trial it stops is added to the ``stopped`` of
    search ``key``.

    Tune marks a trial's last result ``done`` and its status TERMINATED both when the trial ended
    itself and when a scheduler stopped it; only the scheduler's own decision tells them apart.
    A trial that ends itself (its last epoch, or our early stopping) reports ``done`` and Tune
    stops it before asking the scheduler, so a STOP from the scheduler is always its own."""
    from ray.tune.schedulers import FIFOScheduler

    ts = spec.tune
    if ts.scheduler != "asha":
        return FIFOScheduler()
    return _RecordingASHA(key, max_t=spec.train.epochs, grace_period=min(ts.grace_period, spec.train.epochs),
                          reduction_factor=3)


def _params_text(config: dict) -> str:
    def show(v):
        return json.dumps(v) if isinstance(v, (list, dict)) else f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={show(v)}" for k, v in decode_params(config or {}).items())


@dataclass
class _Search:
    """The live state of one search, on the driver: the trials the scheduler stopped, how each
    trial ended (trial id -> COMPLETED, STOPPED or ERROR), and whom to tell."""

    stopped: set
    ends: dict
    metric: str
    mode: str
    reporter: Any = None
    values: dict = field(default_factory=dict)  # trial id -> its value of the metric (None: none)


#: the searches running in this process, by experiment name
_LIVE: dict[str, _Search] = {}


class _TrialEnds(Callback):
    """Records each trial's end in its search's ``ends`` and tells the reporter as it happens (on
    the driver, in Tune's loop). Its state (the ends so far) is saved with Tune's experiment
    checkpoint, so a restored search knows how its finished trials ended."""

    def __init__(self, key: str):
        self.key = key

    def _end(self, trial, status):
        live = _LIVE.get(self.key)
        if live is None:
            return
        live.ends[trial.trial_id] = status
        live.values[trial.trial_id] = trial_value(trial.last_result or {}, live.metric) if status != ERROR else None
        if live.reporter is not None:
            live.reporter.trial_ended(trial.trial_id, status, trial.last_result or {}, _params_text(trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        live = _LIVE.get(self.key)
        self._end(trial, STOPPED if live is not None and trial.trial_id in live.stopped else COMPLETED)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, ERROR)

    def get_state(self):
        live = _LIVE.get(self.key)
        if live is None:
            return None
        return {"ends": dict(live.ends), "stopped": sorted(live.stopped), "values": dict(live.values)}

    def set_state(self, state):
        live = _LIVE.get(self.key)
        if live is None or not state:
            return
        live.ends.update(state.get("ends", {}))
        live.stopped.update(state.get("stopped", []))
        live.values.update(state.get("values", {}))
        if live.reporter is not None:
            live.reporter.trials_restored(list(live.values.values()))


@dataclass
class TuneOutcome:
    """The best trial's training outcome and the leaderboard of all trials."""

    best: TrainOutcome
    leaderboard: pd.DataFrame
    best_params: dict
    metric: str
    mode: str
    #: every trial: {"trial", "status", "params" (dotted field -> value), "value", "epochs", "seconds"}
    trials: list = None
    #: what the trials teach (set by the pipeline: tune/lessons.py)
    lessons: Optional[dict] = None


def _complete(point: dict, space: dict, spec: JobSpec) -> Optional[dict]:
    """``point`` with every key of ``space``: a missing one takes the job's value where the space
    allows it; None when it does not."""
    from dlmine_ray.tune.warm import allowed

    out = dict(point)
    for key, dom in space.items():
        if key in out:
            continue
        value = spec.field_value(key)
        if not allowed(dom, value):
            return None
        out[key] = value
    return out


#: single-worker trials get (features, target) splits of at most this many bytes as arrays in the
#: object store instead of Ray Datasets: a trial then starts no Ray Data execution of its own
TRIAL_ROWS_BYTES = 64 << 20


def _in_memory_when_small(datasets: dict) -> dict:
    """``datasets`` as RowsInMemory when they hold at most TRIAL_ROWS_BYTES together (else as
    they are)."""
    import numpy as np

    from dlmine_ray.train.stages import RowsInMemory

    if sum(ds.size_bytes() for ds in datasets.values()) > TRIAL_ROWS_BYTES:
        return datasets
    out = {}
    for key, ds in datasets.items():
        xs, ys = [], []
        for b in ds.iter_batches(batch_format="numpy", batch_size=65536):
            xs.append(b["features"])
            ys.append(b["target"])
        if not xs:
            return datasets
        out[key] = RowsInMemory(np.concatenate(xs), np.concatenate(ys))
    return out


def run_tune(spec: JobSpec, datasets: dict, layout: dict, storage: str, progress, cluster_cpus: float,
             keep_in: str, reporter=None, points: Optional[list[dict]] = None,
             space: Optional[dict] = None, explored: int = 0, name: Optional[str] = None,
             resume: bool = False) -> TuneOutcome:
    """Run the trials of ``spec.tune``; return a TuneOutcome: the best trial's model, and the
    leaderboard of every trial with its status (COMPLETED, STOPPED by the scheduler, or ERROR).
    ``points``: configurations (dotted field -> value) tried first, before the random ones;
    ``space``: the space to search (default: the job's); ``explored``: how many trials this
    dataset has had before, which moves the random draws on (a search run again samples settings it
    has not tried, and a first search stays reproducible). ``name``: the experiment's folder under
    ``storage`` (default: unique); with ``resume``, an interrupted experiment there is restored and
    goes on (its ended trials kept, its unfinished ones resumed from their last checkpoint).

    The best trial is the one with the best ``best_<metric>`` (its best epoch's value of the tuned
    metric), the value the console's "best so far" and the leaderboard's metric column show."""
    from ray import tune

    ts = spec.tune
    metric, mode = spec.selection()
    base = spec.model_dump()
    base["tune"] = None
    if reporter is not None:
        reporter.start_tuning(metric, mode, ts.num_samples)
    per_trial_workers = spec.scaling.num_workers
    if per_trial_workers == 1:
        datasets = _in_memory_when_small(datasets)
    if layout.get("whole_fit") is not None:  # every stage in the trial's process
        cpus = spec.scaling.cpus_per_worker or 1.0
        trainable = tune.with_parameters(_trial_whole, datasets=datasets, base=base, layout=layout,
                                         progress=progress, cpus=cpus)
        resources = {"CPU": cpus, "GPU": 1 if spec.scaling.use_gpu else 0}
        slots = max(1, int(cluster_cpus // cpus))
    elif per_trial_workers == 1:
        cpus = spec.scaling.cpus_per_worker or 1.0
        trainable = tune.with_parameters(_trial_direct, datasets=datasets, base=base, layout=layout,
                                         progress=progress, cpus=cpus)
        resources = {"CPU": cpus, "GPU": 1 if spec.scaling.use_gpu else 0}
        slots = max(1, int(cluster_cpus // cpus))
    else:
        wcpus = spec.scaling.cpus_per_worker or 1.0
        trainable = tune.with_parameters(_trial_trainer, datasets=datasets, base=base, layout=layout,
                                         progress=progress, cpus=wcpus * per_trial_workers, storage=storage)
        resources = {"CPU": 0.01}  # the trial only waits; its TorchTrainer workers hold the CPUs
        slots = max(1, int(cluster_cpus // (wcpus * per_trial_workers)))
    name = name or f"{spec.name}-tune-{uuid.uuid4().hex[:8]}"
    live = _LIVE[name] = _Search(set(), {}, metric, mode, reporter)
    stopped, ends = live.stopped, live.ends
    scheduler = _scheduler(spec, name)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space = space or spec.search_space()
    if ts.search == "optuna":  # Optuna takes whole points only: the job's own values fill the gaps
        points = [p for p in (_complete(p, space, spec) for p in points or []) if p is not None]
    first = [encode_point(p) for p in points or []] or None
    # seeded, so that a tuned job run twice tries the same configurations (unseeded, it did not)
    seed = spec.train.seed + 7919 * explored
    search_alg = BasicVariantGenerator(points_to_evaluate=first, random_state=seed)
    if ts.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=seed, points_to_evaluate=first)
    path = os.path.join(storage, name)
    if resume and tune.Tuner.can_restore(path):
        # the experiment as it was started (space, search and its state, scheduler, callbacks)
        tuner = tune.Tuner.restore(path, tune.with_resources(trainable, resources), resume_unfinished=True,
                                   param_space=param_space(spec, space))
    else:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=param_space(spec, space),
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=ts.num_samples, scheduler=scheduler,
                                        search_alg=search_alg, max_concurrent_trials=ts.max_concurrent or slots,
                                        time_budget_s=ts.time_budget_s,
                                        # one process serves trial after trial: a fresh actor per trial (Tune's
                                        # default) cost 8 small trials 96 s against 36 s reused (2 cores)
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=[_TrialEnds(name)]),
        )
    verbose = getattr(reporter, "verbose", False)
    # Tune prints its own experiment box and tables to stdout; our reporter already shows trials.
    try:
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
            grid = tuner.fit()
    finally:
        del _LIVE[name]
    rows, trials, best_row, best_value = [], [], None, None
    unstarted = 0
    for i, res in enumerate(grid):
        m = res.metrics or {}
        if "epoch" not in m and res.error is None:  # never ran: the search stopped first (time_budget_s)
            unstarted += 1
            continue
        df = res.metrics_dataframe if res.metrics_dataframe is not None else pd.DataFrame()
        value = trial_value(m, metric)
        trial_id = m.get("trial_id", f"trial_{i}")
        status = ERROR if res.error else ends.get(trial_id, STOPPED if trial_id in stopped else COMPLETED)
        params = decode_params({k: v for k, v in (res.config or {}).items()})
        row = {"trial": trial_id, "status": status,
               "epochs": int(m.get("epoch", 0) or 0), metric: value,
               "seconds": float(m.get("time_total_s", float("nan")) or float("nan"))}
        task = get_task(spec.task)
        for k in {**task.val_metrics, **task.fit_metrics}:
            if f"best_{k}" in m:
                row[f"best_{k}"] = m[f"best_{k}"]
        for k, v in params.items():
            row[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
        rows.append(row)
        trials.append({"trial": trial_id, "status": status, "params": params, "value": value,
                       "epochs": row["epochs"], "seconds": row["seconds"]})
        ok = res.error is None and value is not None
        if ok and (best_value is None or (value < best_value if mode == "min" else value > best_value)):
            best_value, best_row = value, (res, df, params)
    if best_row is None and ts.time_budget_s and not any(r.error for r in grid):
        raise DlmineError(f"tune.time_budget_s ({ts.time_budget_s:g}s) ended the search before any trial finished "
                          "an epoch; raise it")
    if best_row is None:
        errors = [str(r.error).splitlines()[-1] for r in grid if r.error]
        raise RuntimeError("every tuning trial failed" + (f": {errors[0]}" if errors else ""))
    if unstarted and reporter is not None:
        reporter.info(f"{unstarted} of {ts.num_samples} trials never started: tune.time_budget_s "
                      f"({ts.time_budget_s:g}s) ended the search")
    res, df, params = best_row
    if res.checkpoint is not None:
        with res.checkpoint.as_directory() as d:
            best = read_checkpoint(d, keep_in)
    else:
        import ray.train

        path = df["checkpoint_path"].dropna().iloc[-1]  # relayed by TuneReportCallback
        with ray.train.Checkpoint(path).as_directory() as d:
            best = read_checkpoint(d, keep_in)
    board = pd.DataFrame(rows)
    board = board.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return TuneOutcome(best, board, params, metric, mode, trials)
