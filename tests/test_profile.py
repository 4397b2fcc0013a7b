"""The profile sees the data as it is: empty CSV fields and data.na_values are missing, variances
survive values far from zero, constant columns are dropped (and named) rather than refused."""

import json

import numpy as np
import pandas as pd
import pytest

import dlmine_ray
from conftest import make_frame
from dlmine_ray.data.preprocess import TabularPreprocessor
from dlmine_ray.data.profile import profile_dataset
from dlmine_ray.data.read import read_dataset
from dlmine_ray.errors import DlmineError


def test_empty_csv_fields_and_na_values_are_missing(tmp_path, ray_local):
    df = make_frame(200)
    df["color"] = df["color"].astype(object)
    df.loc[:47, "color"] = ""            # 48 empty text fields
    df["size"] = np.where(np.arange(200) % 10 == 0, "?", (np.arange(200) % 7).astype(str))
    df.to_csv(tmp_path / "d.csv", index=False)
    prof = profile_dataset(read_dataset(str(tmp_path / "d.csv"), row_key=True), "label", True, None, 0.2, 0.2, 0)
    color = prof.columns["color"]
    assert color.nulls == 48 and "" not in color.counts and "" not in color.all_counts
    shown = {c["column"]: c for c in prof.summary("label")["columns"]}
    assert shown["color"]["missing"] == 48
    # without the marker '?' is text, so the column is categorical; with it, numeric with 20 missing
    assert prof.columns["size"].non_numeric == 20
    marked = profile_dataset(read_dataset(str(tmp_path / "d.csv"), row_key=True, na_values=["?"]), "label", True,
                             None, 0.2, 0.2, 0)
    assert marked.columns["size"].nulls == 20 and marked.columns["size"].non_numeric == 0
    # Parquet text and numbers honour the markers too
    pq = df.assign(d=df["d"].fillna(-999.0))
    pq.to_parquet(tmp_path / "d.parquet", index=False)
    p = profile_dataset(read_dataset(str(tmp_path / "d.parquet"), row_key=True, na_values=["?", "-999"]),
                        "label", True, None, 0.2, 0.2, 0)
    assert p.columns["size"].nulls == 20 and p.columns["d"].nulls == int(df["d"].isna().sum()) > 0


def test_variance_of_values_far_from_zero(tmp_path, ray_local):
    rng = np.random.default_rng(0)
    df = make_frame(3000).assign(big=1.7e9 + rng.normal(0, 5.0, 3000))
    for i in range(3):  # three files: the block statistics are merged
        df.iloc[i * 1000:(i + 1) * 1000].to_parquet(tmp_path / f"p{i}.parquet", index=False)
    prof = profile_dataset(read_dataset(str(tmp_path), row_key=True), "label", True, "row_id", 0.2, 0.2, 0)
    prep = TabularPreprocessor.from_profile(prof, ["a", "big"], "label", "categorical", "row_id", 10)
    mean, std = {c: (m, s) for c, m, s in prep.numeric_}["big"]
    from dlmine_ray.data.profile import assign_split

    train = df["big"][assign_split(df, ["row_id"], 0.2, 0.2, 0) == 0]
    assert mean == pytest.approx(train.mean(), rel=1e-12)
    assert std == pytest.approx(train.std(ddof=0), rel=1e-6)  # sum-of-squares minus squared sum gave 1.0


def test_constant_columns_are_dropped_and_named(tmp_path, ray_local):
    df = make_frame(300).assign(border=0.0, tag="x")
    df.to_parquet(tmp_path / "c.parquet", index=False)
    job = {"name": "const", "task": "classify", "data": {"path": str(tmp_path / "c.parquet"), "target": "label",
                                                         "id": "row_id"},
           "model": {"hidden": [8]}, "train": {"epochs": 1}, "compare_baselines": False}
    dlmine_ray.run_job(job, tmp_path / "run", quiet=True)
    inputs = json.loads((tmp_path / "run" / "model" / "model.json").read_text())["input_columns"]
    assert "border" not in inputs and "tag" not in inputs and "a" in inputs
    html = (tmp_path / "run" / "report.html").read_text()
    assert "constant" in html and "border" in html and "tag" in html
    with pytest.raises(DlmineError, match="column 'border' is constant"):
        dlmine_ray.run_job({**job, "data": {**job["data"], "drop_constant": False}}, tmp_path / "r2", quiet=True)
    only = pd.DataFrame({"row_id": range(50), "k": 1.0, "label": ["a", "b"] * 25})
    only.to_parquet(tmp_path / "o.parquet", index=False)
    with pytest.raises(DlmineError, match="every feature column is constant"):
        dlmine_ray.run_job({**job, "data": {**job["data"], "path": str(tmp_path / "o.parquet")}}, tmp_path / "r3",
                           quiet=True)
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
