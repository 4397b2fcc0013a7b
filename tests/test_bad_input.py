"""Bad input: one clear line naming the problem, a non-zero exit, and no output left behind."""

import numpy as np
import pandas as pd
import pytest

from conftest import make_frame, write_job
from dlmine_ray.cli import main


def _run(tmp_path, capsys, job, extra=()):
    out = tmp_path / "out"
    code = main(["run", job, "--output", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else "", out


def _assert_clean_failure(tmp_path, code, line, out, needle):
    assert code == 2, line
    assert line.startswith("error: ") and needle in line, line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")], "staging folder left behind"


def test_not_yaml(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("name: [unclosed\n")
    code, line, out = _run(tmp_path, capsys, str(job))
    _assert_clean_failure(tmp_path, code, line, out, "not valid YAML")


def test_unknown_field(tmp_path, capsys):
    job = write_job(tmp_path / "job.yaml", data={"path": "x.parquet"}, trainn={"epochs": 1})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "'trainn': unknown field")


def test_mistyped_field(tmp_path, capsys):
    job = write_job(tmp_path / "job.yaml", data={"path": "x.parquet"}, train={"epochs": "ten"})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "'train.epochs'")


def test_path_matches_nothing(tmp_path, capsys, ray_local):
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "none" / "*.parquet")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "matches no files")


def test_missing_target(tmp_path, capsys, ray_local, table_dir):
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir), "target": "lable"})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "target column 'lable' not found")


def test_target_with_one_class(tmp_path, capsys, ray_local):
    df = make_frame(100)
    df["label"] = "yes"
    df.to_parquet(tmp_path / "d.parquet")
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.parquet")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "only one class")


def test_empty_dataset(tmp_path, capsys, ray_local):
    make_frame(10).iloc[:0].to_parquet(tmp_path / "d.parquet")
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.parquet")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "empty")


def test_non_numeric_value_in_numeric_column(tmp_path, capsys, ray_local):
    df = make_frame(200)
    df["a"] = df["a"].map(lambda v: f"{v:.4f}")
    df.loc[17, "a"] = "abc"
    df.to_csv(tmp_path / "d.csv", index=False)
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.csv")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "column 'a' is numeric but holds non-numeric value 'abc'")


@pytest.mark.parametrize("bad, needle", [(np.nan, "missing"), (np.inf, "infinite")])
def test_nan_or_infinite_target(tmp_path, capsys, ray_local, bad, needle):
    df = make_frame(200, kind="regress")
    df.loc[5, "target"] = bad
    df.to_parquet(tmp_path / "d.parquet")
    job = write_job(tmp_path / "job.yaml", task="regress", data={"path": str(tmp_path / "d.parquet"),
                                                                  "target": "target"})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, needle)


def test_fewer_rows_than_the_split_needs(tmp_path, capsys, ray_local):
    make_frame(3).to_parquet(tmp_path / "d.parquet")
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.parquet")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "too few rows")


def test_output_folder_with_another_run_is_refused(tmp_path, capsys, ray_local, table_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"task": "classify", "accuracy": 0.5}')
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)})
    code = main(["run", job, "--output", str(out)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "already holds a run" in line and "--overwrite" in line
    assert (out / "metrics.json").read_text() == '{"task": "classify", "accuracy": 0.5}'


def test_unrelated_non_empty_folder_is_refused(tmp_path, capsys, table_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)})
    assert main(["run", job, "--output", str(out), "--overwrite"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_malformed_csv_row(tmp_path, capsys, ray_local):
    lines = ["row_id,a,b,label"] + [f"{i},{i * 0.1},{i % 3},{'yes' if i % 2 else 'no'}" for i in range(50)]
    lines.insert(20, "999,1.0,2.0,yes,EXTRA,FIELDS")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.csv")})
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, "cannot read data")


def test_predict_with_missing_column(tmp_path, capsys, ray_local):
    # a model folder needs nothing but its metadata for this check to run
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text('{"input_columns": ["a", "b"], "id": null, "target": "label"}')
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "new.parquet")
    code = main(["predict", "--model", str(model), "--data", str(tmp_path / "new.parquet"),
                 "--output", str(tmp_path / "p.parquet")])
    assert code == 2 and "lacks column(s) the model needs: b" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("address, needle", [
    ("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1: connection refused"),
    ("ray://127.0.0.1:1", "cannot reach a Ray cluster at ray://127.0.0.1:1"),
    ("nonsense", "cluster address 'nonsense' is not HOST:PORT"),
])
def test_an_address_where_no_cluster_listens_fails_at_once(tmp_path, table_dir, address, needle):
    """Ray itself retries an unreachable GCS for minutes; a fresh process (not the tests' Ray),
    stopped after 120 s if it hangs."""
    import os
    import subprocess
    import sys

    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "run", job, "--address", address,
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
