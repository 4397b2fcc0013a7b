"""End to end through the CLI: run, the output contract, predict with the saved model."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_frame, write_job
from dlmine_ray.cli import main

CLASSIFY_KEYS = {"task", "accuracy", "f1_macro", "roc_auc", "log_loss", "rows_train", "rows_test", "train_seconds"}
REGRESS_KEYS = {"task", "rmse", "mae", "r2", "rows_train", "rows_test", "train_seconds"}


def _outputs(out):
    return sorted(p.name for p in out.iterdir())


def test_classify_run_writes_the_contract_and_predict_matches(tmp_path, capsys, ray_local, table_dir):
    out = tmp_path / "run"
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)}, train={"epochs": 15, "batch_size": 32},
                    compare_baselines=True)
    assert main(["run", job, "--output", str(out)]) == 0
    assert {"metrics.json", "model", "predictions.parquet", "report.html", "history.json"} <= set(_outputs(out))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

    m = json.loads((out / "metrics.json").read_text())
    assert CLASSIFY_KEYS <= set(m) and m["task"] == "classify"
    assert {f"baseline_{k}" for k in ("accuracy", "f1_macro", "roc_auc", "log_loss")} <= set(m)
    assert m["rows_train"] + m["rows_valid"] + m["rows_test"] == 300
    assert m["accuracy"] > 0.75, m  # the label is a simple function of the features

    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == m["rows_test"]
    assert {"row_id", "label", "prediction", "proba_no", "proba_yes"} <= set(pred.columns)
    np.testing.assert_allclose(pred["proba_no"] + pred["proba_yes"], 1.0, rtol=1e-5)
    assert m["accuracy"] == pytest.approx((pred["prediction"] == pred["label"]).mean())

    html = (out / "report.html").read_text()
    for section in ("Metrics on the test split", "Learning curves", "confusion matrix", "Data profile", "Job"):
        assert section.lower() in html.lower()
    assert html.count("data:image/png;base64,") >= 3

    # Scoring the same rows with `dlmine predict` gives the same probabilities as the run.
    full = pd.concat([pd.read_parquet(p) for p in sorted(table_dir.iterdir())])
    new = full[full["row_id"].isin(pred["row_id"])].drop(columns=["label"])
    new.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "scored.parquet")]) == 0
    scored = pd.read_parquet(tmp_path / "scored.parquet").sort_values("row_id").reset_index(drop=True)
    ref = pred.sort_values("row_id").reset_index(drop=True)
    assert len(scored) == len(ref)
    np.testing.assert_allclose(scored["proba_yes"], ref["proba_yes"], rtol=1e-4, atol=1e-6)
    assert (scored["prediction"] == ref["prediction"]).all()

    # a second run into the same folder needs --overwrite, and then replaces it
    assert main(["run", job, "--output", str(out), "--set", "train.epochs=1"]) == 2
    assert m["trainer"] == "driver"  # a small job runs in this process (test_driver_path.py compares it with Ray)
    assert main(["run", job, "--output", str(out), "--set", "train.epochs=1", "--set", "scaling.trainer=ray_train",
                 "--overwrite"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["epochs_run"] == 1 and again["trainer"] == "ray_train"


def test_regress_csv_with_two_workers(tmp_path, ray_local):
    df = make_frame(400, seed=1, kind="regress")
    (tmp_path / "csv").mkdir()
    df.iloc[:200].to_csv(tmp_path / "csv" / "a.csv", index=False)
    df.iloc[200:].to_csv(tmp_path / "csv" / "b.csv", index=False)
    out = tmp_path / "run"
    job = write_job(tmp_path / "job.yaml", task="regress",
                    data={"path": str(tmp_path / "csv" / "*.csv"), "target": "target"},
                    train={"epochs": 20, "batch_size": 32, "lr": 0.003},
                    scaling={"num_workers": 2, "cpus_per_worker": 1})
    assert main(["run", job, "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert REGRESS_KEYS <= set(m) and m["trainer"] == "ray_train"
    assert m["r2"] > 0.8, m  # target = 3 * (linear signal) + small noise
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == m["rows_test"] and {"row_id", "target", "prediction"} <= set(pred.columns)
    html = (out / "report.html").read_text()
    assert "residuals" in html


def test_json_input_and_python_api(tmp_path, ray_local):
    import dlmine_ray

    df = make_frame(240, seed=2)
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    res = dlmine_ray.run_job({"name": "api", "task": "classify",
                              "data": {"path": str(tmp_path / "d.jsonl"), "target": "label", "ignore": ["row_id"]},
                              "model": {"kind": "resmlp", "hidden": [16, 16]},
                              "train": {"epochs": 2, "batch_size": 64}, "compare_baselines": False},
                             tmp_path / "run", quiet=True)
    assert res.metrics["task"] == "classify" and 0.0 <= res.metrics["accuracy"] <= 1.0
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    pred = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert "row_id" not in pred.columns and "label" in pred.columns
