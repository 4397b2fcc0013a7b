"""Explanations: a classify or regress run explains its deep model (integrated gradients with their
completeness gap, permutation importance, surrogate rules with their fidelity) in metrics.json and
report.html, and ``dlmine explain`` writes per-row attributions of new data, or refuses in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_job
from dlmine_ray.cli import main

NOISE = [f"noise{i}" for i in range(5)]


def _table(rows: int, seed: int, kind: str) -> pd.DataFrame:
    """Two informative columns and six noise columns. classify: the label depends on ``a`` (mean 10,
    sd 3: a surrogate's thresholds in original units are near 10, standardised ones near 0) and on
    the categorical ``color`` (red or not); regress: the target on ``a`` and ``b``. Noise: five
    numeric columns and the categorical ``shape``."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"row_id": np.arange(rows), "a": 10 + 3 * rng.normal(size=rows),
                       "color": rng.choice(["red", "green", "blue"], size=rows)})
    for c in NOISE:
        df[c] = rng.normal(size=rows)
    df["shape"] = rng.choice(["square", "circle"], size=rows)
    z = (df["a"] - 10) / 3
    if kind == "classify":
        df["label"] = np.where(2 * z + 3 * (df["color"] == "red") - 1 > 0, "yes", "no")
    else:
        df["b"] = rng.normal(size=rows)
        df["target"] = 3 * z - 2 * df["b"] + rng.normal(0, 0.1, rows)
    return df


def _run(tmp_path, kind: str, seed: int = 0):
    df = _table(800, seed, kind)
    df.to_parquet(tmp_path / f"{kind}.parquet", index=False)
    fields = {"task": kind, "data": {"path": str(tmp_path / f"{kind}.parquet"),
                                     "target": "label" if kind == "classify" else "target"},
              "model": {"hidden": [32]}, "train": {"epochs": 30, "batch_size": 32}}
    out = tmp_path / f"run_{kind}"
    assert main(["run", write_job(tmp_path / f"{kind}.yaml", **fields), "--output", str(out)]) == 0
    return out, df, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """One classify run, shared by the tests that read its outputs or explain with its model."""
    from conftest import _ensure_ray

    _ensure_ray()
    return _run(tmp_path_factory.mktemp("explain"), "classify")


def _section(page: str) -> str:
    start = page.index("<h2>Explanations</h2>")
    return page[start:page.index("<h2>", start + 1)]


def test_classify_run_explains_the_two_informative_columns(classify_run):
    out, _, m = classify_run
    assert m["accuracy"] > 0.9, m
    # the one-hot group of color counts as one feature, and it and a rank first by both methods
    assert set(m["top_features_ig"][:2]) == {"a", "color"}, m["top_features_ig"]
    assert set(m["top_features_permutation"][:2]) == {"a", "color"}, m["top_features_permutation"]
    assert 0 <= m["ig_completeness_gap"] < 0.05, m["ig_completeness_gap"]
    assert 0 < m["explained_rows"] <= 256
    assert m["surrogate_fidelity_metric"] == "accuracy" and m["surrogate_fidelity"] > 0.85, m
    assert 2 <= len(m["surrogate_rules"]) <= 8 and all(r.startswith("if ") for r in m["surrogate_rules"])
    assert any(" a " in r and r.endswith(" then yes") for r in m["surrogate_rules"]), m["surrogate_rules"]

    section = _section((out / "report.html").read_text())
    for part in ("Top features", "Per class", "no (", "yes (", "Surrogate rules", "Fidelity"):
        assert part in section, part
    assert f'{m["surrogate_fidelity"]:.4g}' in section
    # rules in original units: a's thresholds lie near its mean of 10 (a standardised one would be near 0)
    rules = re.findall(r'<td class="l">([^<]*)</td><td class="l">(yes|no)</td>', section)
    assert rules and any("color = red" in r for r, _ in rules), rules
    thresholds = [float(v) for r, _ in rules for v in re.findall(r"(-?[\d.]+) &lt; a\b", r)
                  + re.findall(r"\ba (?:&lt;=|&gt;) (-?[\d.]+)", r)]
    assert thresholds and all(4 < t < 16 for t in thresholds), (thresholds, rules)
    assert "color=red" not in section  # encoded names never reach the reader


def test_regress_run_ranks_a_and_b_first(tmp_path, ray_local):
    out, _, m = _run(tmp_path, "regress", seed=1)
    assert m["r2"] > 0.9, m
    assert set(m["top_features_ig"][:2]) == {"a", "b"}, m["top_features_ig"]
    assert set(m["top_features_permutation"][:2]) == {"a", "b"}, m["top_features_permutation"]
    assert m["ig_completeness_gap"] < 0.05
    assert m["surrogate_fidelity_metric"] == "r2" and 0.5 < m["surrogate_fidelity"] <= 1.0, m
    section = _section((out / "report.html").read_text())
    assert "Surrogate rules" in section and "Per class" not in section


