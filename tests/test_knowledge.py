"""The knowledge base of past runs (SQLite and a real PostgreSQL server), the meta-features it
stores, warm starts from it, and tuning without a search space."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_frame, write_job
from dlmine_ray.cli import main
from dlmine_ray.errors import DlmineError
from dlmine_ray.tune.knowledge import KnowledgeBase
from dlmine_ray.tune.metafeatures import SAMPLE_COLUMNS, SAMPLE_ROWS, sample_features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server on loopback: the one .ci/run started, else one started here."""
    url = os.environ.get("DLMINE_TEST_POSTGRES")
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="dlmine_pg_")  # in /tmp: the server's user must reach it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = subprocess.run([str(REPO / ".ci" / "postgres.sh"), "start", str(folder), str(port)], check=True,
                         capture_output=True, text=True).stdout.strip()
    yield url
    subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


def _fresh_postgres(url: str, name: str) -> str:
    """A database of its own on the server (each test starts empty)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _run(i: int) -> dict:
    return {"task": "classify", "name": f"job{i}", "job": {"train": {"lr": 0.001 * (i + 1)}},
            "metrics": {"accuracy": 0.5 + i / 1000, "roc_auc": float("nan")}, "selection_metric": "val_loss",
            "selection_mode": "min", "selection_value": 1.0 / (i + 1), "seconds": 1.5}


def _dataset(fp: str, **meta) -> dict:
    return {"fingerprint": fp, "name": fp, "n_rows": 100, "n_columns": 3, "schema": {"a": ["number"]},
            "sketch": "x", "meta_features": {"n_rows": 100.0, **meta}}


def _round_trip(url: str) -> None:
    kb = KnowledgeBase(url)
    trials = [{"trial": f"t{j}", "status": "completed", "params": {"train.lr": 0.01 * j, "model.hidden": [64]},
               "value": 0.3 + j, "epochs": 3, "seconds": 0.5} for j in range(3)]
    run_id = kb.record(_run(0), _dataset("fp0", skew_mean=1.5), trials)
    kb.record(_run(1), _dataset("fp0", skew_mean=1.5))  # the same dataset again: one dataset row
    again = KnowledgeBase(url)  # a second connection reads what the first wrote
    runs = again.runs()
    assert len(runs) == 2 and set(runs["name"]) == {"job0", "job1"}
    first = runs.set_index("run_id").loc[run_id]
    assert first["metrics"]["accuracy"] == 0.5 and first["metrics"]["roc_auc"] is None  # NaN stored as null
    assert first["job"] == {"train": {"lr": 0.001}} and first["versions"]["python"]
    ds = again.datasets()
    assert len(ds) == 1 and ds.loc[0, "meta_features"]["skew_mean"] == 1.5
    tr = again.trials("classify")
    assert len(tr) == 3 and tr["params"].iloc[0]["model.hidden"] == [64]
    assert list(again.runs(dataset="fp0")["name"]) == ["job1", "job0"]  # newest first
    assert again.runs(task="regress").empty


def test_sqlite_round_trip(tmp_path):
    _round_trip(f"sqlite:///{tmp_path / 'kb.db'}")


def test_postgres_round_trip(postgres_url):
    _round_trip(_fresh_postgres(postgres_url, "dlmine_round_trip"))


def _writer(url: str, worker: int, n: int) -> None:
    kb = KnowledgeBase(url)
    for i in range(n):
        kb.record({**_run(i), "name": f"w{worker}-{i}"}, _dataset(f"fp{i % 3}"),
                  [{"trial": f"t{j}", "params": {"train.lr": j}, "value": j} for j in range(2)])


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_concurrent_writers_lose_nothing(store, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'kb.db'}" if store == "sqlite" else \
        _fresh_postgres(request.getfixturevalue("postgres_url"), "dlmine_concurrent")
    KnowledgeBase(url)  # the tables exist before the race
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    kb = KnowledgeBase(url)
    runs = kb.runs()
    assert len(runs) == 80 and runs["name"].nunique() == 80
    assert len(kb.trials("classify")) == 160 and len(kb.datasets()) == 3


def test_meta_features_are_deterministic_and_bounded_on_a_wide_table():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 400)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    a = sample_features(x, y, "categorical", seed=0)
    b = sample_features(x, y, "categorical", seed=0)
    assert a == b
    assert a["sample_rows"] == SAMPLE_ROWS and a["sample_columns"] == SAMPLE_COLUMNS
    for key in ("skew_mean", "kurtosis_mean", "corr_abs_mean", "pca_dim_95", "mutual_info_max",
                "landmark_stump", "landmark_naive_bayes", "landmark_nn1", "landmark_linear"):
        assert np.isfinite(a[key]), key


def _table(tmp_path, name="rows.parquet", seed=0, rows=300):
    make_frame(rows, seed=seed).to_parquet(tmp_path / name, index=False)
    return str(tmp_path / name)


def test_every_run_is_recorded_with_its_dataset(tmp_path, ray_local, capsys):
    kb_path = tmp_path / "kb.db"
    data = _table(tmp_path)
    job = write_job(tmp_path / "job.yaml", data={"path": data}, knowledge=str(kb_path))
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    bad = write_job(tmp_path / "bad.yaml", data={"path": data, "target": "nope"}, knowledge=str(kb_path))
    assert main(["run", bad, "--output", str(tmp_path / "out2")]) == 2
    kb = KnowledgeBase(f"sqlite:///{kb_path}")
    runs = kb.runs()
    assert list(runs["status"]) == ["failed", "completed"]
    done = runs.iloc[1]
    assert done["metrics"]["task"] == "classify" and done["selection_metric"] == "val_loss"
    assert done["selection_value"] > 0 and done["output"] == str(tmp_path / "out")
    assert "target column 'nope' not found" in runs.iloc[0]["error"]
    meta = kb.datasets().set_index("fingerprint").loc[done["fingerprint"], "meta_features"]
    assert meta["n_rows"] == 300 and meta["n_classes"] == 2 and "landmark_linear" in meta
    # the same files, run again, are the same dataset
    assert main(["run", job, "--output", str(tmp_path / "out3")]) == 0
    assert len(kb.datasets()) == 1 and kb.runs()["fingerprint"].iloc[0] == done["fingerprint"]
    assert list(kb.runs()["n_trials"].fillna(0)) == [1, 0, 1]  # an untuned run is one trial; a failed one has none
    capsys.readouterr()
    assert main(["history", "--knowledge", str(kb_path), "--export", str(tmp_path / "runs.parquet")]) == 0
    out = capsys.readouterr().out
    assert "3 run(s)" in out and "failed" in out and "val_loss=" in out
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == 3


@pytest.mark.parametrize("case", ["corrupt_file", "unreachable_server", "folder"])
def test_a_knowledge_base_that_cannot_be_opened_stops_the_run_cleanly(case, tmp_path, capsys):
    if case == "corrupt_file":
        where = tmp_path / "kb.db"
        where.write_bytes(b"this is not a database, but somebody's file" * 100)
    elif case == "folder":
        where = tmp_path / "kb_folder"
        where.mkdir()
    else:
        where = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    before = where.read_bytes() if case == "corrupt_file" else None
    job = write_job(tmp_path / "job.yaml", data={"path": _table(tmp_path)}, knowledge=str(where))
    out = tmp_path / "out"
    assert main(["run", job, "--output", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: knowledge base") and ("cannot be opened" in line or "folder" in line), line
    assert "secret" not in line  # a password is never printed
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    if before is not None:
        assert where.read_bytes() == before  # nothing in it was changed


def _plant(kb_path: Path, own_fp: str, own_meta: dict) -> None:
    """A knowledge base whose past runs say: on this very dataset lr 0.0042 won; on a dataset that
    looks the same ('twin'), lr 0.00123 with one layer of 64; on a far one, lr 0.0099."""
    kb = KnowledgeBase(f"sqlite:///{kb_path}")
    far_meta = {k: v * 50 + 7 for k, v in own_meta.items()}

    def run(fp, meta, params, value, name):
        kb.record({"task": "classify", "name": name, "selection_metric": "val_loss", "selection_mode": "min",
                   "selection_value": value},
                  {**_dataset(fp), "name": name, "meta_features": meta},
                  [{"trial": "best", "params": params, "value": value},
                   {"trial": "worse", "params": {"train.lr": 0.0001}, "value": value + 1}])

    run(own_fp, own_meta, {"train.lr": 0.0042}, 0.2, "itself")
    run("twin", dict(own_meta), {"train.lr": 0.00123, "model.hidden": [64]}, 0.1, "twin")
    run("far", far_meta, {"train.lr": 0.0099, "model.hidden": [256, 128]}, 0.05, "far")


def test_warm_start_tries_the_past_best_settings_first(tmp_path, ray_local, capsys):
    data = _table(tmp_path)
    # the dataset's own fingerprint and meta-features, as a run records them
    probe = tmp_path / "probe.db"
    job = write_job(tmp_path / "probe.yaml", data={"path": data}, knowledge=str(probe))
    assert main(["run", job, "--output", str(tmp_path / "probe")]) == 0
    seen = KnowledgeBase(f"sqlite:///{probe}").datasets().iloc[0]
    kb_path = tmp_path / "kb.db"
    _plant(kb_path, seen["fingerprint"], seen["meta_features"])
    # tune without a space: the task's default; 4 trials, of which the first 2 come from the knowledge base
    job = write_job(tmp_path / "job.yaml", data={"path": data}, knowledge=str(kb_path), compare_baselines=True,
                    tune={"num_samples": 4, "scheduler": "fifo"}, train={"epochs": 2, "batch_size": 64})
    capsys.readouterr()
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "1 setting(s) from this dataset's own past runs" in err and "twin (distance 0.00)" in err
    board = pd.read_parquet(tmp_path / "out" / "leaderboard.parquet")
    deep = board[board["status"] != "baseline"]
    assert len(deep) == 4
    lrs = set(np.round(deep["train.lr"].astype(float), 6))
    assert {0.0042, 0.00123} <= lrs and 0.0099 not in lrs  # the own and the nearest, not the far one
    twin = deep[np.isclose(deep["train.lr"].astype(float), 0.00123)].iloc[0]
    assert json.loads(twin["model.hidden"]) == [64]
    # the default space was searched, and the baseline is a row of the leaderboard
    assert {"model.kind", "model.dropout", "train.batch_size", "train.weight_decay"} <= set(board.columns)
    base = board[board["status"] == "baseline"]
    assert len(base) == 1 and base["trial"].iloc[0] == "baseline (HGB)" and np.isfinite(base["val_loss"].iloc[0])
    assert board["rank"].dropna().astype(int).tolist() == [1, 2, 3, 4]
    # the tuned run and its four trials are in the knowledge base now
    kb = KnowledgeBase(f"sqlite:///{kb_path}")
    assert len(kb.trials("classify", [seen["fingerprint"]])) == 2 + 4


def test_tune_without_space_regress_and_time_budget(tmp_path, ray_local, capsys):
    df = make_frame(200, kind="regress")
    df.to_parquet(tmp_path / "reg.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", task="regress",
                    data={"path": str(tmp_path / "reg.parquet"), "target": "target"},
                    tune={"num_samples": 100_000, "time_budget_s": 15, "scheduler": "fifo"},
                    train={"epochs": 1, "batch_size": 64})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    board = pd.read_parquet(tmp_path / "out" / "leaderboard.parquet")
    # a trial takes 0.1-1 s here: 100,000 of them cannot end in 15 s, so only the budget stops it
    assert 1 <= len(board) < 100_000
    assert "trials never started: tune.time_budget_s (15s) ended the search" in capsys.readouterr().err
    assert "model.kind" in board.columns
    assert yaml.safe_load((tmp_path / "out" / "job.yaml").read_text())["tune"] is None


def test_a_time_budget_too_small_for_any_trial_is_one_line(tmp_path, ray_local, capsys):
    make_frame(200, kind="regress").to_parquet(tmp_path / "reg.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", task="regress", data={"path": str(tmp_path / "reg.parquet"),
                                                                 "target": "target"},
                    tune={"num_samples": 4, "time_budget_s": 0.01, "scheduler": "fifo"})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tune.time_budget_s (0.01s) ended the search before any trial finished an epoch" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("doc, needle", [
    ({"task": "classify", "tune": {"space": {"train.nope": [1, 2]}}}, "not a job field"),
    ({"task": "rules", "tune": {"num_samples": 4}}, "not supported for task rules"),
    ({"task": "cluster", "tune": {"metric": "val_loss"}}, "not a label-free fit criterion of task cluster"),
    ({"task": "classify", "tune": {"time_budget_s": 0}}, "'tune.time_budget_s'"),
])
def test_bad_tune_input_is_one_line(doc, needle):
    from dlmine_ray.spec import spec_from_dict

    with pytest.raises(DlmineError) as ei:
        spec_from_dict(doc)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def _first_opener(url: str, worker: int, barrier) -> None:
    barrier.wait(60)  # every process opens the fresh store at the same moment
    KnowledgeBase(url).record({**_run(worker), "name": f"first-{worker}"}, _dataset("fp0"))


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_runs_that_create_the_store_at_once_all_open_it(store, tmp_path, request):
    """Several runs that start together on a store nobody created yet (three jobs submitted at once
    with a new knowledge: path) each create its tables; none may fail with 'table already exists'."""
    ctx = mp.get_context("spawn")
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'kb{round_}.db'}" if store == "sqlite" else \
            _fresh_postgres(request.getfixturevalue("postgres_url"), f"dlmine_first_open{round_}")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_first_opener, args=(url, w, barrier)) for w in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 6, f"round {round_}"
        kb = KnowledgeBase(url)
        assert len(kb.runs()) == 6 and len(kb.datasets()) == 1
        assert kb.engine.dialect.name == ("sqlite" if store == "sqlite" else "postgresql")
