"""The ONE training loop, generic over tasks.

``run_loop`` trains any task's model: it streams batches from the worker's dataset shard,
reports metrics every epoch, checkpoints on improvement, and stops early. Where it runs is
abstracted by a small ``LoopEnv``: ``TrainEnv`` inside a Ray Train (TorchTrainer) worker, one or
many, CPU or GPU; ``TuneEnv`` inside a single-worker Tune trial; ``TaskEnv`` inside one Ray
task, for small single-worker jobs where starting a TorchTrainer would cost more than the
training itself (see ``train/trainer.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch

MODEL_STATE = "model_state.pt"
HISTORY = "history.json"
#: in a TorchTrainer's per-epoch checkpoint: what a restarted worker group resumes from (the
#: current weights and optimiser, the epoch, the early-stopping state and the best weights)
RESUME_STATE = "resume_state.pt"


class ShardBatches:
    """Batches of (features, target) tensors from one dataset shard.

    When the shard fits in ``cache_bytes`` it is streamed once into memory and every epoch then
    draws shuffled batches from there (much cheaper per epoch than re-streaming); otherwise each
    epoch streams the shard again through a local shuffle buffer."""

    def __init__(self, shard, target_dtype: torch.dtype, batch_size: int, cache_bytes: int,
                 seed: int, shuffle: bool):
        self.shard = shard
        self.target_dtype = target_dtype
        self.batch_size = batch_size
        self.cache_bytes = cache_bytes
        self.seed = seed
        self.shuffle = shuffle
        self._cached: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._too_big = False

    def _stream(self, shuffle_buffer: Optional[int], batch_size: Optional[int] = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.shard.iter_torch_batches(
            batch_size=batch_size or self.batch_size, dtypes={"features": torch.float32, "target": self.target_dtype},
            device="cpu", local_shuffle_buffer_size=shuffle_buffer,
        ):
            yield b["features"], b["target"]

    def _fill_cache(self) -> bool:
        xs, ys, used = [], [], 0
        # large batches: filling the cache in training-size batches cost 5-10x more here
        for x, y in self._stream(None, max(self.batch_size, 16384)):
            used += x.element_size() * x.nelement() + y.element_size() * y.nelement()
            if used > self.cache_bytes:
                self._too_big = True
                return False
            xs.append(x)
            ys.append(y)
        if xs:
            self._cached = (torch.cat(xs), torch.cat(ys))
        else:
            self._cached = (torch.zeros((0, 0)), torch.zeros((0,), dtype=self.target_dtype))
        return True

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of one epoch."""
        if self._cached is None and not self._too_big and self.cache_bytes > 0:
            self._fill_cache()
        if self._cached is not None:
            x, y = self._cached
            n = y.shape[0]
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
                order = torch.randperm(n, generator=g)
            else:
                order = None
            for i in range(0, n, self.batch_size):
                if self.shuffle and n - i == 1 and n > 1:
                    # a last training batch of one row: batch norm cannot train on it (it raised in a
                    # tuning trial with batch_norm), and one row is noise as a step
                    break
                if order is None:
                    yield x[i:i + self.batch_size], y[i:i + self.batch_size]
                else:
                    idx = order[i:i + self.batch_size]
                    yield x[idx], y[idx]
            return
        for x, y in self._stream(max(4 * self.batch_size, 4096) if self.shuffle else None):
            if self.shuffle and y.shape[0] == 1:  # streamed: only the last batch can be this short
                continue
            yield x, y


class LoopEnv:
    """Where the loop runs: ranks, device, data shards, cross-worker sums, reporting."""

    rank = 0
    world_size = 1
    device = torch.device("cpu")

    def shard(self, name: str):
        raise NotImplementedError

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_sum(self, values: dict[str, Any]) -> dict[str, Any]:
        """Sum each value (a float or an array) over the workers."""
        return values

    def report(self, metrics: dict, checkpoint_dir: Optional[str]) -> None:
        raise NotImplementedError

    #: whether every epoch writes a checkpoint (a restarted worker group resumes from the last
    #: epoch); elsewhere a checkpoint is written only when the kept model changes or at the end
    checkpoint_every_epoch = False
    #: whether checkpoints carry the resume state (model, optimiser, epoch, early stopping), so
    #: that a restored run (a restarted worker group, a restored Tune trial) goes on from them
    resumable = False

    def resume_state(self) -> Optional[dict]:
        """The state to resume from (a restarted run), or None to start afresh."""
        return None


