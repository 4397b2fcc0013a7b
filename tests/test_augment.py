"""augment: features mined from the training split (cluster memberships, an anomaly score, rule
hits) are added to a classify or regress model's inputs, saved with the model, and computed the
same way by ``dlmine predict``; the miners' own outputs are checked against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_job
from dlmine_ray.cli import main
from dlmine_ray.mining.augment import Augmenter
from dlmine_ray.errors import DlmineError
from dlmine_ray.spec import spec_from_dict


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    """Two tied numeric columns, a flag that follows them (so that rules exist), noise, a label."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=rows)
    df = pd.DataFrame({"row_id": np.arange(rows), "u": u, "v": u + 0.2 * rng.normal(size=rows),
                       "w": rng.normal(size=rows), "flag": np.where(u > 0.4, "on", "off")})
    df["label"] = np.where(u - df["w"] > 0, "yes", "no")
    return df


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    from conftest import _ensure_ray

    _ensure_ray()
    tmp = tmp_path_factory.mktemp("augment")
    df = _table(400)
    df.to_parquet(tmp / "d.parquet", index=False)
    # the knowledge base on (conftest's temporary one): the run also describes the data for it
    job = write_job(tmp / "job.yaml", data={"path": str(tmp / "d.parquet")},
                    augment=["clusters", "anomaly", "rules"], augment_gain=2, train={"epochs": 5, "batch_size": 64},
                    cluster={"init": "kmeans", "refine_epochs": 3})
    out = tmp / "run"
    assert main(["run", job, "--output", str(out)]) == 0
    return tmp, out, df, json.loads((out / "metrics.json").read_text())


def test_augmented_run_saves_the_mined_columns_with_the_model(augmented_run):
    _, out, _, m = augmented_run
    counts = m["augment"]
    assert set(counts) == {"clusters", "anomaly", "rules"}
    assert 2 <= counts["clusters"] <= 8 and counts["anomaly"] == 1 and 1 <= counts["rules"] <= 20, counts
    meta = json.loads((out / "model" / "model.json").read_text())
    # 3 numeric columns and the flag's 2 one-hot columns, then the mined ones
    assert meta["n_features"] == 5 + sum(counts.values())
    names = meta["feature_names"]
    assert names[5] == "cluster_0" and "anomaly_score" in names and names[-1].startswith(f"rule_{counts['rules'] - 1}:")
    assert (out / "model" / "augment.json").is_file() and (out / "model" / "augment.npz").is_file()
    page = (out / "report.html").read_text()
    assert "<h2>Augmented features</h2>" in page and "Rule features" in page


def test_predict_computes_the_mined_columns_as_the_run_did(augmented_run, tmp_path):
    tmp, out, df, _ = augmented_run
    pred = pd.read_parquet(out / "predictions.parquet")
    new = df[df["row_id"].isin(pred["row_id"])].drop(columns=["label"])
    new.to_parquet(tmp_path / "new.parquet", index=False)
    assert main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "new.parquet"),
                 "--output", str(tmp_path / "scored.parquet")]) == 0
    scored = pd.read_parquet(tmp_path / "scored.parquet").sort_values("row_id").reset_index(drop=True)
    ref = pred.sort_values("row_id").reset_index(drop=True)
    assert len(scored) == len(ref) > 0
    np.testing.assert_allclose(scored["proba_yes"], ref["proba_yes"], rtol=1e-4, atol=1e-6)

    # the loaded preprocessing appends the mined columns; moving a row far from the data raises
    # its anomaly score and changes its cluster memberships
    from dlmine_ray.infer import LoadedModel

    model = LoadedModel(str(out / "model"))
    x = model.prep.transform_features(new.head(3))
    assert x.shape[1] == model.meta["n_features"]
    far = model.prep.transform_features(new.head(3).assign(u=50.0, v=-50.0, w=50.0))
    j = model.meta["feature_names"].index("anomaly_score")
    assert (far[:, j] > x[:, j]).all()
    assert not np.allclose(far[:, 5:j], x[:, 5:j])


