"""A small job runs in the driver without Ray (``scaling.driver_max_mb``) and writes what the same
job run through Ray writes: the same splits, the same predictions, the same metrics. Each job
below runs both ways; ``scaling.driver_max_mb: 0`` forces Ray."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_frame, write_job
from dlmine_ray.cli import main
from dlmine_ray.data.keys import ROW_KEY
from test_unsupervised import blobs, outliers

CLASSIFY = {"data": {"target": "label", "id": "row_id"}}
CLUSTER = {"task": "cluster", "data": {"target": None, "labels": "group", "id": "row_id"},
           "model": {"hidden": [16], "latent": 2}, "cluster": {"k": 4},
           "train": {"epochs": 4, "batch_size": 64}, "compare_baselines": True}
# a row filter (train_mask) and the baseline: detect trains on the rows marked normal only
DETECT = {"task": "detect", "data": {"target": None, "labels": "is_outlier", "id": "row_id",
                                     "normal_when": "is_outlier == 0"},
          "model": {"hidden": [16, 8], "latent": 3}, "detect": {"contamination": 0.03},
          "train": {"epochs": 4, "batch_size": 32}, "compare_baselines": True}
REGRESS_CSV = {"task": "regress", "data": {"target": "target", "id": "row_id"}, "compare_baselines": True}

CASES = {
    "classify": (lambda: make_frame(300), "parquet", CLASSIFY),
    # mined columns added to every encoded row (a map over the encoded rows) and their paired gain
    "classify_augment": (lambda: make_frame(300), "parquet",
                         {**CLASSIFY, "augment": ["clusters", "anomaly"], "augment_models": "classic",
                          "augment_gain": 1}),
    "regress_csv": (lambda: make_frame(300, kind="regress"), "csv", REGRESS_CSV),
    "cluster": (lambda: blobs(240), "parquet", CLUSTER),
    "detect_filtered": (lambda: outliers(240), "parquet", DETECT),
}
#: the metrics that say how a job ran, not what it found
HOW = {"trainer", "train_seconds", "total_seconds", "baseline_seconds", "explain_seconds"}


def _run(tmp_path: Path, name: str, job: str, *extra: str) -> tuple[dict, pd.DataFrame]:
    out = tmp_path / name
    assert main(["run", job, "--output", str(out), *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    table = next(p for p in out.iterdir() if p.suffix == ".parquet" and p.stem != "features")
    return metrics, pd.read_parquet(table)


@pytest.mark.parametrize("case", list(CASES))
def test_a_small_job_in_the_driver_writes_what_the_ray_run_writes(tmp_path, ray_local, case):
    make, fmt, fields = CASES[case]
    df = make()
    path = tmp_path / f"rows.{fmt}"
    df.to_parquet(path, index=False) if fmt == "parquet" else df.to_csv(path, index=False)
    job = write_job(tmp_path / "job.yaml", **{**fields, "data": {**fields["data"], "path": str(path)}})
    here, rows_here = _run(tmp_path, "driver", job)
    ray_, rows_ray = _run(tmp_path, "ray", job, "--set", "scaling.driver_max_mb=0")
    assert here["trainer"] == "driver" and ray_["trainer"] == "task"
    assert set(here) == set(ray_)
    for k in set(here) - HOW:  # the same splits (row counts) and, to float rounding, the same model
        a, b = here[k], ray_[k]
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            assert a == pytest.approx(b, rel=1e-3, abs=1e-4), k
        elif k.endswith("_ci"):  # the bootstrap intervals: the same rows, in the same order, the same draws
            assert a == pytest.approx(b, rel=1e-3, abs=1e-4), k
    assert any(k.endswith("_ci") for k in here)
    key = "row_id"
    rows_here, rows_ray = (t.sort_values(key).reset_index(drop=True) for t in (rows_here, rows_ray))
    assert list(rows_here[key]) == list(rows_ray[key])  # the same rows scored
    for c in rows_here.columns:
        if pd.api.types.is_float_dtype(rows_here[c]):
            np.testing.assert_allclose(rows_here[c], rows_ray[c], rtol=1e-3, atol=1e-4, err_msg=c)


def test_the_rows_of_a_local_read_carry_the_keys_a_ray_read_gives(tmp_path, ray_local):
    """The split of a row comes from its key (its file and position): the driver's read must give
    every row the key Ray's read gives it, for Parquet in several files and row groups, and CSV."""
    from dlmine_ray.data.local import read_local
    from dlmine_ray.data.read import read_dataset

    df = make_frame(3000)
    (tmp_path / "pq").mkdir()
    for i in range(3):
        df.iloc[i * 1000:(i + 1) * 1000].to_parquet(tmp_path / "pq" / f"part-{i}.parquet", index=False,
                                                    row_group_size=300)
    df.to_csv(tmp_path / "rows.csv", index=False)
    for path in (str(tmp_path / "pq"), str(tmp_path / "rows.csv"), "builtin:digits"):
        here = read_local(path, row_key=True)
        keys_here = dict(zip(here.column(ROW_KEY).tolist(), range(here.count())))
        theirs = read_dataset(path, row_key=True).to_pandas()
        assert here.count() == len(theirs) and len(keys_here) == len(theirs), path
        assert set(keys_here) == set(theirs[ROW_KEY].astype(np.uint64).tolist()), path


