"""cluster and detect end to end: the output contract, quality on data with a known answer,
scoring new rows with the saved model, several Ray Train workers, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_job
from dlmine_ray.cli import main


def blobs(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Four well-separated groups in 5 numeric columns plus a categorical one that follows them."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(rows, n_features=5, centers=4, cluster_std=0.8, random_state=seed)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    df.insert(0, "row_id", np.arange(rows))
    df["shade"] = np.where(y % 2 == 0, "dark", "light")
    df["group"] = y
    return df


def outliers(rows: int = 400, n_out: int = 12, seed: int = 0) -> pd.DataFrame:
    """Correlated normal rows and a few rows that break the correlation or sit far out."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 2))
    x = np.column_stack([z[:, 0], z[:, 0] + 0.1 * rng.normal(size=rows), z[:, 1], z[:, 1] * 0.5,
                         rng.normal(size=rows)])
    bad = rng.choice(rows, n_out, replace=False)
    x[bad, 1] = x[bad, 0] + rng.choice([-5.0, 5.0], n_out)  # breaks x0 ~ x1 (50 noise sd)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    df.insert(0, "row_id", np.arange(rows))
    df["is_outlier"] = 0
    df.loc[bad, "is_outlier"] = 1
    return df


def _cluster_job(tmp_path, path, **fields):
    base = dict(task="cluster", data={"path": str(path), "target": None, "labels": "group", "id": "row_id"},
                model={"hidden": [32, 16], "latent": 4, "dropout": 0.0},
                train={"epochs": 25, "batch_size": 32, "early_stopping": 0},
                cluster={"k": 4, "init": "kmeans", "refine_epochs": 5}, compare_baselines=True)
    base.update(fields)
    return write_job(tmp_path / "job.yaml", **base)


def test_cluster_run_outputs_metrics_and_predict(tmp_path, capsys, ray_local):
    df = blobs()
    df.to_parquet(tmp_path / "blobs.parquet", index=False)
    out = tmp_path / "run"
    job = _cluster_job(tmp_path, tmp_path / "blobs.parquet")
    assert main(["run", job, "--output", str(out)]) == 0
    assert {"metrics.json", "model", "clusters.parquet", "report.html", "history.json", "job.yaml"} <= \
        {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    for key in ("silhouette", "davies_bouldin", "n_clusters", "nmi", "ari", "acc",
                "baseline_silhouette", "baseline_davies_bouldin", "baseline_nmi", "baseline_ari", "baseline_acc"):
        assert key in m, key
    assert m["n_clusters"] == 4 and m["stages"] == ["pretrain", "refine"]
    assert m["nmi"] > 0.9 and m["acc"] > 0.9, m  # four well-separated blobs
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert len(clusters) == 400 and clusters["row_id"].is_unique
    assert {"row_id", "cluster", "confidence", "map_x", "map_y", "group"} <= set(clusters.columns)
    assert clusters["confidence"].between(0, 1).all() and set(clusters["cluster"]) == {0, 1, 2, 3}
    # accuracy is the best one-to-one matching of clusters to labels
    table = pd.crosstab(clusters["cluster"], clusters["group"]).to_numpy()
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(-table)
    assert m["acc"] == pytest.approx(table[r, c].sum() / 400)
    history = json.loads((out / "history.json").read_text())
    assert [h["stage"] for h in history] == ["pretrain"] * 25 + ["refine"] * 5
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    for section in ("Cluster map", "Cluster sizes", "Cluster profiles", "Learning curves"):
        assert section in html

    # dlmine predict assigns the same clusters to the same rows
    df.drop(columns=["group"]).to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "pred.parquet")]) == 0
    pred = pd.read_parquet(tmp_path / "pred.parquet").sort_values("row_id")
    ours = clusters.sort_values("row_id")
    assert (pred["cluster"].to_numpy() == ours["cluster"].to_numpy()).all()
    np.testing.assert_allclose(pred["map_x"], ours["map_x"], rtol=1e-4, atol=1e-5)


