"""Bad input: one clear line naming the problem, a non-zero exit, and no output left behind."""

import os
from pathlib import Path

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


#: (case, exit code, the line the user saw) of every case run; written as a Markdown table to the
#: file $DLMINE_BAD_INPUT_TABLE at the end of the module (the table in the issue's closing note)
_SEEN: list[tuple[str, int, str]] = []


@pytest.fixture(autouse=True, scope="module")
def _table_of_cases():
    yield
    where = os.environ.get("DLMINE_BAD_INPUT_TABLE")
    if where:
        rows = [f"| {case} | {code} | {line.replace('|', '/')} |" for case, code, line in _SEEN]
        Path(where).write_text("| case | exit code | the line the user sees |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def _seen(code: int, line: str) -> None:
    case = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    _SEEN.append((case, code, line))


def _assert_clean_failure(tmp_path, code, line, out, needle):
    _seen(code, line)
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
    _assert_clean_failure(tmp_path, code, line, out, "Expected 4 columns, got 6")
    assert "d.csv as CSV" in line and "retry" not in line


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


# --- one line for what used to end in a long traceback or Ray's retry advice; each case failed before

def _csv_rows(n: int = 60) -> list[str]:
    return ["row_id,a,b,label"] + [f"{i},{i * 0.1},{i % 3},{'yes' if i % 2 else 'no'}" for i in range(n)]


def _write(tmp_path, case: str) -> dict:
    """The files of one bad-input case; returns the job's data section."""
    d = tmp_path / "data"
    d.mkdir()
    if case == "empty_csv":
        (d / "d.csv").write_text("")
    elif case == "duplicate_csv_columns":
        (d / "d.csv").write_text("\n".join(r.replace("row_id,a,b", "row_id,a,a") if i == 0 else r
                                           for i, r in enumerate(_csv_rows())) + "\n")
    elif case == "csv_given_as_parquet":
        (d / "d.csv").write_text("\n".join(_csv_rows()) + "\n")
        return {"path": str(d / "d.csv"), "format": "parquet"}
    elif case == "one_id_per_split":
        df = make_frame(300)
        df["row_id"] = df["row_id"] % 4  # 4 ids for 300 rows: some split holds one id or none
        df.to_parquet(d / "d.parquet")
    return {"path": str(d)}


@pytest.mark.parametrize("case, needle", [
    ("empty_csv", "as CSV: an empty file"),
    ("duplicate_csv_columns", "the header names column(s) 'a' more than once"),
    ("csv_given_as_parquet", "is not a Parquet file"),
    ("one_id_per_split", "data.id 'row_id' repeats"),
])
def test_bad_files_fail_in_one_line(tmp_path, capsys, ray_local, case, needle):
    job = write_job(tmp_path / "job.yaml", data=_write(tmp_path, case), knowledge="off")
    code, line, out = _run(tmp_path, capsys, job)
    _assert_clean_failure(tmp_path, code, line, out, needle)
    assert "retry" not in line and "Traceback" not in capsys.readouterr().err


def test_repeated_ids_are_counted_per_split(tmp_path, capsys, ray_local):
    df = make_frame(300)
    df["row_id"] = df["row_id"] % 60  # 60 ids, 5 rows each
    df.to_parquet(tmp_path / "d.parquet")
    job = write_job(tmp_path / "job.yaml", data={"path": str(tmp_path / "d.parquet")}, knowledge="off")
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: data.id 'row_id' repeats" in err and "distinct ids" in err, err


def test_first_line_is_the_cause_not_rays_retry_advice():
    from dlmine_ray.errors import first_line

    text = ("ray.exceptions.RayTaskError(ArrowInvalid): ray::ReadKeyedTextFiles() (pid=1)\n"
            "  File \"x.py\", line 3, in read\n"
            "pyarrow.lib.ArrowInvalid: CSV parse error: Row #51: Expected 3 columns, got 5\n"
            "Failed to apply UDF transform after 1/1 attempts (total backoff 0.0s).\n"
            "To change retry attempts, backoff, or which errors are retried, configure it.")
    assert first_line(RuntimeError(text)) == "CSV parse error: Row #51: Expected 3 columns, got 5"
    assert first_line(ValueError("target column 'x' not found")) == "target column 'x' not found"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A real model folder from a tiny run (shared by the predict cases)."""
    from conftest import _ensure_ray

    _ensure_ray()
    root = tmp_path_factory.mktemp("model_run")
    make_frame(200).to_parquet(root / "d.parquet")
    job = write_job(root / "job.yaml", data={"path": str(root / "d.parquet")}, knowledge="off")
    assert main(["run", job, "--output", str(root / "run")]) == 0
    return root / "run" / "model"


def _edit(model, tmp_path, how: str):
    import json
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    if how == "not_json":
        (copy / "model.json").write_text('{"task": "classify", "broken')
    elif how == "other_shape":
        meta = json.loads((copy / "model.json").read_text())
        meta["model"]["hidden"] = [99]
        (copy / "model.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("case, code_expected, needle", [
    ("missing_column", 2, "lacks column(s) the model needs: b"),
    ("model_json_not_json", 2, "is not a model description"),
    ("model_json_edited", 2, "cannot load the model"),
])
def test_predict_fails_in_one_line_and_leaves_nothing(tmp_path, capsys, saved_model, case, code_expected, needle):
    data = make_frame(20)
    if case == "missing_column":
        data = data.drop(columns=["b"])
    data.to_parquet(tmp_path / "new.parquet")
    model = {"missing_column": saved_model, "model_json_not_json": None, "model_json_edited": None}[case]
    if model is None:
        model = _edit(saved_model, tmp_path, "not_json" if case == "model_json_not_json" else "other_shape")
    capsys.readouterr()
    out = tmp_path / "new_folder" / "p.parquet"
    code = main(["predict", "--model", str(model), "--data", str(tmp_path / "new.parquet"), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    _seen(code, err[-1] if err else "")
    assert code == code_expected and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "new_folder").exists(), "an empty output folder was left behind"


# --- the job itself: refused at the boundary, before Ray starts (one table)

SPEC_CASES = [
    ("negative_epochs", {"train": {"epochs": -1}}, [], "'train.epochs'"),
    ("zero_batch_size", {"train": {"batch_size": 0}}, [], "'train.batch_size'"),
    ("unknown_task", {"task": "forecast"}, [], "task"),
    ("task_not_a_name", {"task": [1, 2]}, [], "task"),
    ("split_sums_past_one", {"data": {"split": {"valid": 0.6, "test": 0.5}}}, [], "split"),
    ("dropout_above_one", {"model": {"dropout": 1.5}}, [], "'model.dropout'"),
    ("unknown_model_kind", {"model": {"kind": "transformer9"}}, [], "'model.kind'"),
    ("name_with_a_slash", {"name": "a/b"}, [], "slug"),
    ("name_climbing_out", {"name": "../../x"}, [], "slug"),
    ("zero_workers", {"scaling": {"num_workers": 0}}, [], "'scaling.num_workers'"),
    ("negative_max_failures", {"scaling": {"max_failures": -1}}, [], "'scaling.max_failures'"),
    ("tune_space_unknown_key", {"tune": {"num_samples": 2, "space": {"train.lrr": [0.1]}}}, [], "train.lrr"),
    ("tune_zero_samples", {"tune": {"num_samples": 0}}, [], "'tune.num_samples'"),
    ("filter_that_calls_code", {"task": "detect", "data": {"target": None, "normal_when": "__import__('os')"}}, [],
     "normal_when"),
    ("set_without_equals", {}, ["--set", "train.epochs"], "--set expects key=value"),
    ("set_unknown_field", {}, ["--set", "train.epochz=3"], "epochz"),
    ("set_wrong_type", {}, ["--set", "train.lr=fast"], "'train.lr'"),
    ("knowledge_base_unopenable", {"knowledge": "/proc/no/such/dir/kb.db"}, [], "knowledge base"),
]


@pytest.mark.parametrize("case, fields, extra, needle", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_a_bad_job_field_is_one_line(tmp_path, capsys, case, fields, extra, needle):
    make_frame(50).to_parquet(tmp_path / "d.parquet")
    fields = {**fields, "data": {"path": str(tmp_path / "d.parquet"), **fields.get("data", {})}}
    job = write_job(tmp_path / "job.yaml", **{"knowledge": "off", **fields})
    code, line, out = _run(tmp_path, capsys, job, extra)
    _assert_clean_failure(tmp_path, code, line, out, needle)