def test_rule_features_are_0_1_and_match_the_rule_on_hand_checked_rows():
    # u = 0..89 (tertile edges near 29.7 and 59.3) and a one-hot flag set exactly on u >= 60: the
    # only rule is {u in the top tertile, flag} (support 1/3, confidence 1, lift 3)
    u = np.arange(90, dtype=np.float32)
    x = np.stack([u, (u >= 60).astype(np.float32)], axis=1)
    aug = Augmenter(["rules"], seed=0).fit(x, ["u", "flag"], n_numeric=1, units=[(0.0, 1.0)])
    assert aug.counts_ == {"rules": 1}
    assert aug.names_[0].startswith("rule_0: ") and "u>59.3" in aug.names_[0] and "flag" in aug.names_[0]
    rule = aug.settings_["rules"]["chosen"][0]
    assert rule["lift"] == pytest.approx(3.0, abs=1e-3) and rule["support"] == pytest.approx(1 / 3, abs=1e-3)
    rows = np.array([[75, 1], [75, 0], [10, 0], [61, 1], [59, 1]], dtype=np.float32)
    hits = aug.transform(rows)
    assert hits.dtype == np.float32 and set(np.unique(hits).tolist()) <= {0.0, 1.0}
    assert hits[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_classic_cluster_memberships_and_anomaly_score_follow_their_formulas(tmp_path):
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-3, 1, (100, 3)), rng.normal(3, 1, (100, 3))]).astype(np.float32)
    aug = Augmenter(["clusters", "anomaly"], seed=2, models="classic").fit(x, ["a", "b", "c"], n_numeric=3)
    assert aug.counts_ == {"clusters": 2, "anomaly": 1}  # two blobs: silhouette picks k = 2
    z = aug.transform(x[:5])
    mu = aug.arrays_["centroids"]
    q = 1.0 / (1.0 + ((x[:5, None, :].astype(np.float64) - mu[None]) ** 2).sum(-1))
    np.testing.assert_allclose(z[:, :2], q / q.sum(1, keepdims=True), rtol=1e-5)
    # the trees saved as arrays score as scikit-learn's own forest does
    iso = IsolationForest(n_estimators=100, max_samples=min(256, len(x)), random_state=2).fit(x)
    np.testing.assert_allclose(z[:, 2], -iso.score_samples(x[:5]), rtol=1e-5)
    # and the saved state scores the same after loading
    aug.save(tmp_path)
    np.testing.assert_array_equal(Augmenter.load(tmp_path).transform(x[:5]), z)


@pytest.mark.parametrize("doc, fragment", [
    ({"task": "cluster", "augment": ["clusters"]}, "augment: adds features to a supervised model's inputs; task cluster"),
    ({"task": "select", "augment": ["rules"]}, "task select has none"),
    ({"task": "classify", "augment": ["trees"]}, "'augment.0'"),
])
def test_augment_is_refused_in_one_line(doc, fragment):
    with pytest.raises(DlmineError) as err:
        spec_from_dict({**doc, "data": {"path": "x.parquet", **({"target": None} if doc["task"] == "cluster" else {})}})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_model_folder_without_its_mined_features_is_refused(augmented_run, tmp_path):
    import shutil

    from dlmine_ray.infer import LoadedModel

    _, out, _, _ = augmented_run
    model = tmp_path / "model"
    shutil.copytree(out / "model", model)
    (model / "augment.npz").unlink()
    with pytest.raises(DlmineError, match="lacks the saved mined features"):
        LoadedModel(str(model))


def test_explain_attributes_the_mined_columns_of_new_rows(augmented_run, tmp_path):
    tmp, out, df, m = augmented_run
    assert 0 <= m["ig_completeness_gap"] < 0.05, m["ig_completeness_gap"]  # the run's own, with mined inputs
    df.drop(columns=["label"]).head(5).to_parquet(tmp_path / "new.parquet", index=False)
    assert main(["explain", "--model", str(out / "model"), "--data", str(tmp_path / "new.parquet"), "--rows", "5",
                 "--output", str(tmp_path / "ex.parquet")]) == 0
    ex = pd.read_parquet(tmp_path / "ex.parquet")
    assert len(ex) == 5 and {"u", "flag", "cluster_0", "anomaly_score"} <= set(ex.columns)


