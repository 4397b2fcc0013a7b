"""Model selection with Ray Tune: trials, leaderboard, and the best trial's model as the run's."""

import json
import re

import pandas as pd
import torch
import yaml

from conftest import write_job
from dlmine_ray.cli import main


def test_tuned_run_keeps_the_best_trial(tmp_path, ray_local, table_dir):
    out = tmp_path / "run"
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)}, train={"epochs": 4, "batch_size": 32},
                    tune={"num_samples": 3, "scheduler": "asha", "search": "optuna", "grace_period": 1,
                          "space": {"model.hidden": [[8], [32, 16]], "train.lr": {"loguniform": [0.001, 0.01]}}})
    assert main(["run", job, "--output", str(out)]) == 0
    board = pd.read_parquet(out / "leaderboard.parquet")
    assert len(board) == 3 and list(board["rank"]) == [1, 2, 3]
    assert {"trial", "status", "val_loss", "model.hidden", "train.lr"} <= set(board.columns)
    assert set(board["status"]) <= {"completed", "stopped by scheduler"}
    assert board["val_loss"].is_monotonic_increasing
    # the saved model has the best trial's architecture
    best_hidden = json.loads(board.loc[0, "model.hidden"])
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["model"]["hidden"] == best_hidden
    state = torch.load(out / "model" / "model.pt", weights_only=True)
    assert state["net.0.weight"].shape[0] == best_hidden[0]
    # and its best validation loss is the run's best epoch
    hist = json.loads((out / "history.json").read_text())
    assert min(h["val_loss"] for h in hist) == board.loc[0, "val_loss"]
    assert "Tuning leaderboard" in (out / "report.html").read_text()
    # job.yaml is the saved model's job; job_base.yaml the job as given, with its search space
    job_doc = yaml.safe_load((out / "job.yaml").read_text())
    assert job_doc["tune"] is None and job_doc["model"]["hidden"] == best_hidden
    assert job_doc["train"]["lr"] == board.loc[0, "train.lr"]
    base_doc = yaml.safe_load((out / "job_base.yaml").read_text())
    assert base_doc["tune"]["space"]["model.hidden"] == [[8], [32, 16]] and base_doc["model"]["hidden"] == [16]
    assert f"model mlp {best_hidden}" in (out / "report.html").read_text()


def test_trial_status_says_who_ended_a_trial(tmp_path, capsys, ray_local, table_dir):
    """ASHA (grace period 1) stops the worse of 6 trials; our early stopping is off, so a trial
    that ends before train.epochs was stopped by the scheduler and is never called completed. The
    console gives every trial a line, and its best so far is the leaderboard's best."""
    out = tmp_path / "run"
    epochs = 5
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)},
                    train={"epochs": epochs, "batch_size": 32, "early_stopping": 0},
                    tune={"num_samples": 6, "scheduler": "asha", "grace_period": 1,
                          "space": {"train.lr": {"loguniform": [0.00003, 0.03]}}})
    capsys.readouterr()
    assert main(["run", job, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    board = pd.read_parquet(out / "leaderboard.parquet")
    assert len(board) == 6 and set(board["status"]) <= {"completed", "stopped by scheduler"}
    stopped = board[board["status"] == "stopped by scheduler"]
    assert len(stopped) >= 1 and (stopped["epochs"] < epochs).all(), board
    assert (board.loc[board["status"] == "completed", "epochs"] == epochs).all(), board
    # one line per trial, with the leaderboard's status
    ended = dict(re.findall(r"trial (\S+) (completed|stopped by scheduler|error) after", err))
    assert ended == dict(zip(board["trial"], board["status"])), err
    so_far = re.findall(r"best val_loss so far (\S+)", err)
    assert len(so_far) == 6 and so_far[-1] == f"{board.loc[0, 'val_loss']:.4g}", err
    assert f"val_loss={board.loc[0, 'val_loss']:.4g}" in err.split("best trial:")[1]


def test_trials_that_stop_early_by_themselves_are_completed(tmp_path, ray_local, table_dir):
    """With early stopping (patience 1) and no scheduler, every trial ends itself: completed,
    whatever its number of epochs."""
    out = tmp_path / "run"
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)},
                    train={"epochs": 40, "batch_size": 32, "early_stopping": 1},
                    tune={"num_samples": 2, "scheduler": "fifo", "space": {"train.lr": [0.03, 0.1]}})
    assert main(["run", job, "--output", str(out)]) == 0
    board = pd.read_parquet(out / "leaderboard.parquet")
    assert list(board["status"]) == ["completed", "completed"], board
    assert (board["epochs"] < 40).any(), board  # early stopping ended at least one (nearly surely both)
