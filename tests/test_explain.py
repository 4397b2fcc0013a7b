"""Explanations: a classify or regress run explains its deep model (integrated gradients with their
completeness gap, permutation importance, surrogate rules with their fidelity) in metrics.json and
report.html, sized by the job's ``explain:`` fields, and ``dlmine explain`` writes per-row attributions of
a seeded sample of new data (or its first rows), or refuses in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import yaml

from conftest import make_frame, write_job
from dlmine_ray.app.jobfile import load_job, parse_overrides
from dlmine_ray.cli import main
from dlmine_ray.errors import DlmineError
from dlmine_ray.spec import spec_from_dict

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


def _run(tmp_path, kind: str, seed: int = 0, **extra):
    df = _table(800, seed, kind)
    df.to_parquet(tmp_path / f"{kind}.parquet", index=False)
    fields = {"task": kind, "data": {"path": str(tmp_path / f"{kind}.parquet"),
                                     "target": "label" if kind == "classify" else "target"},
              "model": {"hidden": [32]}, "train": {"epochs": 30, "batch_size": 32}, **extra}
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


def test_regress_run_ranks_a_and_b_first_with_the_jobs_explain_sizes(tmp_path, ray_local):
    # explain: sizes other than the defaults. The test split has ~120 rows; the run samples about
    # max(rows, permutation_rows) of them (a Bernoulli sample, capped), and training rows likewise
    sizes = {"rows": 40, "ig_steps": 32, "permutation_rows": 20, "permutation_repeats": 2, "surrogate_rows": 300,
             "surrogate_depth": 2}
    out, _, m = _run(tmp_path, "regress", seed=1, explain=sizes)
    assert m["r2"] > 0.9, m
    assert set(m["top_features_ig"][:2]) == {"a", "b"}, m["top_features_ig"]
    assert set(m["top_features_permutation"][:2]) == {"a", "b"}, m["top_features_permutation"]
    assert m["ig_completeness_gap"] < 0.05
    assert m["surrogate_fidelity_metric"] == "r2" and 0.5 < m["surrogate_fidelity"] <= 1.0, m
    n = m["explained_rows"]
    assert 30 <= n <= 40, n  # with the defaults, all ~120 test rows
    assert 2 <= len(m["surrogate_rules"]) <= 4, m["surrogate_rules"]  # depth 2: at most 4 leaves
    section = _section((out / "report.html").read_text())
    assert "Surrogate rules" in section and "Per class" not in section
    for told in (f"captum, 32 steps) on {n} test rows", "20 test rows, mean of 2 shuffles", "tree of depth 2",
                 "deep model on 20 test rows"):
        assert told in section, (told, re.sub(r"<img[^>]*>", "", section)[:3000])
    fitted_on = int(re.search(r"predictions on ([\d,]+) training rows", section).group(1).replace(",", ""))
    assert 250 <= fitted_on <= 300, fitted_on  # with the defaults, all ~560 training rows
    assert yaml.safe_load((out / "job.yaml").read_text())["explain"] == {"enabled": True, **sizes}


def test_explain_fields_default_validate_and_take_set(tmp_path):
    spec = spec_from_dict({})
    assert (spec.explain.enabled, spec.explain.rows, spec.explain.ig_steps, spec.explain.permutation_rows,
            spec.explain.permutation_repeats, spec.explain.surrogate_rows, spec.explain.surrogate_depth) \
        == (True, 256, 48, 2000, 5, 5000, 3)
    job = tmp_path / "job.yaml"
    job.write_text("name: x\n")
    spec = load_job(job, parse_overrides(["explain.rows=40", "explain.surrogate_depth=2", "explain.enabled=false"]))
    assert (spec.explain.rows, spec.explain.surrogate_depth, spec.explain.enabled) == (40, 2, False)
    for doc, field in (({"rows": 0}, "explain.rows"), ({"surrogate_depth": 13}, "explain.surrogate_depth"),
                       ({"ig_steps": "many"}, "explain.ig_steps"),
                       ({"permutation_rows": 1}, "explain.permutation_rows"), ({"depth": 2}, "explain.depth")):
        with pytest.raises(DlmineError, match=f"^invalid job field '{re.escape(field)}': "):
            spec_from_dict({"explain": doc})
    # the explanations' sizes are not the model's settings: no tuning over them
    with pytest.raises(DlmineError, match="explain.rows': only model"):
        spec_from_dict({"tune": {"space": {"explain.rows": [10, 20]}}})


def test_a_run_with_explain_off_has_no_explanations(tmp_path, ray_local):
    make_frame(200).to_parquet(tmp_path / "d.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.parquet")}, model={"hidden": [8]},
                    train={"epochs": 2, "batch_size": 64}, explain={"enabled": False}, knowledge="off")
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "accuracy" in m and not {"explained_rows", "ig_completeness_gap", "surrogate_rules"} & set(m), m
    assert "<h2>Explanations</h2>" not in (tmp_path / "out" / "report.html").read_text()


def test_dlmine_explain_writes_attributions_that_add_up(tmp_path, ray_local, capsys, classify_run):
    from dlmine_ray.infer import LoadedModel

    out = classify_run[0]
    new = _table(300, 7, "classify").drop(columns=["label"])
    new.to_csv(tmp_path / "new.csv", index=False)
    target = tmp_path / "deep" / "er" / "attr.parquet"
    assert main(["explain", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"), "--rows", "40",
                 "--first", "--output", str(target)]) == 0
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


def _explained(model, data, out, *args) -> pd.DataFrame:
    assert main(["explain", "--model", str(model), "--data", str(data), "--output", str(out), "--overwrite",
                 *args]) == 0
    return pd.read_parquet(out)


def test_dlmine_explain_samples_rows_by_seed(tmp_path, ray_local, classify_run):
    """By default the N rows are a seeded uniform sample of all the rows, written in file order with
    their positions; a row's attributions are the same whichever way it was chosen."""
    from dlmine_ray.explain import explain_frame
    from dlmine_ray.infer import LoadedModel

    model = classify_run[0] / "model"
    features = ["a", *NOISE, "color", "shape"]
    # 70,000 rows in two files: the sampling pass reads a batch of 65,536 rows, then the rest
    new = _table(70_000, 11, "classify").drop(columns=["label"])
    (tmp_path / "new").mkdir()
    new.iloc[:35_000].to_parquet(tmp_path / "new" / "part-0.parquet", index=False)
    new.iloc[35_000:].to_parquet(tmp_path / "new" / "part-1.parquet", index=False)
    out = tmp_path / "attr.parquet"
    a = _explained(model, tmp_path / "new", out, "--rows", "30")
    rows = a["row"].to_numpy()
    assert len(rows) == 30 and len(set(rows)) == 30 and (np.diff(rows) > 0).all()
    assert rows.min() >= 0 and rows.max() < len(new)
    assert rows.max() > 65_536 and rows.max() - rows.min() > 10_000, rows  # across the data, not its head
    assert (a["row_id"].to_numpy() == new["row_id"].to_numpy()[rows]).all()  # the row at each position
    again = _explained(model, tmp_path / "new", out, "--rows", "30", "--seed", "0")
    pd.testing.assert_frame_equal(a, again)
    other = _explained(model, tmp_path / "new", out, "--rows", "30", "--seed", "1")
    assert len(other) == 30 and set(other["row"]) != set(rows)
    # each row's attributions are its own: those of the same rows explained directly
    direct, _ = explain_frame(LoadedModel(str(model)), new.iloc[rows].reset_index(drop=True))
    assert (direct["prediction"].to_numpy() == a["prediction"].to_numpy()).all()
    np.testing.assert_allclose(a[features].to_numpy(), direct[features].to_numpy(), rtol=1e-4, atol=1e-6)

    # a small CSV: the sample's rows carry the attributions that --first gives the rows at those positions
    small = new.iloc[:300]
    small.to_csv(tmp_path / "small.csv", index=False)
    sampled = _explained(model, tmp_path / "small.csv", out, "--rows", "25", "--seed", "3")
    assert not (sampled["row"].to_numpy() == np.arange(25)).all()
    first = _explained(model, tmp_path / "small.csv", out, "--rows", "300", "--first").set_index("row")
    assert (first.index == np.arange(300)).all()
    same = first.loc[sampled["row"].to_numpy()]
    assert (same["row_id"].to_numpy() == sampled["row_id"].to_numpy()).all()
    assert (same["prediction"].to_numpy() == sampled["prediction"].to_numpy()).all()
    np.testing.assert_allclose(sampled[features].to_numpy(), same[features].to_numpy(), rtol=1e-4, atol=1e-6)
    # N at or past the row count: every row, in order, sampled or not
    every = _explained(model, tmp_path / "small.csv", out, "--rows", "300", "--seed", "5")
    assert (every["row"].to_numpy() == np.arange(300)).all()


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
    _one_line_error(capsys, [*model, "--rows", "5", "--seed", "-1", *data], "--seed must be 0 or more")
    pd.read_parquet(tmp_path / "rows.parquet").drop(columns=["color"]).to_csv(tmp_path / "nocolor.csv", index=False)
    _one_line_error(capsys, [*model, "--rows", "5", "--data", str(tmp_path / "nocolor.csv"), "--output", str(out)],
                    "data lacks column(s) the model needs: color")
    assert not (tmp_path / "made").exists()  # no output, not even its folder
