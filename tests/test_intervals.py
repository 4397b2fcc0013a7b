"""Paired bootstrap intervals: the weighted metrics equal scikit-learn's on the drawn rows, a tie
is called a tie, and a run's metrics.json, report and summary carry the intervals."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import write_job
from dlmine_ray.cli import main
from dlmine_ray.report.page import metrics_html, metrics_table
from dlmine_ray.tasks import bootstrap as bs
from dlmine_ray.tasks import get_task


def _draws(n, b=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(b)]


def test_weighted_metrics_equal_sklearn_on_the_drawn_rows():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba[:5] = np.round(proba[:5], 1)  # some tied scores
    pred = proba.argmax(axis=1)
    classes = ["a", "b", "c"]
    frame = pd.DataFrame({"prediction": np.asarray(classes, dtype=object)[pred],
                          **{f"proba_{c}": proba[:, j] for j, c in enumerate(classes)}})
    truth = np.asarray(classes, dtype=object)[y]
    task = get_task("classify")
    draws = _draws(n)
    w = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
    got = task.bootstrap_scorer(truth, frame, {"classes": classes})(w)
    for i, d in enumerate(draws):
        ref = task.test_metrics(truth[d], frame.iloc[d].reset_index(drop=True), {"classes": classes})
        for k in ("accuracy", "f1_macro", "log_loss", "roc_auc"):
            assert got[k][i] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
    yb = (y == 1)
    auc = bs.roc_auc(w, yb, proba[:, 1])
    for i, d in enumerate(draws):
        assert auc[i] == pytest.approx(skm.roc_auc_score(yb[d], proba[d, 1]))
    yr = rng.normal(size=n)
    pr = yr + rng.normal(0, 0.5, n)
    reg = bs.regression(w, yr, pr)
    for i, d in enumerate(draws):
        assert reg["rmse"][i] == pytest.approx(np.sqrt(skm.mean_squared_error(yr[d], pr[d])))
        assert reg["mae"][i] == pytest.approx(skm.mean_absolute_error(yr[d], pr[d]))
        assert reg["r2"][i] == pytest.approx(skm.r2_score(yr[d], pr[d]))


def test_equal_scores_are_a_tie_and_a_clear_gap_is_not():
    rng = np.random.default_rng(1)
    y = rng.normal(size=400)
    good = y + rng.normal(0, 0.3, 400)
    task = get_task("regress")
    preds = {"deep": pd.DataFrame({"prediction": good}), "baseline": pd.DataFrame({"prediction": good})}
    same = bs.paired_intervals(lambda w, which: task.bootstrap_scorer(y, preds[which], {})(w), 400, True)
    assert same["diff_rmse_ci"] == [0.0, 0.0]
    m = {"task": "regress", "rmse": 0.3, "baseline_rmse": 0.3, **same}
    assert metrics_table(m)["verdict"].tolist()[0] == "tie"
    page = metrics_html(m, "HGB")
    assert 'class="better"' not in page and "tie" in page
    # the same value with no interval is a tie too (the old report coloured it as a win)
    assert metrics_table({"task": "classify", "accuracy": 0.9717, "baseline_accuracy": 0.9717})["verdict"][0] == "tie"
    preds["baseline"] = pd.DataFrame({"prediction": y + rng.normal(0, 1.0, 400)})
    gap = bs.paired_intervals(lambda w, which: task.bootstrap_scorer(y, preds[which], {})(w), 400, True)
    low, high = gap["diff_rmse_ci"]
    assert high < 0  # the deep model's rmse is clearly lower
    assert metrics_table({"task": "regress", "rmse": 0.3, "baseline_rmse": 1.0, **gap})["verdict"][0] == "better"
    lo, hi = gap["rmse_ci"]
    assert lo < 0.3 * 1.05 and hi > 0.3 * 0.95


def test_run_reports_intervals_and_counts_apart(tmp_path, capsys, ray_local, table_dir):
    out = tmp_path / "run"
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)}, train={"epochs": 5}, compare_baselines=True)
    assert main(["run", job, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    for k in ("accuracy", "roc_auc", "f1_macro", "log_loss"):
        lo, hi = m[f"{k}_ci"]
        assert lo <= m[k] <= hi, k
        blo, bhi = m[f"baseline_{k}_ci"]
        assert blo <= m[f"baseline_{k}"] <= bhi
        dlo, dhi = m[f"diff_{k}_ci"]
        assert dlo <= dhi
    assert "rows_train" not in metrics_table(m)["metric"].tolist()
    assert "verdict" in printed and "e+0" not in printed
    html = (out / "report.html").read_text()
    assert "difference, paired 95% CI" in html


def test_weighted_detection_and_clustering_metrics_equal_sklearn():
    from dlmine_ray.tasks.cluster import label_metrics
    from dlmine_ray.tasks.detect import detection_metrics, weighted_detection

    rng = np.random.default_rng(3)
    n = 250
    truth = rng.random(n) < 0.1
    score = np.round(rng.normal(size=n) + 1.5 * truth, 1)  # rounded: ties
    draws = _draws(n, b=6, seed=4)
    w = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
    got = weighted_detection(w, truth, score)
    labels = rng.integers(0, 4, n)
    clusters = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 5, n))
    agree = bs.agreement(w, labels, clusters)
    for i, d in enumerate(draws):
        ref = detection_metrics(truth[d], score[d])
        assert got["roc_auc"][i] == pytest.approx(ref["roc_auc"])
        assert got["average_precision"][i] == pytest.approx(ref["average_precision"])
        ref_c = label_metrics(labels[d], clusters[d])
        for k in ("nmi", "ari", "acc"):
            assert agree[k][i] == pytest.approx(ref_c[k], abs=1e-9), k
    # precision at n without ties: the drawn copies of the top rows
    distinct = rng.normal(size=n) + 1.5 * truth
    p_at_n = bs.precision_at_n(w, truth, distinct)
    for i, d in enumerate(draws):
        order = np.argsort(-distinct[d], kind="stable")
        k = int(truth[d].sum())
        assert p_at_n[i] == pytest.approx(truth[d][order[:k]].mean())


def test_a_ranking_built_once_scores_every_chunk_of_draws_as_the_raw_scores_do():
    rng = np.random.default_rng(5)
    n = 200
    positive = rng.random(n) < 0.3
    score = np.round(rng.normal(size=n) + positive, 1)  # ties
    up, down = bs.Ranking(score), bs.Ranking(score, descending=True)
    for w in bs.weight_draws(n, 30, seed=2):
        raw = bs.roc_auc(w, positive, score)
        assert np.allclose(bs.roc_auc(w, positive, up), raw) and np.allclose(bs.roc_auc(w, positive, down), raw)
        assert np.allclose(bs.average_precision(w, positive, down), bs.average_precision(w, positive, score))
        assert np.allclose(bs.precision_at_n(w, positive, down), bs.precision_at_n(w, positive, score))
    with pytest.raises(ValueError, match="descending"):
        bs.average_precision(w, positive, up)
