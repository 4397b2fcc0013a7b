"""report.html of the cluster and detect tasks, from hand-made inputs (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dlmine_ray.report.page import write_report
from dlmine_ray.tasks import get_task
from dlmine_ray.tasks.cluster import cluster_profile
from dlmine_ray.spec import spec_from_dict

FEATURES = ["petal_length", "sepal_width", "color=red", "color=blue"]
# original units of the numeric features: (mean, std)
UNITS = {"petal_length": (3.76, 1.76), "sepal_width": (3.05, 0.43)}


def _profile(rows=150):
    return {"rows": rows, "rows_train": rows, "rows_valid": 0, "rows_test": 0, "n_columns": 4,
            "columns": [{"column": "petal_length", "type": "numeric", "missing": 0, "min": 1.0, "max": 6.9,
                         "distinct": 43},
                        {"column": "sepal_width", "type": "numeric", "missing": 0, "min": 2.0, "max": 4.4,
                         "distinct": 23},
                        {"column": "color", "type": "categorical", "missing": 0, "min": None, "max": None,
                         "distinct": 2},
                        {"column": "label", "type": "categorical", "missing": 0, "min": None, "max": None,
                         "distinct": 3}],
            "target": "label", "class_balance": {"a": 50, "b": 50, "c": 50}}


def _history(stages):
    out, epoch = [], 0
    for i, stage in enumerate(stages):
        for e in range(4):
            epoch += 1
            out.append({"epoch": epoch, "stage": stage, "train_loss": 10.0 ** -i / (e + 1),
                        "val_loss": 1.1 * 10.0 ** -i / (e + 1)})
    return out


def _cluster_inputs(k=3, labels=True):
    rng = np.random.default_rng(0)
    n = 300
    cl = rng.integers(0, k, n)
    sample = pd.DataFrame({"cluster": cl, "confidence": rng.random(n), "map_x": rng.normal(size=n) + cl,
                           "map_y": rng.normal(size=n)})
    if labels:
        sample["label"] = np.array(["a", "b", "c"])[cl % 3]
    means = np.zeros((k, len(FEATURES)))
    means[:, 3] = 0.5
    means[:, 2] = 0.5
    means[0, 0] = 1.0   # cluster 0: petal_length 1 sd above: 3.76 + 1.76 = 5.52
    means[0, 2] = 0.8   # and mostly red
    overall = np.array([0.0, 0.0, 0.3, 0.7])
    material = {"sizes": np.bincount(cl, minlength=k), "means_encoded": means, "overall_encoded": overall,
                "map": sample, "numeric_units": UNITS}
    metrics = {"task": "cluster", "n_clusters": k, "k": k, "silhouette": 0.41, "davies_bouldin": 0.9,
               "nmi": 0.73, "ari": 0.62, "acc": 0.81, "baseline_silhouette": 0.38,
               "baseline_davies_bouldin": 1.2, "baseline_nmi": 0.75, "baseline_ari": 0.6, "baseline_acc": 0.8,
               "diff_nmi_ci": [-0.04, -0.005], "diff_ari_ci": [-0.01, 0.05],
               "rows": 300, "rows_train": 300, "train_seconds": 3.2, "total_seconds": 9.9,
               "stages": ["pretrain", "refine"]}
    info = {"feature_names": FEATURES, "k": k, "k_scores": {"2": 0.3, "3": 0.41, "4": 0.35}, "init": "kmeans",
            "alpha": 1.0}
    return metrics, material, info


def test_cluster_report(tmp_path):
    spec = spec_from_dict({"task": "cluster", "data": {"labels": "label"}})
    metrics, material, info = _cluster_inputs()
    out = tmp_path / "report.html"
    write_report(out, get_task(spec.task), spec, metrics, profile=_profile(), history=_history(["pretrain", "refine"]), material=material, info=info)
    page = out.read_text()
    for heading in ("Metrics", "Cluster map", "Cluster sizes", "Choosing k", "Cluster profiles",
                    "Learning curves", "Data profile", "Job"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count("<img") >= 5  # map, sizes, k, curves, class balance
    assert "baseline (k-means)" in page
    assert "0.41" in page and "0.73" in page and "1.2" in page
    # nmi down, its paired interval below 0; ari's contains 0; silhouette (a sample) has none
    assert 'class="worse">0.73' in page and 'class="better">0.41' not in page
    assert "no interval" in page and ">tie<" in page
    assert 'class="better">0.9' not in page  # Davies-Bouldin is lower, but a sample gives no interval
    # the distinguishing features in original units
    assert "petal_length 5.52 (overall 3.76)" in page
    assert "color=red 80% (overall 30%)" in page
    assert not [p for p in tmp_path.iterdir() if p.name != "report.html"]  # no temp file left behind


def test_cluster_profile_ranks_features_by_encoded_gap():
    _, material, info = _cluster_inputs()
    table = cluster_profile(material, info["feature_names"], n_top=2)
    assert list(table["cluster"]) == [0, 1, 2]
    first = table.loc[0, "distinguishing features"]
    assert first.startswith("petal_length 5.52")  # gap 1.0 beats color=red's 0.5
    assert "color=red 80%" in first
    assert table["rows"].sum() == material["sizes"].sum()


def test_cluster_edge_cases(tmp_path):
    spec = spec_from_dict({"task": "cluster", "data": {"labels": "label"}})
    metrics, material, info = _cluster_inputs(k=1, labels=False)
    metrics.update({"silhouette": math.nan, "davies_bouldin": math.nan, "nmi": math.nan})
    for key in ("baseline_silhouette", "baseline_nmi", "ari", "baseline_ari"):
        metrics.pop(key)
    material.pop("numeric_units")  # standardised values are shown instead
    material["sizes"] = np.array([300])
    material["means_encoded"] = material["overall_encoded"][None, :].copy()
    info["k_scores"] = {}
    out = tmp_path / "report.html"
    write_report(out, get_task(spec.task), spec, metrics, profile=_profile(), history=[], material=material, info=info)
    page = out.read_text()
    assert "<h2>Choosing k</h2>" not in page
    assert "(as overall)" in page
    assert "–" in page  # NaN metrics


def _detect_inputs(scores, threshold, flagged):
    n = len(scores)
    order = np.argsort(-scores, kind="stable")[:20]
    top = pd.DataFrame({"id": order, "score": scores[order], "flag": scores[order] > threshold,
                        "rank": np.arange(1, len(order) + 1),
                        "top_features": ["petal_length, color=red" if scores[i] > threshold else "" for i in order],
                        "label": ["anomaly" if scores[i] > threshold else "normal" for i in order]})
    rule = "the 90.0% quantile of the scores (contamination 0.1)"
    material = {"scores": scores, "top": top, "threshold": threshold, "threshold_rule": rule}
    metrics = {"task": "detect", "threshold": threshold, "n_flagged": flagged, "share_flagged": flagged / n,
               "rows_scored": n, "roc_auc": 0.93, "average_precision": 0.71, "precision_at_n": 0.66,
               "baseline_roc_auc": 0.88, "baseline_average_precision": 0.74, "baseline_precision_at_n": 0.6,
               "diff_roc_auc_ci": [0.01, 0.09], "diff_average_precision_ci": [-0.08, -0.01],
               "rows": n, "rows_train": n, "train_seconds": 1.5, "total_seconds": 4.0}
    info = {"feature_names": FEATURES, "threshold": threshold, "threshold_rule": rule, "method": "autoencoder"}
    return metrics, material, info


def test_detect_report(tmp_path):
    spec = spec_from_dict({"task": "detect", "data": {"labels": "label"}, "detect": {"contamination": 0.1}})
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.lognormal(-3, 0.5, 900), rng.lognormal(2, 1, 100), [0.0, 0.0]])  # wide span
    thr = float(np.quantile(scores, 0.9))
    metrics, material, info = _detect_inputs(scores, thr, int((scores > thr).sum()))
    out = tmp_path / "report.html"
    write_report(out, get_task(spec.task), spec, metrics, profile=_profile(len(scores)), history=_history(["fit"]), material=material, info=info)
    page = out.read_text()
    for heading in ("Metrics", "Anomaly scores", "Top anomalies", "Learning curves", "Data profile", "Job"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count("<img") >= 3
    assert "baseline (IsolationForest)" in page
    assert 'class="better">0.93' in page and 'class="worse">0.71' in page
    assert "contamination 0.1" in page and "petal_length, color=red" in page
    assert "<td class=\"l\">yes</td>" in page  # flags read yes/no, not 1/0
    assert f"{thr:.4g}" in page


def test_detect_nothing_flagged_all_zero_scores(tmp_path):
    spec = spec_from_dict({"task": "detect"})
    scores = np.zeros(50)
    metrics, material, info = _detect_inputs(scores, 0.0, 0)
    for key in [k for k in metrics if "roc_auc" in k or "precision" in k]:
        metrics.pop(key)
    out = tmp_path / "report.html"
    write_report(out, get_task(spec.task), spec, metrics, profile=_profile(50), history=_history(["pretrain", "svdd"]), material=material, info=info)
    page = out.read_text()
    assert "<h2>Anomaly scores</h2>" in page and "0 rows flagged" in page
