"""Ray Train: run the generic loop on 1..N TorchTrainer workers and collect the best model."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from dlmine_ray.train.loop import HISTORY, MODEL_STATE, train_worker


@dataclass
class TrainOutcome:
    """The best model's weights file, the per-epoch history, the best epoch's metrics, and for a
    whole fit (every stage of a task in one tuning trial) the task's final ``info``."""

    state_path: str
    history: list[dict]
    best: dict[str, Any]
    info: Optional[dict] = None


def read_checkpoint(path: str, keep_in: str) -> TrainOutcome:
    """Copy a checkpoint's weights into ``keep_in``; return them with the history."""
    os.makedirs(keep_in, exist_ok=True)
    dst = os.path.join(keep_in, MODEL_STATE)
    shutil.copyfile(os.path.join(path, MODEL_STATE), dst)
    with open(os.path.join(path, HISTORY)) as f:
        h = json.load(f)
    return TrainOutcome(dst, h["history"], h["best"], h.get("info"))


def worker_cpus(spec, cluster_cpus: float) -> float:
    """CPUs per Train worker: as asked, else an even share of the cluster (at least 1)."""
    if spec.scaling.cpus_per_worker:
        return spec.scaling.cpus_per_worker
    return max(1.0, float(int(cluster_cpus // spec.scaling.num_workers)))


def loop_config(spec, layout: dict, progress=None, trial: Optional[str] = None, cpus: float = 1.0) -> dict:
    """The config dict the generic loop reads (plain data and the task object, so it travels to
    workers). ``layout`` holds n_features, info, has_valid and, for one stage of a multi-stage
    task, the stage name, its train settings and the weights it starts from (init_state)."""
    from dlmine_ray.tasks import get_task

    return {
        "task": get_task(spec.task), "model": spec.model.model_dump(),
        "train": layout.get("train") or spec.train.model_dump(),
        "n_features": layout["n_features"], "info": layout["info"], "progress": progress,
        "trial": trial, "cpus": cpus, "has_valid": layout.get("has_valid", True),
        "stage": layout.get("stage", "fit"), "init_state": layout.get("init_state"),
    }


#: below this size (encoded training split), a single-worker CPU job trains in one Ray task. At 2M x
#: 32 rows (a 192 MiB split) the task's whole fit was 0.87 of the bare loop against the
#: TorchTrainer's 0.61-0.75 (`benchmarks/bench_pipeline.py --rows 2000000 --epochs 3 --trainer both`),
#: and both go on from the last epoch when their process dies (the task through its resume folder)
SMALL_JOB_BYTES = 256 * 2**20


def use_ray_train(spec, train_bytes: int) -> bool:
    """Whether a run trains with a TorchTrainer (``scaling.trainer``; ``auto`` picks one for
    several workers, GPUs, or a training split of SMALL_JOB_BYTES or more)."""
    mode = spec.scaling.trainer
    if mode != "auto":
        return mode == "ray_train"
    return spec.scaling.num_workers > 1 or spec.scaling.use_gpu or train_bytes >= SMALL_JOB_BYTES


def fit_in_task(spec, datasets: dict, layout: dict, progress=None, cluster_cpus: float = 1.0,
                keep_in: str = "", resume_dir: Optional[str] = None) -> TrainOutcome:
    """Train a single-worker job with the same loop in one Ray task: no worker group, controller
    or process group to start (a TorchTrainer's fixed cost is several seconds). With
    ``resume_dir`` (a local folder) each epoch's checkpoint is kept there: the task, retried up to
    ``scaling.max_failures`` times when its process dies, and a resumed run that trains again
    with the same folder go on from the last epoch."""
    import ray

    from dlmine_ray.train.loop import TaskEnv, run_loop

    cpus = worker_cpus(spec, cluster_cpus)
    use_gpu = spec.scaling.use_gpu

    @ray.remote(num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_retries=spec.scaling.max_failures)
    def train_task(config, sets):
        env = TaskEnv(sets, use_gpu, resume_dir)
        run_loop(config, env)
        return env.last_checkpoint

    files = ray.get(train_task.remote(loop_config(spec, layout, progress, None, cpus), datasets))
    if not files:
        raise RuntimeError("training finished without a checkpoint")
    d = os.path.join(keep_in, "checkpoint")
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return read_checkpoint(d, keep_in)


def fit_with_ray_train(spec, datasets: dict, layout: dict, storage: str, progress=None,
                       cluster_cpus: float = 1.0, keep_in: str = "", callbacks=None,
                       run_name: Optional[str] = None) -> TrainOutcome:
    """Train with a TorchTrainer; return the best checkpoint's weights and history. ``run_name``:
    a fixed name in a run's own storage, so that a resumed run's trainer finds the interrupted
    one's checkpoints (Ray Train restores a run of the same name and storage); default unique."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cpus = worker_cpus(spec, cluster_cpus)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config(spec, layout, progress, None, cpus),
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.scaling.num_workers, use_gpu=spec.scaling.use_gpu,
            resources_per_worker={"CPU": cpus},
        ),
        datasets=datasets,
        run_config=ray.train.RunConfig(
            name=run_name or f"{spec.name}-{uuid.uuid4().hex[:8]}",  # unique: a reused name silently resumes
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # a lost worker restarts the group, and the loop resumes from the last epoch's checkpoint
            failure_config=ray.train.FailureConfig(max_failures=spec.scaling.max_failures),
            callbacks=callbacks or [],
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        return read_checkpoint(d, keep_in)