def test_a_small_job_starts_no_ray_and_a_large_or_tuned_one_does(tmp_path):
    """In a fresh process: the small job leaves no Ray session behind in RAY_TMPDIR, the same job
    with scaling.driver_max_mb: 0 does."""
    make_frame(200).to_parquet(tmp_path / "rows.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "rows.parquet")}, train={"epochs": 1},
                    knowledge="off", explain={"enabled": False})
    code = "import sys; from dlmine_ray.cli import main; sys.exit(main(sys.argv[1:]))"
    seen = {}
    for name, extra in (("driver", []), ("ray", ["--set", "scaling.driver_max_mb=0"])):
        ray_tmp = tempfile.mkdtemp(prefix="rt")
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        r = subprocess.run([sys.executable, "-c", code, "run", job, "--output", str(tmp_path / name), *extra],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        seen[name] = (Path(ray_tmp) / "ray").is_dir(), r.stderr
    assert seen["driver"][0] is False and "runs in this process without Ray" in seen["driver"][1]
    assert seen["ray"][0] is True and "without Ray" not in seen["ray"][1]


def test_which_jobs_run_in_the_driver(tmp_path):
    from dlmine_ray.app.jobfile import coerce_spec
    from dlmine_ray.pipelines import driver_reason
    from dlmine_ray.tasks import get_task

    make_frame(100).to_parquet(tmp_path / "rows.parquet", index=False)
    base = {"name": "t", "task": "classify", "data": {"path": str(tmp_path / "rows.parquet"), "target": "label"}}

    def reason(**over):
        job = {**base, **over}
        spec = coerce_spec(job, None)
        return driver_reason(spec, get_task(spec.task))

    assert "without Ray" in reason()
    assert reason(scaling={"driver_max_mb": 0}) is None
    assert reason(scaling={"driver_max_mb": 0.001}) is None  # the file is larger than 1 KiB
    assert reason(scaling={"trainer": "task"}) is None
    assert reason(scaling={"num_workers": 2}) is None
    assert reason(tune={"num_samples": 2}) is None
    assert "without Ray" in reason(data={"path": "builtin:digits", "target": "label"})


def _baskets_long_and_table(tmp_path) -> dict:
    """The three input shapes of transactions, small: baskets (a list column), long (one row per
    transaction and item) and a categorical table."""
    rng = np.random.default_rng(0)
    baskets = [sorted(set(rng.choice([f"i{k}" for k in range(12)], rng.integers(1, 6)).tolist()) | (
        {"a", "b"} if i % 3 == 0 else set())) for i in range(400)]
    pd.DataFrame({"basket_id": range(400), "items": baskets}).to_parquet(tmp_path / "baskets.parquet", index=False)
    long = pd.DataFrame([(i, item) for i, b in enumerate(baskets) for item in b], columns=["tx", "item"])
    long.to_csv(tmp_path / "long.csv", index=False)
    table = pd.DataFrame({"colour": rng.choice(["red", "blue", None], 400), "size": rng.choice(["s", "m", "l"], 400),
                          "kind": np.where(np.arange(400) % 4 == 0, "x", "y")})
    table.to_parquet(tmp_path / "table.parquet", index=False)
    return {"baskets": {"path": str(tmp_path / "baskets.parquet"), "items": "items", "id": "basket_id"},
            "long": {"path": str(tmp_path / "long.csv"), "transaction": "tx", "items": "item"},
            "table": {"path": str(tmp_path / "table.parquet")}}


@pytest.mark.parametrize("shape", ["baskets", "long", "table"])
def test_exact_rules_of_small_input_are_mined_in_the_driver_as_through_ray(tmp_path, ray_local, shape):
    data = _baskets_long_and_table(tmp_path)[shape]
    job = write_job(tmp_path / "job.yaml", task="rules", data={"id": None, **data, "target": None},
                    rules={"min_support": 0.05, "min_confidence": 0.3})
    outs = {}
    for name, extra in (("driver", []), ("ray", ["--set", "scaling.driver_max_mb=0"])):
        assert main(["run", job, "--output", str(tmp_path / name), *extra]) == 0
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        key = lambda t: t.assign(**{c: t[c].map(lambda v: tuple(sorted(v))) for c in t.columns  # noqa: E731
                                    if t[c].dtype == object}).sort_values(list(t.columns)).reset_index(drop=True)
        outs[name] = (m, key(pd.read_parquet(tmp_path / name / "itemsets.parquet")),
                      key(pd.read_parquet(tmp_path / name / "rules.parquet")))
    (m_here, sets_here, rules_here), (m_ray, sets_ray, rules_ray) = outs["driver"], outs["ray"]
    assert m_here["mined_in"] == "driver" and m_ray["mined_in"] == "ray"
    for k in ("n_transactions", "n_items", "n_frequent_items", "n_itemsets", "n_rules", "min_count"):
        assert m_here[k] == m_ray[k], k
    assert m_here["n_itemsets"] > 5 and m_here["n_rules"] > 0
    pd.testing.assert_frame_equal(sets_here, sets_ray)
    pd.testing.assert_frame_equal(rules_here, rules_ray)


def test_the_neural_miner_goes_through_ray(tmp_path):
    from dlmine_ray.app.jobfile import coerce_spec
    from dlmine_ray.pipelines import driver_reason
    from dlmine_ray.tasks import get_task

    for miner, expected in (("exact", True), ("neural", False), ("both", False)):
        spec = coerce_spec({"name": "t", "task": "rules", "data": {"path": "builtin:baskets", "target": None,
                                                                   "items": "items"},
                            "rules": {"miner": miner}}, None)
        assert (driver_reason(spec, get_task("rules")) is not None) is expected, miner