def test_a_regress_job_takes_augment_too(tmp_path, ray_local):
    from conftest import make_frame

    make_frame(200, kind="regress").to_parquet(tmp_path / "r.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", task="regress", knowledge="off", augment=["anomaly"],
                    data={"path": str(tmp_path / "r.parquet"), "target": "target"})
    assert main(["run", job, "--output", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["augment"] == {"anomaly": 1} and "r2" in m
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["n_features"] == 4 + 3 + 1 and meta["feature_names"][-1] == "anomaly_score"  # a-d, color x3, score


def test_task_models_mine_memberships_and_scores_as_the_tasks_own_models_do(tmp_path):
    """augment_models: tasks (the default): the cluster task's model gives the memberships and the
    detect task's model the score, trained by the run's own stage loop."""
    import torch

    from dlmine_ray.tasks import get_task
    from dlmine_ray.train.stages import fit_rows

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-3, 1, (150, 3)), rng.normal(3, 1, (150, 3))]).astype(np.float32)
    options = {"cluster": {"init": "kmeans", "refine_epochs": 3}, "detect": {}}
    aug = Augmenter(["clusters", "anomaly"], seed=2, options=options).fit(x, ["a", "b", "c"], n_numeric=3,
                                                                          trainer=fit_rows)
    assert aug.models == "tasks" and aug.counts_ == {"clusters": 2, "anomaly": 1}  # two blobs: k = 2
    assert aug.task_models_["clusters"]["task"] == "cluster" and aug.task_models_["anomaly"]["task"] == "detect"
    z = aug.transform(x)
    np.testing.assert_allclose(z[:, :2].sum(axis=1), 1.0, rtol=1e-5)
    # the memberships are the cluster model's q, and the blobs fall in different clusters
    held = aug.task_models_["clusters"]
    net = get_task("cluster").build_model(3, held["info"], held["model"])
    net.load_state_dict({k.split(":", 1)[1]: torch.from_numpy(v) for k, v in aug.arrays_.items()
                         if k.startswith("clusters_state:")}, strict=False)
    with torch.no_grad():
        q = net.eval()(torch.from_numpy(x), out="q").numpy()
    np.testing.assert_allclose(z[:, :2], q, rtol=1e-5, atol=1e-6)
    assert z[:150, :2].argmax(1).tolist().count(z[0, :2].argmax()) > 140
    assert z[150:, :2].argmax(1).tolist().count(1 - z[0, :2].argmax()) > 140
    # a row far from both blobs scores above every training row
    far = aug.transform(np.array([[30.0, -30.0, 30.0]], dtype=np.float32))
    assert far[0, 2] > z[:, 2].max()
    # the saved state (weights as arrays, no pickle) scores the same after loading
    aug.save(tmp_path)
    np.testing.assert_allclose(Augmenter.load(tmp_path).transform(x), z, rtol=1e-6)


def test_the_run_reports_the_paired_gain_over_seeds(augmented_run):
    _, out, _, m = augmented_run
    gain = m["augment_gain"]
    assert gain["metric"] == "accuracy" and gain["seeds"] == [0, 1] and len(gain["with"]) == 2
    assert gain["rows_test"] == m["rows_test"] and 0 < gain["rows_train"] <= m["rows_train"]
    np.testing.assert_allclose(gain["diff"], np.subtract(gain["with"], gain["without"]))
    assert gain["mean_diff"] == pytest.approx(np.mean(gain["diff"]))
    low, high = gain["diff_ci"]
    assert low <= gain["mean_diff"] <= high and high - low < 0.5
    assert all(0.0 <= a <= 1.0 for a in gain["with"] + gain["without"])
    page = (out / "report.html").read_text()
    assert "Gain from the mined columns" in page and f"{gain['mean_diff']:+.4f}" in page
