"""Reading, splitting, profiling and preprocessing on real files with a real local Ray."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import make_frame
from dlmine_ray.cli import main
from dlmine_ray.data.preprocess import TabularPreprocessor
from dlmine_ray.data.profile import assign_split, profile_dataset
from dlmine_ray.data.read import read_dataset, resolve_paths
from dlmine_ray.errors import DlmineError


def test_resolve_paths_folder_glob_list(tmp_path):
    for name in ("b.parquet", "a.parquet", "_SUCCESS", ".hidden.parquet"):
        (tmp_path / name).write_bytes(b"")
    files, fmt = resolve_paths(str(tmp_path))
    assert fmt == "parquet" and [f.rsplit("/", 1)[1] for f in files] == ["a.parquet", "b.parquet"]
    files, _ = resolve_paths(str(tmp_path / "*.parquet"))
    assert len(files) == 2
    files, _ = resolve_paths([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    assert len(files) == 2
    (tmp_path / "c.csv").write_text("x\n1\n")
    with pytest.raises(DlmineError, match="several formats"):
        resolve_paths(str(tmp_path))
    with pytest.raises(DlmineError, match="does not exist"):
        resolve_paths(str(tmp_path / "missing.parquet"))


def test_split_is_deterministic_and_order_free():
    df = make_frame(2000)
    a = assign_split(df, ["row_id"], 0.15, 0.15, seed=0)
    shuffled = df.sample(frac=1.0, random_state=1)
    b = assign_split(shuffled, ["row_id"], 0.15, 0.15, seed=0)
    assert (pd.Series(a, index=df.index).loc[shuffled.index].to_numpy() == b).all()
    share = np.bincount(a, minlength=3) / len(a)
    assert abs(share[1] - 0.15) < 0.03 and abs(share[2] - 0.15) < 0.03
    c = assign_split(df, ["row_id"], 0.15, 0.15, seed=1)
    assert (a != c).mean() > 0.2  # another seed, another split


def test_profile_and_preprocessing_fit_on_training_rows_only(tmp_path, ray_local):
    df = make_frame(600)
    df.to_parquet(tmp_path / "d.parquet")
    ds = read_dataset(str(tmp_path / "d.parquet"))
    prof = profile_dataset(ds, "label", True, "row_id", 0.2, 0.2, seed=3)
    split = assign_split(df, ["row_id"], 0.2, 0.2, 3)
    assert prof.rows == np.bincount(split, minlength=3).tolist()
    assert prof.columns["d"].nulls == int(df["d"].isna().sum())
    feats = ["a", "b", "c", "d", "color"]
    prep = TabularPreprocessor.from_profile(prof, feats, "label", "categorical", "row_id", 10)
    train = df[split == 0]
    # statistics come from the training split only (population std)
    mean_d = train["d"].mean()
    assert dict((c, (m, s)) for c, m, s in prep.numeric_)["d"] == pytest.approx((mean_d, train["d"].std(ddof=0)))
    assert prep.target_info_["classes"] == ["no", "yes"]
    x = prep.transform_features(df)
    assert x.shape == (600, 4 + 3) and x.dtype == np.float32
    # missing values are imputed with the training mean, i.e. scale to 0
    assert np.allclose(x[df["d"].isna().to_numpy(), 3], 0.0)
    # one-hot: exactly one of the colour columns is set, and it is the right one
    names = prep.feature_names
    red = names.index("color=red")
    assert np.array_equal(x[:, red] == 1.0, (df["color"] == "red").to_numpy())
    assert np.allclose(x[:, 4:].sum(axis=1), 1.0)
    # an unseen category encodes as all zeros; JSON round trip keeps the transform
    new = df.head(3).assign(color=["purple", None, "red"])
    again = TabularPreprocessor.from_dict(prep.to_dict()).transform_features(new)
    assert again[0, 4:].sum() == 0 and again[1, 4:].sum() == 0 and again[2, red] == 1.0


def test_make_data_shards(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["make-data", "classification", "--rows", "1001", "--features", "5", "--shards", "4",
                 "--classes", "3", "--categorical", "1", "--output", str(out)]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 4
    t = pq.read_table(out).to_pandas()
    assert len(t) == 1001 and t["row_id"].is_unique
    assert {"x0", "x4", "c0", "label"} <= set(t.columns) and set(t["label"]) <= {0, 1, 2}
    assert t["label"].nunique() >= 2
    # refuses to overwrite without --overwrite
    assert main(["make-data", "regression", "--rows", "10", "--output", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