class TrainEnv(LoopEnv):
    """Inside a Ray Train worker (TorchTrainer)."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def shard(self, name):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def wrap_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def all_sum(self, values):
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        parts = [np.atleast_1d(np.asarray(values[k], dtype=np.float64)) for k in keys]
        t = torch.from_numpy(np.concatenate(parts)).to(self.device)
        dist.all_reduce(t)
        flat = t.cpu().numpy()
        out, i = {}, 0
        for k, p in zip(keys, parts):
            v = flat[i:i + p.size]
            out[k] = float(v[0]) if np.ndim(values[k]) == 0 else v.reshape(np.shape(values[k]))
            i += p.size
        return out

    def report(self, metrics, checkpoint_dir):
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    checkpoint_every_epoch = True
    resumable = True

    def resume_state(self):
        import ray.train

        return _resume_state(ray.train.get_checkpoint())


def _resume_state(ckpt) -> Optional[dict]:
    """The resume state in a Ray checkpoint (None without one)."""
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return _resume_state_in(d)


def _resume_state_in(d: str) -> Optional[dict]:
    """The resume state in a checkpoint folder (None without one). The best weights are the
    checkpoint's kept model, stored once; so is the model itself when the epoch was the best one."""
    path = os.path.join(d, RESUME_STATE)
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["best_state"] = torch.load(os.path.join(d, MODEL_STATE), map_location="cpu", weights_only=True)
    if state["model"] is None:
        state["model"] = state["best_state"]
    return state


class TuneEnv(LoopEnv):
    """Inside a single-worker Tune trial: the datasets are passed in, reports go to Tune."""

    def __init__(self, datasets: dict, use_gpu: bool):
        self.datasets = datasets
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def shard(self, name):
        return self.datasets.get(name)

    def report(self, metrics, checkpoint_dir):
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    resumable = True

    def resume_state(self):
        from ray import tune

        return _resume_state(tune.get_checkpoint())


class TaskEnv(LoopEnv):
    """Inside one Ray task: the datasets are passed in; the last checkpoint is kept in memory
    (weights and history as bytes) and returned by the task, so it works on any node.

    With ``resume_dir`` every epoch's checkpoint (with the resume state) is also kept there, the
    newest only, so that a retried task (its process killed, its node lost) and a ``--resume``d
    run go on from the last epoch, as a TorchTrainer's restarted worker group does."""

    def __init__(self, datasets: dict, use_gpu: bool, resume_dir: Optional[str] = None):
        self.datasets = datasets
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.last_checkpoint: Optional[dict[str, bytes]] = None
        self.resume_dir = resume_dir
        self.checkpoint_every_epoch = self.resumable = resume_dir is not None

    def shard(self, name):
        return self.datasets.get(name)

    def report(self, metrics, checkpoint_dir):
        if checkpoint_dir:
            self.last_checkpoint = {f: open(os.path.join(checkpoint_dir, f), "rb").read()
                                    for f in os.listdir(checkpoint_dir)}
            if self.resume_dir is not None:
                _keep_newest(self.last_checkpoint, self.resume_dir, int(metrics["epoch"]))

    def resume_state(self):
        d = _newest(self.resume_dir) if self.resume_dir is not None else None
        return _resume_state_in(d) if d is not None else None


#: a kept epoch checkpoint's folder name in a resume folder (complete once renamed to it)
_EPOCH_DIR = "epoch-{:06d}"


def _keep_newest(files: dict[str, bytes], resume_dir: str, epoch: int) -> None:
    """Write a checkpoint's files as ``resume_dir``'s newest epoch folder (written aside, then
    renamed: a folder of that name is always complete), and remove the older ones."""
    os.makedirs(resume_dir, exist_ok=True)
    part = tempfile.mkdtemp(prefix=".part-", dir=resume_dir)
    for name, data in files.items():
        with open(os.path.join(part, name), "wb") as f:
            f.write(data)
    final = os.path.join(resume_dir, _EPOCH_DIR.format(epoch))
    shutil.rmtree(final, ignore_errors=True)  # (an epoch trained again after a retry)
    os.rename(part, final)
    for name in os.listdir(resume_dir):
        if name != os.path.basename(final):
            shutil.rmtree(os.path.join(resume_dir, name), ignore_errors=True)


