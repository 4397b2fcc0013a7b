"""Small data is scored in the calling process: ``dlmine predict`` of a small local file starts no
Ray and writes what scoring through Ray Data writes; ``dlmine_ray.load_model(path).predict(df)``
scores a DataFrame in-process with the same numbers."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dlmine_ray
from conftest import _ensure_ray, write_job
from dlmine_ray.cli import main


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"row_id": np.arange(n) + 1000 * seed, "a": rng.normal(size=n), "b": rng.normal(size=n),
                       "colour": rng.choice(["red", "green", "blue"], n)})
    df["label"] = np.where(df["a"] + (df["colour"] == "red") > 0.3, "yes", "no")
    df.loc[::7, "b"] = np.nan  # missing values go through the saved imputation
    return df


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    _ensure_ray()
    tmp = tmp_path_factory.mktemp("here")
    _frame(300, 0).to_parquet(tmp / "train.parquet", index=False)
    job = write_job(tmp / "job.yaml", name="here", data={"path": str(tmp / "train.parquet"), "target": "label",
                                                         "id": "row_id"}, knowledge="off")
    assert main(["run", job, "--output", str(tmp / "run")]) == 0
    return tmp / "run" / "model"


def _predict_in_subprocess(model: Path, data: Path, out: Path, ray_tmp: str, *extra: str) -> None:
    """``dlmine predict`` in a fresh process whose Ray (if it starts one) keeps its files under
    ``ray_tmp`` (RAY_TMPDIR), so the test can tell whether it started one."""
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    code = ("import sys; from dlmine_ray.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(model), "--data", str(data),
                        "--output", str(out), *extra], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_small_data_is_scored_without_ray_and_as_ray_data_scores_it(tmp_path, model_dir):
    new = _frame(120, 1).drop(columns="label")
    new.to_csv(tmp_path / "new.csv", index=False)
    here_tmp, ray_tmp = tempfile.mkdtemp(prefix="rt"), tempfile.mkdtemp(prefix="rt")
    _predict_in_subprocess(model_dir, tmp_path / "new.csv", tmp_path / "here.parquet", here_tmp)
    _predict_in_subprocess(model_dir, tmp_path / "new.csv", tmp_path / "ray.parquet", ray_tmp, "--ray")
    # Ray keeps its session under RAY_TMPDIR/ray: the forced run made one, the small-data run none
    assert (Path(ray_tmp) / "ray").is_dir()
    assert not (Path(here_tmp) / "ray").exists()
    here = pd.read_parquet(tmp_path / "here.parquet")
    ray_scored = pd.read_parquet(tmp_path / "ray.parquet").sort_values("row_id").reset_index(drop=True)
    assert list(here.columns) == list(ray_scored.columns) and len(here) == 120
    pd.testing.assert_frame_equal(here.sort_values("row_id").reset_index(drop=True), ray_scored, atol=1e-6)
    assert here["row_id"].tolist() == new["row_id"].tolist()  # in the file's order


def test_load_model_predicts_a_dataframe_in_process(tmp_path, model_dir):
    new = _frame(50, 2).drop(columns="label")
    model = dlmine_ray.load_model(str(model_dir))
    got = model.predict(new)
    assert list(got.columns[:2]) == ["row_id", "prediction"] and got["row_id"].tolist() == new["row_id"].tolist()
    new.to_parquet(tmp_path / "new.parquet", index=False)
    assert main(["predict", "--model", str(model_dir), "--data", str(tmp_path / "new.parquet"),
                 "--output", str(tmp_path / "p.parquet")]) == 0
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "p.parquet"), atol=1e-6)
    # without the id column: the predictions alone, one per row, in order
    assert model.predict(new.drop(columns="row_id"))["prediction"].tolist() == got["prediction"].tolist()
    with pytest.raises(dlmine_ray.DlmineError, match="data lacks column.*colour"):
        model.predict(new.drop(columns="colour"))
    with pytest.raises(dlmine_ray.DlmineError, match="not a dlmine model folder"):
        dlmine_ray.load_model(str(tmp_path))


def test_a_runs_encoded_split_is_scored_here_as_ray_data_scores_it(model_dir):
    """A run's encoded test split held in Ray's object store, in several blocks: scored in the
    driver (``score_here``) it gives, batch by batch and in order, what ``score_encoded`` through a
    Ray Data execution gives."""
    import ray

    from dlmine_ray.infer import LoadedModel, score_encoded, score_here

    lm = LoadedModel(str(model_dir))
    df = _frame(1000, 3)
    x = lm.prep.transform_features(df)
    ds = ray.data.from_items([{"features": x[i], "key": int(k)} for i, k in enumerate(df["row_id"])],
                             override_num_blocks=5).materialize()
    assert ds.num_blocks() == 5
    here = list(score_here(ds, str(model_dir), keep=("key",), threads=2, batch_size=150))
    assert max(len(b["key"]) for b in here) == 150  # batches within blocks
    through = list(score_encoded(ds, str(model_dir), keep=("key",)).iter_batches(batch_format="numpy"))
    assert all(list(b) == list(through[0]) for b in here + through)  # the same columns, in order, in every batch
    for name in here[0]:
        a, b = np.concatenate([h[name] for h in here]), np.concatenate([t[name] for t in through])
        assert a.shape[0] == 1000 and a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=name)
        else:
            assert (a == b).all(), name
    assert np.concatenate([h["key"] for h in here]).tolist() == df["row_id"].tolist()


def test_a_split_of_any_size_is_scored_in_the_driver_when_the_cluster_is_this_node():
    """On a one-node cluster (the tests' local Ray) Ray Data would use the driver's own cores, more
    slowly: a split larger than scaling.driver_max_mb is scored in the driver too; 0 keeps Ray Data."""
    _ensure_ray()
    from dlmine_ray.infer import scores_in_driver
    from dlmine_ray.runtime.session import cluster_is_this_node

    assert cluster_is_this_node()
    assert scores_in_driver(10 * 2**40, 256.0) and scores_in_driver(1, 256.0)
    assert not scores_in_driver(1, 0.0)


def test_a_cluster_of_two_nodes_is_not_this_node():
    """With a second node (ray.cluster_utils, in a process of its own) a split above
    scaling.driver_max_mb goes to Ray Data, which spreads it over the nodes; a small one stays here."""
    code = """
import ray
from ray.cluster_utils import Cluster
from dlmine_ray.infer import scores_in_driver
small = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
try:
    ray.init(address=c.address)
    one = scores_in_driver(2**40, 256.0)
    c.add_node(**small)
    c.wait_for_nodes()
    print(one, scores_in_driver(2**40, 256.0), scores_in_driver(2**20, 256.0))
finally:
    ray.shutdown()
    c.shutdown()
"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["True", "False", "True"], r.stdout + r.stderr[-2000:]
