"""Faults: a TorchTrainer worker killed mid-training does not kill the run; the restarted worker
group resumes from the last epoch's checkpoint (weights, optimiser, epoch, early stopping,
history), and the result is that of an uninterrupted run, within noise."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from conftest import make_frame, write_job
from dlmine_ray.app.run import run_job
from dlmine_ray.pipelines.write import OWNER, RunFolder

EPOCHS = 25


def _job(tmp_path):
    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    return write_job(tmp_path / "job.yaml", name="faults", data={"path": str(tmp_path / "rows.parquet")},
                     train={"epochs": EPOCHS, "batch_size": 32, "early_stopping": 0},
                     scaling={"num_workers": 2, "cpus_per_worker": 1}, knowledge="off")


def _local_env() -> dict:
    """The environment of a `dlmine run` subprocess that starts its own local Ray."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def _dlmine_run(job: str, out) -> list:
    return [sys.executable, "-m", "dlmine_ray.cli", "run", job, "-o", str(out)]


def test_a_killed_train_worker_is_replaced_and_training_resumes(tmp_path, ray_local):
    job = _job(tmp_path)
    _run_killing_at_epoch_4(_dlmine_run(job, tmp_path / "killed"), "RayTrainWorker", 2)
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    # one entry per epoch, in order: the restarted group went on from the checkpoint, not from epoch 1
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    interrupted = json.loads((tmp_path / "killed" / "metrics.json").read_text())

    clean = run_job(job, tmp_path / "clean", quiet=True).metrics
    assert abs(interrupted["accuracy"] - clean["accuracy"]) <= 0.05, (interrupted["accuracy"], clean["accuracy"])
    assert interrupted["accuracy"] > 0.8


def test_a_killed_training_task_is_retried_and_goes_on_from_its_last_epoch(tmp_path, ray_local):
    """A single-worker job trained in one Ray task (scaling.trainer: task): its process killed at
    epoch 4, Ray runs the task again, which goes on from the last epoch's checkpoint."""
    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="task-faults", data={"path": str(tmp_path / "rows.parquet")},
                    train={"epochs": EPOCHS, "batch_size": 32, "early_stopping": 0},
                    scaling={"trainer": "task", "cpus_per_worker": 1}, knowledge="off")
    log = _run_killing_at_epoch_4(_dlmine_run(job, tmp_path / "killed"), "ray::train_task", 1)
    trained = [int(ln.split("epoch ", 1)[1].split("/")[0]) for ln in log.splitlines() if ln.strip().startswith("epoch ")]
    # the task runs ahead of the epochs the driver has printed, so the attempt killed when "epoch 4"
    # showed may have got further; each epoch is told before its checkpoint is kept, so the retried
    # attempt goes on from the last epoch told (its checkpoint missed) or the one after: it repeats
    # at most that one epoch, and never starts from epoch 1
    restarts = [i for i in range(1, len(trained)) if trained[i] <= trained[i - 1]]
    assert len(restarts) <= 1 and all(trained[i] == trained[i - 1] >= 4 for i in restarts), trained
    assert trained.count(1) == 1 and trained[-1] == EPOCHS, trained
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["accuracy"] > 0.8


def _run_killing_at_epoch_4(cmd: list, marker: str, expected: int) -> str:
    """Run ``cmd`` (a `dlmine run` that starts its own Ray); when it prints epoch 4, SIGKILL the last
    of its ``expected`` processes whose command line holds ``marker``; assert that it still
    succeeds, and return its output."""
    proc = subprocess.Popen(cmd, env=_local_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, killed = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if killed is None and line.strip().startswith("epoch 4/"):
                found = _processes(proc.pid, marker)
                assert len(found) == expected, "".join(lines)
                killed = found[-1].pid
                os.kill(killed, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert killed is not None, log
    assert proc.returncode == 0, log[-4000:]
    return log


def test_a_stopped_run_through_ray_cleans_up_and_says_so(tmp_path):
    """SIGTERM (a scheduler's stop, `kill`) to a run with its own local Ray: the run stops as Ctrl-C
    stops it (exit 130, "interrupted", no output, no staging folder), not with Ray's own SIGTERM
    handler, which exited at once and left the staging folder behind."""
    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="stopped", data={"path": str(tmp_path / "rows.parquet")},
                    train={"epochs": 20000, "batch_size": 32, "early_stopping": 0},
                    scaling={"trainer": "task", "cpus_per_worker": 1}, knowledge="off")
    proc = subprocess.Popen(_dlmine_run(job, tmp_path / "out"), env=_local_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith("epoch 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    lines.append(proc.communicate(timeout=120)[0])
    _wait_for_session_to_end(proc.pid)
    log = "".join(lines)
    assert proc.returncode == 130 and "interrupted" in [ln.strip() for ln in log.splitlines()], log[-3000:]
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")], log[-3000:]


def _processes(pid: int, marker: str) -> list:
    """The processes under ``pid`` whose command line holds ``marker``."""
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in tree:
        try:
            if marker in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _stage(parent, tag: str, pid: int, job: str = "j", run: str = "") -> None:
    """A staging folder of output ``out`` as a run of process ``pid`` leaves it."""
    d = parent / f".out.tmp-{tag}"
    (d / ".scratch").mkdir(parents=True)
    (d / OWNER).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "job": job, "run": run}))