def _newest(resume_dir: str) -> Optional[str]:
    """The newest complete epoch folder in ``resume_dir``, or None."""
    try:
        kept = sorted(n for n in os.listdir(resume_dir) if n.startswith("epoch-"))
    except FileNotFoundError:
        return None
    return os.path.join(resume_dir, kept[-1]) if kept else None


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _write_checkpoint(best_state: dict, history, best: dict, resume: Optional[dict] = None) -> str:
    """A checkpoint folder: the kept (best) weights, the history, and optionally the resume state."""
    d = tempfile.mkdtemp(prefix="dlmine_ckpt_")
    torch.save(best_state, os.path.join(d, MODEL_STATE))
    with open(os.path.join(d, HISTORY), "w") as f:
        json.dump({"history": history, "best": best}, f)
    if resume is not None:
        torch.save(resume, os.path.join(d, RESUME_STATE))
    return d


def run_loop(config: dict, env: LoopEnv) -> None:
    """Train ``config['task']``'s model on the env's "train" shard, validating on "valid".

    ``config`` holds: task (the Task object), model (spec dict), train (spec dict), n_features,
    info (target layout), cpus (threads for torch), progress (optional actor handle), trial (label).
    The epoch kept (and the one early stopping counts from) is the best by the task's
    ``selection_metric``."""
    task = config["task"]
    sel = task.selection_metric
    tr = config["train"]
    threads = max(1, int(config.get("cpus") or 1))
    torch.set_num_threads(threads)
    torch.manual_seed(tr["seed"])
    np.random.seed(tr["seed"])
    info = config["info"]
    stage = config.get("stage", "fit")
    model = task.build_model(config["n_features"], info, config["model"])
    if config.get("init_state"):
        model.load_state_dict(config["init_state"], strict=False)
    task.start_stage(model, stage)
    resume = env.resume_state()
    if resume is not None:  # a restarted worker group: on from the last epoch's checkpoint
        model.load_state_dict(resume["model"])
    model = env.wrap_model(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tr["lr"],
                            weight_decay=tr["weight_decay"])
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
    tdtype = task.target_torch_dtype()
    cache = int(tr.get("cache_mb", 1024)) * 2**20
    train = ShardBatches(env.shard("train"), tdtype, tr["batch_size"], cache, tr["seed"] + env.rank, True)
    vshard = env.shard("valid") if config.get("has_valid", True) else None
    valid = ShardBatches(vshard, tdtype, max(tr["batch_size"], 1024), cache, 0, False) if vshard is not None else None
    progress = config.get("progress")
    history: list[dict] = []
    best: dict[str, Any] = {}
    best_value = None
    stale = 0
    first = 1
    if resume is not None:
        history, best, best_value, stale = resume["history"], resume["best"], resume["best_value"], resume["stale"]
        config["_best_state"] = resume["best_state"]
        first = resume["epoch"] + 1
        if resume.get("stopped"):  # it had finished (the last epoch, or stopped early): no more epochs
            _report_finished(env, config["_best_state"], history, best, resume)
            return
    started = time.perf_counter()
    for epoch in range(first, tr["epochs"] + 1):
        t0 = time.perf_counter()
        ctx = {"info": info, "epoch": _epoch_stats(task, model, train, epoch, stage, info, env,
                                                           config["n_features"])}
        model.train()
        loss_sum, seen = 0.0, 0
        for x, y in train.epoch(epoch):
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = task.step_loss(model, x, y, stage, ctx)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.shape[0]
            seen += y.shape[0]
        train_seconds = time.perf_counter() - t0
        tot = env.all_sum({"loss_sum": loss_sum, "n": float(seen)})
        metrics = {"epoch": epoch, "train_loss": tot["loss_sum"] / max(tot["n"], 1.0),
                   "samples_per_s": tot["n"] / max(train_seconds, 1e-9)}
        if valid is not None:
            model.eval()
            sums: dict[str, float] = {}
            with torch.no_grad():
                for x, y in valid.epoch(epoch):
                    for k, v in task.eval_sums(model, x.to(env.device), y.to(env.device), stage, ctx).items():
                        sums[k] = sums.get(k, 0.0) + v
                if not sums:  # this worker's validation shard is empty: zeros of the same keys
                    sums = {k: 0.0 for k in task.eval_sums(
                        model, torch.zeros((1, config["n_features"]), device=env.device),
                        torch.zeros((1,), dtype=tdtype, device=env.device), stage, ctx)}
            metrics.update(task.epoch_metrics(env.all_sum(sums), info))
        else:
            metrics["val_loss"] = metrics["train_loss"]
        metrics["epoch_seconds"] = time.perf_counter() - t0
        metrics["elapsed_seconds"] = time.perf_counter() - started
        history.append(metrics)
        if not np.isfinite(metrics["train_loss"]) or not np.isfinite(metrics["val_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss is {metrics['train_loss']}); "
                                     "lower train.lr or check the data")
        # keep "last": stages whose objective moves with its own targets (DEC) keep the last epoch
        # without validation rows only val_loss (= the training loss) is there to select by
        key = sel if sel in metrics else "val_loss"
        sign = 1.0 if task.val_metrics.get(key, "min") == "min" else -1.0
        value = sign * metrics[key]
        improved = tr.get("keep") == "last" or best_value is None or value < best_value - 1e-12
        if improved:
            best_value, best, stale = value, dict(metrics), 0
        else:
            stale += 1
        patience = tr["early_stopping"]
        stop = epoch == tr["epochs"] or (patience > 0 and stale >= patience)
        if progress is not None and env.rank == 0:
            progress.put.remote({"kind": "epoch", "trial": config.get("trial"), "epochs": tr["epochs"],
                                 "stop": stop, **metrics})
        ckpt_dir = None
        if env.rank == 0 and (improved or stop or env.checkpoint_every_epoch):
            if improved:  # only the rank that writes checkpoints keeps the best weights
                config["_best_state"] = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            resume_now = None
            if env.resumable:  # the best weights travel as the checkpoint's MODEL_STATE (so does the
                # model of a best epoch: None here)
                now = None if improved else {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
                resume_now = {"model": now,
                              "optimizer": opt.state_dict(), "epoch": epoch, "history": history, "best": best,
                              "best_value": best_value, "stale": stale, "stopped": stop}
            ckpt_dir = _write_checkpoint(config["_best_state"], history, best, resume_now)
        _report(env, metrics, best, stop, ckpt_dir)
        if stop:
            break


def _report(env: LoopEnv, metrics: dict, best: dict, stop: bool, ckpt_dir: Optional[str]) -> None:
    """Report an epoch's metrics (with the best epoch's validation metrics as ``best_*``) and the
    checkpoint folder, which is removed after."""
    report = dict(metrics)
    report.update({f"best_{k}": v for k, v in best.items() if k.startswith("val_")})
    report["done"] = stop
    try:
        env.report(report, ckpt_dir)
    finally:
        if ckpt_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)


def _report_finished(env: LoopEnv, best_state: dict, history: list, best: dict, resume: dict) -> None:
    """A restored run that had already finished (a finished stage of a resumed run): report its
    last epoch again with its final checkpoint, so that the trainer's result is that checkpoint."""
    # the best weights are held once, as MODEL_STATE (and so is the model when it is the best)
    resume = {**{k: v for k, v in resume.items() if k != "best_state"},
              "model": None if resume["model"] is best_state else resume["model"]}
    ckpt_dir = _write_checkpoint(best_state, history, best, resume) if env.rank == 0 else None
    _report(env, history[-1], best, True, ckpt_dir)


def _epoch_stats(task, model, batches: ShardBatches, epoch: int, stage: str, info: dict, env: LoopEnv,
                 n_features: int):
    """The task's pre-epoch statistics over this worker's training shard, summed over workers."""
    model.eval()
    with torch.no_grad():
        # an empty batch gives the zeros to start from, so that every worker sums the same keys
        empty = task.epoch_stats(model, torch.zeros((0, n_features), device=env.device), stage, info)
        if empty is None:
            return None
        sums = {k: _as_numpy(v) for k, v in empty.items()}
        for x, _ in batches.epoch(epoch):
            for k, v in task.epoch_stats(model, x.to(env.device), stage, info).items():
                sums[k] = sums[k] + _as_numpy(v)
    return env.all_sum(sums)


def _as_numpy(v):
    return v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else v


def train_worker(config: dict) -> None:
    """Entry point of a TorchTrainer worker."""
    run_loop(config, TrainEnv())