def test_cluster_chooses_k_by_silhouette_with_umap_init(tmp_path, ray_local):
    blobs().to_parquet(tmp_path / "blobs.parquet", index=False)
    job = _cluster_job(tmp_path, tmp_path / "blobs.parquet",
                       cluster={"k": None, "k_range": [2, 6], "init": "umap", "distill_epochs": 5,
                                "refine_epochs": 3})
    assert main(["run", job, "--output", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["k"] == 4 and m["stages"] == ["pretrain", "distill", "refine"]
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert set(meta["info"]["k_scores"]) == {"2", "3", "4", "5", "6"}
    assert max(meta["info"]["k_scores"], key=meta["info"]["k_scores"].get) == "4"


def test_cluster_with_two_ray_train_workers(tmp_path, ray_local):
    blobs().to_parquet(tmp_path / "blobs.parquet", index=False)
    job = _cluster_job(tmp_path, tmp_path / "blobs.parquet", scaling={"num_workers": 2, "cpus_per_worker": 1})
    assert main(["run", job, "--output", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["trainer"] == "ray_train" and m["nmi"] > 0.9, m


def _detect_job(tmp_path, path, **fields):
    base = dict(task="detect", data={"path": str(path), "target": None, "labels": "is_outlier", "id": "row_id"},
                model={"hidden": [16, 8], "latent": 3, "dropout": 0.0},
                train={"epochs": 40, "batch_size": 32, "early_stopping": 0},
                detect={"contamination": 0.03, "noise": 0.1}, compare_baselines=True)
    base.update(fields)
    return write_job(tmp_path / "job.yaml", **base)


@pytest.mark.parametrize("method,workers", [("autoencoder", 1), ("deep_svdd", 1), ("autoencoder", 2)])
def test_detect_finds_planted_outliers(tmp_path, capsys, ray_local, method, workers):
    df = outliers()
    df.to_csv(tmp_path / "rows.csv", index=False)
    job = _detect_job(tmp_path, tmp_path / "rows.csv", scaling={"num_workers": workers, "cpus_per_worker": 1},
                      detect={"model": method, "contamination": 0.03, "noise": 0.1, "svdd_epochs": 20})
    out = tmp_path / "run"
    assert main(["run", job, "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("threshold", "n_flagged", "roc_auc", "average_precision", "precision_at_n",
                "baseline_roc_auc", "baseline_average_precision", "baseline_precision_at_n"):
        assert key in m, key
    # Deep SVDD (distance in code space) sees a broken correlation less well than reconstruction
    assert m["roc_auc"] > (0.9 if method == "autoencoder" else 0.7), m
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 400 and list(scores["rank"]) == list(range(1, 401))
    assert scores["score"].is_monotonic_decreasing
    assert int(scores["flag"].sum()) == m["n_flagged"] and abs(m["n_flagged"] - 12) <= 3
    assert (scores["flag"] == (scores["score"] > m["threshold"])).all()
    flagged = scores[scores["flag"]]
    assert (flagged["top_features"].str.len() > 0).all()
    assert not (scores.loc[~scores["flag"], "top_features"].str.len() > 0).any()
    if method == "autoencoder" and workers == 1:
        # the rows that break x0 ~ x1 are blamed on x0 or x1
        top1 = flagged[flagged["is_outlier"] == 1]["top_features"].str.split(", ").str[0]
        assert top1.isin(["x0", "x1"]).mean() >= 0.8, flagged
        capsys.readouterr()
        df.drop(columns=["is_outlier"]).to_csv(tmp_path / "new.csv", index=False)
        assert main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"),
                     "--output", str(tmp_path / "pred.parquet")]) == 0
        pred = pd.read_parquet(tmp_path / "pred.parquet").sort_values("row_id")
        np.testing.assert_allclose(pred["score"], scores.sort_values("row_id")["score"], rtol=1e-4)


def test_detect_trains_only_on_rows_marked_normal(tmp_path, ray_local):
    df = outliers()
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    job = _detect_job(tmp_path, tmp_path / "rows.parquet", data={
        "path": str(tmp_path / "rows.parquet"), "target": None, "labels": "is_outlier", "id": "row_id",
        "normal_when": "is_outlier == 0", "ignore": []}, detect={"noise": 0.1})
    assert main(["run", job, "--output", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["rows_train"] + m["rows_valid"] <= 388 and m["rows_scored"] == 400
    assert m["roc_auc"] > 0.95
    assert "median" in json.loads((tmp_path / "run" / "model" / "model.json").read_text())["info"]["threshold_rule"]


# -- bad input -------------------------------------------------------------------------------

def _fails(tmp_path, capsys, job, needle):
    out = tmp_path / "out"
    code = main(["run", job, "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1] if err else ""
    assert code == 2 and line.startswith("error: ") and needle in line, line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def _constant_blobs():
    df = blobs(60)
    df["flat"] = 7.0
    return df


# bad input that needs the data read: (case, frame, job builder, overrides, what the error names)
BAD_DATA = {
    "k_larger_than_rows": (lambda: blobs(30), "cluster", {"cluster": {"k": 50}},
                           "cluster.k = 50 is larger than the number of training rows"),
    "labels_column_missing": (lambda: blobs(60), "cluster", {"data": {"target": None, "labels": "truth",
                                                                      "id": "row_id"}},
                              "labels column 'truth' (data.labels) not found"),
    # constant columns are dropped by default (tests/test_profile.py); refused when the job says so
    "constant_column": (_constant_blobs, "cluster", {"data": {"target": None, "labels": "group", "id": "row_id",
                                                                  "drop_constant": False}},
                        "column 'flat' is constant"),
    "detect_labels_must_be_binary": (lambda: blobs(60), "detect", {"data": {"target": None, "labels": "group",
                                                                            "id": "row_id"}},
                                     "labels column 'group' must hold 0/1"),
    "normal_when_names_a_missing_column": (lambda: outliers(60), "detect",
                                           {"data": {"target": None, "labels": "is_outlier",
                                                     "normal_when": "kind == 'ok'"}}, "data.normal_when"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_fails_cleanly(tmp_path, capsys, ray_local, case):
    frame, task, overrides, needle = BAD_DATA[case]
    path = tmp_path / "d.csv"
    frame().to_csv(path, index=False)
    if "data" in overrides:
        overrides = {**overrides, "data": {"path": str(path), **overrides["data"]}}
    job = (_cluster_job if task == "cluster" else _detect_job)(tmp_path, path, **overrides)
    _fails(tmp_path, capsys, job, needle)


@pytest.mark.parametrize("value", [0, 0.6, -0.1])
def test_contamination_out_of_range(tmp_path, capsys, value):
    job = _detect_job(tmp_path, tmp_path / "x.csv", detect={"contamination": value})
    _fails(tmp_path, capsys, job, "invalid job field 'detect.contamination'")


def test_labels_named_like_a_result_column_are_refused(tmp_path, capsys):
    job = _detect_job(tmp_path, tmp_path / "x.csv", data={"path": "x.csv", "target": None, "labels": "flag"})
    _fails(tmp_path, capsys, job, "data.labels 'flag' has the name of a result column of task detect")


def test_target_is_rejected_for_cluster(tmp_path, capsys):
    job = _cluster_job(tmp_path, tmp_path / "x.csv", data={"path": "x.csv", "target": "group"})
    _fails(tmp_path, capsys, job, "task cluster learns without a target")
