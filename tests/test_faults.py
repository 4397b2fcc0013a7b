"""Faults: a TorchTrainer worker killed mid-training does not kill the run; the restarted worker
group resumes from the last epoch's checkpoint (weights, optimiser, epoch, early stopping,
history), and the result is that of an uninterrupted run, within noise."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from conftest import make_frame, write_job
from dlmine_ray.app.run import run_job

EPOCHS = 25


def _job(tmp_path):
    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    return write_job(tmp_path / "job.yaml", name="faults", data={"path": str(tmp_path / "rows.parquet")},
                     train={"epochs": EPOCHS, "batch_size": 32, "early_stopping": 0},
                     scaling={"num_workers": 2, "cpus_per_worker": 1}, knowledge="off")


def _train_workers(pid: int) -> list:
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in tree:
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def test_a_killed_train_worker_is_replaced_and_training_resumes(tmp_path, ray_local):
    job = _job(tmp_path)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "dlmine_ray.cli", "run", job, "-o", str(tmp_path / "killed")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, killed = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if killed is None and line.strip().startswith("epoch 4/"):
                workers = _train_workers(proc.pid)
                assert len(workers) == 2, "".join(lines)
                killed = workers[-1].pid
                os.kill(killed, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert killed is not None, log
    assert proc.returncode == 0, log[-4000:]
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    # one entry per epoch, in order: the restarted group went on from the checkpoint, not from epoch 1
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    interrupted = json.loads((tmp_path / "killed" / "metrics.json").read_text())

    clean = run_job(job, tmp_path / "clean", quiet=True).metrics
    assert abs(interrupted["accuracy"] - clean["accuracy"]) <= 0.05, (interrupted["accuracy"], clean["accuracy"])
    assert interrupted["accuracy"] > 0.8