def test_a_fresh_run_removes_dead_runs_staging_folders_and_never_a_live_ones(tmp_path, ray_local):
    make_frame(300).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "rows.parquet")}, knowledge="off")
    _stage(tmp_path, "dead", _dead_pid())
    _stage(tmp_path, "live", os.getpid())
    (tmp_path / ".out.tmp-unmarked").mkdir()  # an older version's, or one being created: not ours to judge
    run_job(job, tmp_path / "out", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == [".out.tmp-live",
                                                                                       ".out.tmp-unmarked"]
    assert not (tmp_path / "out" / OWNER).exists() and not (tmp_path / "out" / ".scratch").exists()


def test_resuming_a_small_job_trained_in_a_task_says_its_training_starts_again(tmp_path, ray_local, capsys):
    from dlmine_ray.app.jobfile import load_job
    from dlmine_ray.app.run import job_digest

    make_frame(300).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "rows.parquet")}, knowledge="off")
    _stage(tmp_path, "dead", _dead_pid(), job=job_digest(load_job(job)))
    run_job(job, tmp_path / "out", resume=True)
    err = capsys.readouterr().err
    assert "resuming the interrupted run" in err and "its training starts again" in err, err
    assert (tmp_path / "out" / "metrics.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]


def test_resuming_takes_over_the_newest_dead_run_of_the_same_job_and_its_run_id(tmp_path):
    _stage(tmp_path, "other-job", _dead_pid(), job="k", run="r-other")
    _stage(tmp_path, "same-job", _dead_pid(), job="j", run="r-same")
    (tmp_path / ".out.tmp-same-job" / "model").mkdir()  # outputs it had begun to write
    (tmp_path / ".out.tmp-same-job" / "metrics.json").write_text("{")
    (tmp_path / ".out.tmp-same-job" / ".scratch" / "ckpt").write_text("kept")
    _stage(tmp_path, "live", os.getpid(), job="j", run="r-live")
    folder = RunFolder(str(tmp_path / "out"))
    folder.open("j", resume=True)
    assert folder.resumed and folder.run_id == "r-same" and (folder.stage / ".scratch").is_dir()
    assert sorted(p.name for p in folder.stage.iterdir()) == [".dlmine-owner.json", ".scratch"]
    assert (folder.stage / ".scratch" / "ckpt").read_text() == "kept"
    assert json.loads((folder.stage / OWNER).read_text())["pid"] == os.getpid()
    assert [d.name for d in folder.dead_stages()] == [".out.tmp-other-job"]
    fresh = RunFolder(str(tmp_path / "out"))
    fresh.open("j", resume=False)
    assert not fresh.resumed and fresh.run_id not in ("r-same", "r-other", "r-live")


def _wait_for_session_to_end(sid: int) -> None:
    """Wait until the processes of session ``sid`` (a killed driver's local Ray: raylet, GCS, workers)
    are gone, but for Ray's dashboard and runtime-env agents, which linger a minute or two and touch no
    run folder; any still there after a minute are killed: only the test's own run started them."""
    deadline = time.monotonic() + 60
    while True:
        left = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == sid and not p.name().endswith("Agent"):
                    left.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        if not left:
            return
        if time.monotonic() > deadline:
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(0.5)


@pytest.mark.parametrize("trainer", ["ray_train", "task"])
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, trainer):
    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="resumable", data={"path": str(tmp_path / "rows.parquet")},
                    train={"epochs": EPOCHS, "batch_size": 32, "early_stopping": 0},
                    scaling={"trainer": trainer, "cpus_per_worker": 1}, knowledge="off")
    env, cmd = _local_env(), _dlmine_run(job, tmp_path / "out")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith("epoch 6/"):
            os.kill(proc.pid, signal.SIGKILL)  # the driver, killed outright: no cleanup runs
            break
    proc.wait(timeout=60)
    _wait_for_session_to_end(proc.pid)  # its local Ray (the same session) goes with it
    assert not (tmp_path / "out").exists()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(left) == 1, "".join(lines)
    assert (left[0] / ".scratch" / "model-fit").is_dir()  # the trainer's (the task's) checkpoints, kept for --resume
    # the killed driver's task goes on until Ray notices its owner died: on a slow machine it can
    # finish every epoch first; the epoch it kept last is where the resumed run must go on from
    kept = sorted(int(p.name.split("-")[1]) for p in (left[0] / ".scratch").rglob("epoch-*") if p.is_dir())
    _stage(tmp_path, "live", os.getpid())  # a live run's: never touched
    _stage(tmp_path, "other-job", _dead_pid(), job="k")  # a dead run of another job: removed

    again = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    assert "resuming the interrupted run" in log
    trained = [int(ln.split("epoch ", 1)[1].split("/")[0]) for ln in log.splitlines()
               if ln.strip().startswith("epoch ")]
    if trainer == "task":
        assert kept, "the task kept no epoch checkpoint"
        assert trained == list(range(kept[-1] + 1, EPOCHS + 1)), (kept, log)  # on from its checkpoint
    else:
        assert trained and trained[0] > 1, log  # it went on, it did not start over
        assert trained == list(range(trained[0], EPOCHS + 1)), log
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")] == [".out.tmp-live"]
    assert not (tmp_path / "out" / ".scratch").exists() and not (tmp_path / "out" / ".dlmine-owner.json").exists()


