"""Model selection for every task that trains a model: ``tune`` without a space uses the task's
default space for classify, regress, cluster and detect; cluster and detect trials are whole fits
(every stage) selected by a label-free criterion; the portfolio starts a search whose knowledge
base is empty."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_frame, write_job
from dlmine_ray.cli import main
from dlmine_ray.tasks import get_task
from test_unsupervised import blobs, outliers

#: per task: the data, the data fields, small settings, the selection metric and its direction
CASES = {
    "classify": (lambda: make_frame(240), {"target": "label", "id": "row_id"}, {}, "val_loss", "min"),
    "regress": (lambda: make_frame(240, kind="regress"), {"target": "target", "id": "row_id"}, {}, "val_loss", "min"),
    "cluster": (lambda: blobs(240), {"target": None, "labels": "group", "id": "row_id"},
                {"cluster": {"k": 4, "distill_epochs": 1, "refine_epochs": 1}}, "silhouette", "max"),
    "detect": (lambda: outliers(240), {"target": None, "labels": "is_outlier", "id": "row_id"},
               {"detect": {"svdd_epochs": 1}}, "consensus", "max"),
}


@pytest.mark.parametrize("task", list(CASES))
def test_tune_without_space_works_for_every_task(tmp_path, ray_local, capsys, task):
    make, fields, extra, metric, mode = CASES[task]
    make().to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", task=task, data={"path": str(tmp_path / "rows.parquet"), **fields},
                    model={"hidden": [16], "latent": 3}, train={"epochs": 2, "batch_size": 64},
                    tune={"num_samples": 2, "scheduler": "fifo"}, compare_baselines=True, **extra)
    out = tmp_path / "out"
    assert main(["run", job, "--output", str(out)]) == 0
    board = pd.read_parquet(out / "leaderboard.parquet")
    deep = board[board["status"] != "baseline"]
    assert len(deep) == 2 and deep[metric].notna().all()
    space = get_task(task).default_space(None)
    assert set(space) <= set(board.columns), "the default space was searched"
    # the saved model is the best trial by the task's criterion, and its settings are the job's
    best = deep.sort_values(metric, ascending=(mode == "min")).iloc[0]
    saved = yaml.safe_load((out / "job.yaml").read_text())
    assert saved["tune"] is None
    for key in space:
        section, name = key.split(".")
        value = yaml.safe_load(best[key]) if isinstance(best[key], str) else best[key]  # the board holds text
        assert saved[section][name] == (pytest.approx(value) if isinstance(value, float) else value), key
    metrics = json.loads((out / "metrics.json").read_text())
    if task in ("cluster", "detect"):  # selected without labels; the fit criterion of the saved model is reported
        assert metrics[f"fit_{metric}"] == pytest.approx(float(best[metric]))
        assert metrics["trainer"] == "tune"
    err = capsys.readouterr().err
    assert "tuning 2 trials (the task's default space)" in err


def test_cluster_trials_are_whole_fits_and_kmeans_is_a_row(tmp_path, ray_local):
    blobs(240).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", task="cluster",
                    data={"path": str(tmp_path / "rows.parquet"), "target": None, "labels": "group", "id": "row_id"},
                    model={"hidden": [16], "latent": 3}, train={"epochs": 3, "batch_size": 64},
                    cluster={"k": 4, "init": "kmeans", "refine_epochs": 2},
                    tune={"num_samples": 2, "scheduler": "fifo",
                          "space": {"model.latent": [2, 4], "cluster.noise": [0.0, 0.2]}},
                    compare_baselines=True)
    out = tmp_path / "out"
    assert main(["run", job, "--output", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["stage"] for h in history] == ["pretrain"] * 3 + ["refine"] * 2  # every stage ran in the trial
    board = pd.read_parquet(out / "leaderboard.parquet")
    base = board[board["status"] == "baseline"]
    assert base["trial"].tolist() == ["baseline (k-means)"] and -1 <= float(base["silhouette"].iloc[0]) <= 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stages"] == ["pretrain", "refine"] and metrics["k"] == 4
    # the model that was saved predicts the same clusters it reported
    assert main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "rows.parquet"),
                 "--output", str(tmp_path / "pred.parquet")]) == 0
    pred = pd.read_parquet(tmp_path / "pred.parquet").sort_values("row_id")
    ours = pd.read_parquet(out / "clusters.parquet").sort_values("row_id")
    assert (pred["cluster"].to_numpy() == ours["cluster"].to_numpy()).all()


def test_the_detect_criterion_rewards_agreement_with_the_consensus():
    from dlmine_ray.tasks.detect import _agreement

    rng = np.random.default_rng(0)
    reference = rng.normal(size=500)
    assert _agreement(reference * 3 + 1, reference) == pytest.approx(1.0)
    assert _agreement(-reference, reference) < -0.5
    noisy = _agreement(reference + rng.normal(scale=2.0, size=500), reference)
    assert 0.0 < noisy < 0.9
    assert _agreement(np.zeros(500), reference) == -1.0  # a constant score ranks nothing


def test_the_portfolio_is_learned_greedily_and_covers_the_datasets():
    from dlmine_ray.tune.portfolio import learn

    # three settings on four datasets: "a" is best on two, "b" on the other two, "c" is second everywhere
    values = {"d1": {"a": 0.0, "b": 1.0, "c": 0.4}, "d2": {"a": 0.0, "b": 1.0, "c": 0.4},
              "d3": {"a": 1.0, "b": 0.0, "c": 0.4}, "d4": {"a": 1.0, "b": 0.0, "c": 0.4}}
    trials = pd.DataFrame([{"fingerprint": d, "params": {"train.lr": {"a": 0.001, "b": 0.01, "c": 0.003}[s]},
                            "value": v} for d, row in values.items() for s, v in row.items()])
    order = [p["train.lr"] for p in learn(trials, "min", size=3)]
    # c has the lowest mean regret alone; then a and b together cover every dataset at regret 0
    assert order[0] == 0.003 and set(order[1:]) == {0.001, 0.01}
    assert [p["train.lr"] for p in learn(trials.assign(value=-trials["value"]), "max", size=1)] == [0.003]


def test_an_empty_knowledge_base_starts_from_the_portfolio(tmp_path, ray_local, capsys, monkeypatch):
    make_frame(200).to_parquet(tmp_path / "rows.parquet", index=False)
    planted = {"learnt_from": {"datasets": ["x", "y", "z"]}, "tasks": {"classify": {
        "metric": "val_loss", "mode": "min", "datasets": 3,
        "settings": [{"train.lr": 0.00777, "model.hidden": [24]}, {"train.lr": 0.00333, "model.hidden": [40]},
                     {"train.lr": 0.00111, "model.hidden": [8]}]}}}
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps(planted))
    monkeypatch.setenv("DLMINE_PORTFOLIO", str(path))
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "rows.parquet")},
                    tune={"num_samples": 4, "scheduler": "fifo",
                          "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.hidden": [[8], [24], [40]]}})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    assert "2 setting(s) from the portfolio learned offline on 3 datasets" in capsys.readouterr().err
    board = pd.read_parquet(tmp_path / "out" / "leaderboard.parquet")
    lrs = set(np.round(board["train.lr"].astype(float), 6))
    assert {0.00777, 0.00333} <= lrs and 0.00111 not in lrs  # the first two, half of the budget
    # a missing portfolio file named by the user is a one-line error, before anything is written
    monkeypatch.setenv("DLMINE_PORTFOLIO", str(tmp_path / "nope.json"))
    capsys.readouterr()
    assert main(["run", job, "--set", "knowledge=off", "--output", str(tmp_path / "out2")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "portfolio file" in line and "nope.json" in line
    assert not (tmp_path / "out2").exists()


def test_knowledge_off_in_yaml_is_off():
    from dlmine_ray.spec import spec_from_dict
    from dlmine_ray.tune.knowledge import resolve

    for text in ("off", "no", "false", "'off'"):
        doc = yaml.safe_load(f"task: classify\ndata: {{path: x}}\nknowledge: {text}\n")
        assert resolve(spec_from_dict(doc).knowledge) is None, text


def test_a_last_training_batch_of_one_row_is_skipped_so_batch_norm_trains(tmp_path):
    """65 training rows in batches of 64 with batch_norm: the 1-row batch used to raise in training
    (seen as an errored trial in the model-selection benchmark)."""
    import torch

    from dlmine_ray.spec import spec_from_dict
    from dlmine_ray.train.loop import ShardBatches, TaskEnv, run_loop
    from dlmine_ray.train.stages import RowsInMemory
    from dlmine_ray.train.trainer import loop_config

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(65, 3)).astype(np.float32), rng.integers(0, 2, 65)
    sizes = [len(b[1]) for b in ShardBatches(RowsInMemory(x, y), torch.int64, 64, 2**20, 0, True).epoch(1)]
    assert sizes == [64]
    assert [len(b[1]) for b in ShardBatches(RowsInMemory(x, y), torch.int64, 64, 2**20, 0, False).epoch(1)] == [64, 1]
    spec = spec_from_dict({"data": {"path": "x"}, "model": {"hidden": [8], "batch_norm": True},
                           "train": {"epochs": 2, "batch_size": 64}})
    env = TaskEnv({"train": RowsInMemory(x, y), "valid": RowsInMemory(x[:9], y[:9])}, False)
    run_loop(loop_config(spec, {"n_features": 3, "info": {"classes": ["0", "1"]}, "has_valid": True}), env)
    assert env.last_checkpoint


def test_no_progress_board_outlives_its_run(tmp_path, ray_local):
    """Tune keeps the handles its trials got, so the board actor was not collected with the run."""
    import ray._private.state as state

    make_frame(120).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "rows.parquet")}, train={"epochs": 1},
                    tune={"num_samples": 2, "scheduler": "fifo", "space": {"train.lr": [0.001, 0.01]}})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    alive = [a for a in state.actors().values() if a["State"] == "ALIVE" and "ProgressBoard" in a["ActorClassName"]]
    assert alive == []


def test_the_shipped_portfolio_is_in_the_default_spaces():
    from dlmine_ray.spec import spec_from_dict
    from dlmine_ray.tune.portfolio import load
    from dlmine_ray.tune.warm import allowed

    doc = load()
    assert doc["learnt_from"].get("datasets"), "the shipped portfolio says what it was learned on"
    for task, entry in doc["tasks"].items():
        spec = spec_from_dict({"task": task, "data": {"path": "x"}, "tune": {}})
        assert entry["metric"] == spec.selection()[0] and len(entry["settings"]) >= 4
        space = spec.search_space()
        for setting in entry["settings"]:
            assert all(allowed(space[k], v) for k, v in setting.items()), setting


