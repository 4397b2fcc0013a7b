"""Shared fixtures: a real local Ray (2 CPUs, small object store) and small real datasets."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# every run records itself in the knowledge base: never the user's (~/.dlmine) from a test
import tempfile  # noqa: E402

os.environ["DLMINE_KNOWLEDGE"] = os.path.join(tempfile.mkdtemp(prefix="dlmine_test_kb_"), "knowledge.db")

import numpy as np
import pandas as pd
import pytest

_session = {}


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        from dlmine_ray.runtime.session import ray_session

        cm = ray_session(num_cpus=2, object_store_mb=512)
        cm.__enter__()
        _session["cm"] = cm
    return ray


@pytest.fixture(autouse=True)
def knowledge_of_its_own(tmp_path, monkeypatch):
    """Each test's runs go to a knowledge base of its own, so that no test warm-starts from another's."""
    monkeypatch.setenv("DLMINE_KNOWLEDGE", str(tmp_path / "knowledge.db"))


@pytest.fixture
def ray_local():
    """A running local Ray with 2 CPUs (started once, reused; restarted if a test stopped it)."""
    return _ensure_ray()


def pytest_sessionfinish(session, exitstatus):
    cm = _session.pop("cm", None)
    if cm is not None:
        try:
            cm.__exit__(None, None, None)
        except Exception:
            pass


def make_frame(rows: int = 300, seed: int = 0, kind: str = "classify") -> pd.DataFrame:
    """A small learnable table: 4 numeric columns (one with missing values), one categorical."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    cat = rng.choice(["red", "green", "blue"], size=rows)
    signal = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + (cat == "red") * 1.0
    df = pd.DataFrame({"row_id": np.arange(rows), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3],
                       "color": cat})
    df.loc[rng.random(rows) < 0.05, "d"] = np.nan
    if kind == "classify":
        df["label"] = np.where(signal > 0, "yes", "no")
    else:
        df["target"] = 3.0 * signal + rng.normal(0, 0.1, rows)
    return df


@pytest.fixture
def table_dir(tmp_path):
    """A folder with a classification table in 3 Parquet shards."""
    df = make_frame(300)
    d = tmp_path / "table"
    d.mkdir()
    for i, start in enumerate(range(0, len(df), 100)):
        part = df.iloc[start:start + 100]
        part.to_parquet(d / f"part-{i}.parquet", index=False)
    return d


def write_job(path, **fields) -> str:
    """Write a job YAML with small, fast defaults, overridden by ``fields``."""
    import yaml

    job = {"name": "t", "task": "classify",
           "data": {"path": "", "target": "label", "id": "row_id"},
           "model": {"hidden": [16]}, "train": {"epochs": 2, "batch_size": 64}, "compare_baselines": False}
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(job.get(k), dict):
            job[k] = {**job[k], **v}
        else:
            job[k] = v
    path.write_text(yaml.safe_dump(job))
    return str(path)