def test_dlmine_explain_writes_attributions_that_add_up(tmp_path, ray_local, capsys, classify_run):
    from dlmine_ray.infer import LoadedModel

    out = classify_run[0]
    new = _table(300, 7, "classify").drop(columns=["label"])
    new.to_csv(tmp_path / "new.csv", index=False)
    target = tmp_path / "deep" / "er" / "attr.parquet"
    assert main(["explain", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"), "--rows", "40",
                 "--output", str(target)]) == 0
    attr = pd.read_parquet(target)
    features = ["a", *NOISE, "color", "shape"]
    assert list(attr.columns[:3]) == ["row", "row_id", "prediction"]
    assert sorted(attr.columns[3:]) == sorted(features) and attr.shape == (40, 3 + len(features))
    assert (attr["row"] == np.arange(40)).all() and (attr["row_id"] == new["row_id"][:40]).all()
    assert set(attr["prediction"]) <= {"yes", "no"}
    assert set(attr[features].abs().mean().nlargest(2).index) == {"a", "color"}

    # completeness, checked here from the model itself: a row's attributions add up to the change
    # of its predicted class's logit from the baseline row (numeric at the mean, 1/k per category)
    model = LoadedModel(str(out / "model"))
    x = model.prep.transform_features(new.iloc[:40])
    base = np.zeros((1, x.shape[1]), np.float32)
    j = len(model.prep.numeric_)
    for _, cats in model.prep.categorical_:
        base[0, j:j + len(cats)] = 1.0 / len(cats)
        j += len(cats)
    with torch.no_grad():
        fx, fb = model.model(torch.from_numpy(x)).numpy(), model.model(torch.from_numpy(base)).numpy()[0]
    k = fx.argmax(axis=1)
    diff = fx[np.arange(40), k] - fb[k]
    assert (np.asarray(model.info["classes"])[k] == attr["prediction"]).all()
    gap = np.abs(attr[features].sum(axis=1).to_numpy() - diff) / np.abs(diff)
    # 48 steps make it nearly exact (measured ~0.2%); from the all-zero baseline it would be ~5%
    assert np.median(gap) < 0.01, gap

    # fewer rows than asked: all of them; an existing output needs --overwrite
    assert main(["explain", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"), "--rows", "5000",
                 "--output", str(target), "--overwrite"]) == 0
    assert len(pd.read_parquet(target)) == 300
    capsys.readouterr()
    assert main(["explain", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"), "--rows", "3",
                 "--output", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _one_line_error(capsys, args, text):
    capsys.readouterr()
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and text in err, err


def test_explain_refuses_bad_input_in_one_line(tmp_path, ray_local, capsys, classify_run):
    _table(400, 3, "classify").to_parquet(tmp_path / "rows.parquet", index=False)
    detect = write_job(tmp_path / "detect.yaml", task="detect",
                       data={"path": str(tmp_path / "rows.parquet"), "target": None, "ignore": ["label"]},
                       model={"hidden": [8]}, train={"epochs": 1, "batch_size": 64})
    assert main(["run", detect, "--output", str(tmp_path / "detect")]) == 0
    # a detect run has no explanations in its outputs either
    assert "ig_completeness_gap" not in json.loads((tmp_path / "detect" / "metrics.json").read_text())
    out = tmp_path / "made" / "here" / "attr.parquet"
    data = ["--data", str(tmp_path / "rows.parquet"), "--output", str(out)]
    _one_line_error(capsys, ["--model", str(tmp_path / "detect" / "model"), "--rows", "5", *data],
                    "'detect' model, whose task has no explanations; dlmine explain explains models of: classify")
    _one_line_error(capsys, ["--model", str(tmp_path / "nowhere"), "--rows", "5", *data],
                    "is not a dlmine model folder")

    model = ["--model", str(classify_run[0] / "model")]
    for rows in ("0", "-3"):
        _one_line_error(capsys, [*model, "--rows", rows, *data], "--rows must be a positive number")
    pd.read_parquet(tmp_path / "rows.parquet").drop(columns=["color"]).to_csv(tmp_path / "nocolor.csv", index=False)
    _one_line_error(capsys, [*model, "--rows", "5", "--data", str(tmp_path / "nocolor.csv"), "--output", str(out)],
                    "data lacks column(s) the model needs: color")
    assert not (tmp_path / "made").exists()  # no output, not even its folder
