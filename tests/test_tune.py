"""Model selection with Ray Tune: trials, leaderboard, and the best trial's model as the run's."""

import json

import pandas as pd
import torch

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
    assert set(board["status"]) <= {"completed", "stopped early"}
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