def test_a_finished_trainer_run_restored_by_name_trains_no_more(tmp_path, ray_local):
    """A resumed run restores each TorchTrainer run of the interrupted one by name, also one that had
    finished (an earlier stage): it gives back that run's result and trains no more epochs, also when
    it had stopped early."""
    import numpy as np
    import ray

    from dlmine_ray.app.jobfile import coerce_spec
    from dlmine_ray.train.trainer import fit_with_ray_train

    rng = np.random.default_rng(0)
    rows = [{"features": rng.normal(size=4).astype(np.float32), "target": int(rng.integers(0, 2))}
            for _ in range(200)]  # labels that are noise: validation stops improving at once
    sets = {"train": ray.data.from_items(rows[:150]).materialize(),
            "valid": ray.data.from_items(rows[150:]).materialize()}
    spec = coerce_spec({"name": "restored", "task": "classify", "data": {"path": "x", "target": "label"},
                        "model": {"hidden": [64]}, "train": {"epochs": 60, "batch_size": 16, "lr": 0.05,
                                                              "early_stopping": 2},
                        "scaling": {"trainer": "ray_train", "cpus_per_worker": 1}, "knowledge": "off"})
    layout = {"n_features": 4, "info": {"classes": [0, 1]}, "has_valid": True}
    first = fit_with_ray_train(spec, sets, layout, str(tmp_path / "storage"), keep_in=str(tmp_path / "a"),
                               run_name="stage")
    assert len(first.history) < 60  # it stopped early
    again = fit_with_ray_train(spec, sets, layout, str(tmp_path / "storage"), keep_in=str(tmp_path / "b"),
                               run_name="stage")
    assert [h["epoch"] for h in again.history] == [h["epoch"] for h in first.history]
    assert again.best == first.best


def test_a_killed_tuned_run_resumes_its_tune_experiment(tmp_path):
    """--resume of a tuned run restores its Tune experiment: the trials that had ended are kept
    (not run again), the others run, and the leaderboard holds every trial once."""
    import pandas as pd

    make_frame(3000).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="tunedresume", data={"path": str(tmp_path / "rows.parquet")},
                    train={"epochs": 30, "batch_size": 16, "early_stopping": 0},
                    tune={"num_samples": 10, "scheduler": "fifo", "max_concurrent": 1}, knowledge="off")
    # lines as they are printed; Tune saves the experiment's state every second (10 s by default)
    env = dict(_local_env(), PYTHONUNBUFFERED="1", TUNE_GLOBAL_CHECKPOINT_S="1")
    cmd = _dlmine_run(job, tmp_path / "out")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, ended = [], []
    for line in proc.stdout:
        lines.append(line)
        if " trials ended" in line:
            ended.append(line.split()[1])
        if len(ended) == 2:
            time.sleep(1.5)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    _wait_for_session_to_end(proc.pid)
    assert not (tmp_path / "out").exists() and len(ended) == 2, "".join(lines)

    again = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    kept = [ln for ln in log.splitlines() if "continuing the interrupted search:" in ln]
    assert len(kept) == 1, log
    n_kept = int(kept[0].split("search:")[1].split()[0])
    assert 2 <= n_kept < 10, log
    rerun = [ln.split()[1] for ln in log.splitlines() if " trials ended" in ln]
    assert not set(rerun) & set(ended), log  # an ended trial is not trained again
    assert len(rerun) == 10 - n_kept, log
    board = pd.read_parquet(tmp_path / "out" / "leaderboard.parquet")
    assert sorted(board["trial"]) == sorted(set(board["trial"])) and len(board) == 10
    assert set(ended) <= set(board["trial"])
