"""Bad input: one clear line naming the problem, a non-zero exit, and no output left behind.

One table (CASES): each row is a case name, how to build its input (files, job fields, the
command line), the exit code expected (2: the user's input; 1: a failure of ours) and a fragment
that the single ``error:`` line must contain. Every case checks that the command left no output
and no staging folder (``.out.tmp-*``), or, where the output existed before, that it is unchanged.
The cases that read data share the session's Ray (``ray_local``); the job-field cases need none.

Run with ``-s`` to see the table of (case, exit code, the line the user sees); with
``DLMINE_BAD_INPUT_TABLE=FILE`` it is also written to FILE as Markdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import make_frame, write_job
from dlmine_ray.cli import main


class Where:
    """One case's folder: the files it writes there, its job file, and the output path it gives
    the command (``out``); ``model()`` is a copy of a real model folder for ``dlmine predict``."""

    def __init__(self, tmp: Path, request):
        self.tmp, self.request, self.out = tmp, request, tmp / "out"

    def file(self, name: str, content) -> str:
        p = self.tmp / "data" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        return str(p)

    def parquet(self, df, name: str = "d.parquet") -> str:
        p = self.tmp / "data" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(p, index=False)
        return str(p)

    def run(self, *extra: str, **fields) -> list[str]:
        """``dlmine run`` of a small job (conftest's defaults, the knowledge base off); a data
        section without a path reads 50 good rows."""
        data = dict(fields.pop("data", {}))
        if "path" not in data:
            data["path"] = self.parquet(make_frame(50), "default.parquet")
        job = write_job(self.tmp / "job.yaml", **{"knowledge": "off", **fields, "data": data})
        return ["run", job, "--output", str(self.out), *extra]

    def model(self, edit: Callable[[Path], None] = None) -> str:
        """The shared model folder (a real tiny run), or a copy of it changed by ``edit``."""
        model = self.request.getfixturevalue("saved_model")
        if edit is None:
            return str(model)
        copy = self.tmp / "model"
        shutil.copytree(model, copy)
        edit(copy)
        return str(copy)

    def predict(self, data: str, model: str = None) -> list[str]:
        self.out = self.tmp / "new_folder" / "p.parquet"  # a folder the command must not leave
        return ["predict", "--model", model or self.model(), "--data", data, "--output", str(self.out)]


@dataclass(frozen=True)
class Case:
    """One bad input: ``build`` writes its files and returns the command line (without ``dlmine``)."""

    name: str
    build: Callable[[Where], list[str]]
    code: int
    needle: str
    ray: bool = True           # reads data: uses the session's Ray
    fresh: bool = False        # runs in a fresh process (its own Ray, or none)


# --- builders -------------------------------------------------------------------------------------

def _frame(rows: int = 100, kind: str = "classify", **cols):
    df = make_frame(rows, kind=kind)
    for c, v in cols.items():
        df[c] = v(df) if callable(v) else v
    return df


def _set(df, row: int, col: str, value):
    df = df.copy()
    df[col] = df[col].astype(object) if isinstance(value, str) else df[col]
    df.loc[row, col] = value
    return df


def _csv_rows(n: int = 60) -> list[str]:
    return ["row_id,a,b,label"] + [f"{i},{i * 0.1},{i % 3},{'yes' if i % 2 else 'no'}" for i in range(n)]


def _ragged_csv(w: Where) -> list[str]:
    lines = _csv_rows(50)
    lines.insert(20, "999,1.0,2.0,yes,EXTRA,FIELDS")
    return w.run(data={"path": w.file("d.csv", "\n".join(lines) + "\n")})


def _duplicate_header(w: Where) -> list[str]:
    rows = _csv_rows()
    rows[0] = "row_id,a,a,label"
    return w.run(data={"path": w.file("d.csv", "\n".join(rows) + "\n")})


def _shards(w: Where, col: str, change, ext: str = "parquet") -> list[str]:
    """Two shards of one table; in the second, ``col`` holds another type (``change``)."""
    df = make_frame(200)
    a, b = df.iloc[:100].copy(), df.iloc[100:].copy()
    b[col] = change(b[col])
    for i, part in enumerate((a, b)):
        p = w.tmp / "data" / f"part-{i}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(p, index=False) if ext == "parquet" else part.to_csv(p, index=False)
    return w.run(data={"path": str(w.tmp / "data")})


def _ids(w: Where, n_ids: int) -> list[str]:
    return w.run(data={"path": w.parquet(_frame(300, row_id=lambda d: d["row_id"] % n_ids))})


def _another_run_in_output(w: Where) -> list[str]:
    w.out.mkdir()
    (w.out / "metrics.json").write_text('{"task": "classify", "accuracy": 0.5}')
    return w.run()


def _unrelated_output(w: Where) -> list[str]:
    w.out.mkdir()
    (w.out / "notes.txt").write_text("mine")
    return w.run("--overwrite")


def _edit_meta(change: Callable[[dict], object]):
    """An edit of a model folder: ``change`` alters model.json's dict in place."""
    def edit(model: Path) -> None:
        meta = json.loads((model / "model.json").read_text())
        change(meta)
        (model / "model.json").write_text(json.dumps(meta))
    return edit


def _predict_mixed_ids(w: Where) -> list[str]:
    df = make_frame(20)
    w.parquet(df.iloc[:10], "new/a.parquet")
    w.parquet(df.iloc[10:].assign(row_id=lambda d: d["row_id"].map(lambda v: f"r{v}")), "new/b.parquet")
    return w.predict(str(w.tmp / "data" / "new"))


def _address(address: str):
    return lambda w: w.run("--address", address)


def _spec(**fields):
    """A job refused at the boundary (before Ray starts)."""
    return lambda w: w.run(**fields)


def _spec_set(*sets: str):
    return lambda w: w.run(*[a for s in sets for a in ("--set", s)])


NO_RAY = dict(ray=False)

CASES = [
    # the job file and the command line: refused before Ray starts
    Case("not_yaml", lambda w: ["run", w.file("job.yaml", "name: [unclosed\n"), "--output", str(w.out)], 2,
         "not valid YAML", **NO_RAY),
    Case("job_not_a_mapping", lambda w: ["run", w.file("job.yaml", "- a\n- b\n"), "--output", str(w.out)], 2,
         "job", **NO_RAY),
    Case("job_file_missing", lambda w: ["run", str(w.tmp / "nope.yaml"), "--output", str(w.out)], 2,
         "nope.yaml", **NO_RAY),
    Case("unknown_field", _spec(trainn={"epochs": 1}), 2, "'trainn': unknown field", **NO_RAY),
    Case("mistyped_field", _spec(train={"epochs": "ten"}), 2, "'train.epochs'", **NO_RAY),
    Case("negative_epochs", _spec(train={"epochs": -1}), 2, "'train.epochs'", **NO_RAY),
    Case("zero_batch_size", _spec(train={"batch_size": 0}), 2, "'train.batch_size'", **NO_RAY),
    Case("unknown_task", _spec(task="forecast"), 2, "task", **NO_RAY),
    Case("task_not_a_name", _spec(task=[1, 2]), 2, "task", **NO_RAY),
    Case("split_sums_past_one", _spec(data={"split": {"valid": 0.6, "test": 0.5}}), 2, "split", **NO_RAY),
    Case("dropout_above_one", _spec(model={"dropout": 1.5}), 2, "'model.dropout'", **NO_RAY),
    Case("unknown_model_kind", _spec(model={"kind": "transformer9"}), 2, "'model.kind'", **NO_RAY),
    Case("name_with_a_slash", _spec(name="a/b"), 2, "slug", **NO_RAY),
    Case("name_climbing_out", _spec(name="../../x"), 2, "slug", **NO_RAY),
    Case("zero_workers", _spec(scaling={"num_workers": 0}), 2, "'scaling.num_workers'", **NO_RAY),
    Case("negative_max_failures", _spec(scaling={"max_failures": -1}), 2, "'scaling.max_failures'", **NO_RAY),
    Case("explain_depth_zero", _spec(explain={"surrogate_depth": 0}), 2, "'explain.surrogate_depth'", **NO_RAY),
    Case("tune_space_unknown_key", _spec(tune={"num_samples": 2, "space": {"train.lrr": [0.1]}}), 2, "train.lrr",
         **NO_RAY),
    Case("tune_zero_samples", _spec(tune={"num_samples": 0}), 2, "'tune.num_samples'", **NO_RAY),
    Case("filter_that_calls_code", _spec(task="detect", data={"target": None, "normal_when": "__import__('os')"}), 2,
         "normal_when", **NO_RAY),
    Case("augment_on_cluster", _spec(task="cluster", data={"target": None}, augment=["clusters"]), 2,
         "augment: adds features to a supervised model's inputs; task cluster has none", **NO_RAY),
    Case("augment_unknown_kind", _spec(augment=["trees"]), 2, "'augment.0'", **NO_RAY),
    Case("unknown_data_format", _spec(data={"format": "xlsx"}), 2, "'data.format'", **NO_RAY),
    Case("target_is_the_id", _spec(data={"target": "row_id"}), 2, "data.id and data.target are the same", **NO_RAY),
    Case("set_without_equals", _spec_set("train.epochs"), 2, "--set expects key=value", **NO_RAY),
    Case("set_unknown_field", _spec_set("train.epochz=3"), 2, "epochz", **NO_RAY),
    Case("set_wrong_type", _spec_set("train.lr=fast"), 2, "'train.lr'", **NO_RAY),
    Case("knowledge_base_unopenable", _spec(knowledge="/proc/no/such/dir/kb.db"), 2, "knowledge base", **NO_RAY),
    Case("output_holds_another_run", _another_run_in_output, 2, "already holds a run", **NO_RAY),
    Case("output_not_empty", _unrelated_output, 2, "not empty", **NO_RAY),
    Case("address_refuses", _address("127.0.0.1:1"), 2, "cannot reach a Ray cluster at 127.0.0.1:1: connection refused",
         ray=False, fresh=True),
    Case("address_ray_client_refuses", _address("ray://127.0.0.1:1"), 2,
         "cannot reach a Ray cluster at ray://127.0.0.1:1", ray=False, fresh=True),
    Case("address_not_host_port", _address("nonsense"), 2, "cluster address 'nonsense' is not HOST:PORT",
         ray=False, fresh=True),

    # where the data is and what it is
    Case("path_matches_nothing", lambda w: w.run(data={"path": str(w.tmp / "none" / "*.parquet")}), 2,
         "matches no files"),
    Case("missing_file", lambda w: w.run(data={"path": str(w.tmp / "nope.parquet")}), 2, "does not exist"),
    Case("folder_without_data_files", lambda w: w.run(data={"path": str(Path(w.file("notes.txt", "x")).parent)}), 2,
         "a folder with no Parquet, CSV or JSON files"),
    Case("unknown_extension", lambda w: w.run(data={"path": w.file("d.txt", "a,b\n1,2\n")}), 2,
         "cannot tell the data format"),
    Case("unknown_builtin", lambda w: w.run(data={"path": "builtin:nope"}), 2, "unknown builtin dataset 'nope'"),
    Case("csv_given_as_parquet", lambda w: w.run(data={"path": w.file("d.csv", "\n".join(_csv_rows()) + "\n"),
                                                       "format": "parquet"}), 2, "d.csv is not a Parquet file"),
    Case("zero_byte_parquet", lambda w: w.run(data={"path": w.file("d.parquet", b"")}), 2,
         "is not a Parquet file (it is empty)"),
    Case("empty_csv", lambda w: w.run(data={"path": w.file("d.csv", "")}), 2, "d.csv as CSV: an empty file"),
    Case("csv_header_only", lambda w: w.run(data={"path": w.file("d.csv", "row_id,a,b,label\n")}), 2,
         "the dataset is empty"),
    Case("ragged_csv_row", _ragged_csv, 2, "d.csv as CSV: CSV parse error: Row #21: Expected 4 columns, got 6"),
    Case("duplicate_csv_columns", _duplicate_header, 2, "the header names column(s) 'a' more than once"),
    Case("csv_not_gzip", lambda w: w.run(data={"path": w.file("d.csv.gz", b"not gzip")}), 2,
         "d.csv.gz as CSV: zlib inflate failed"),
    Case("json_not_json_lines", lambda w: w.run(data={"path": w.file("d.json", '{"a": 1, "label": "no"}\nnot json\n')}),
         2, "d.json as JSON: not JSON lines (one JSON object per line)"),
    Case("json_array_cut_short", lambda w: w.run(data={"path": w.file("d.json", '[{"a": 1, "label": "no"}, {"a"')}),
         2, "d.json as JSON: not a JSON array of records"),
    Case("empty_dataset", lambda w: w.run(data={"path": w.parquet(make_frame(10).iloc[:0])}), 2, "empty"),

    # the columns
    Case("missing_target", lambda w: w.run(data={"target": "lable"}), 2, "target column 'lable' not found"),
    Case("missing_id_column", lambda w: w.run(data={"id": "zzz"}), 2, "column 'zzz' (named in data.id"),
    Case("missing_group_column", lambda w: w.run(data={"group": "zzz"}), 2,
         "column 'zzz' (named in data.id/data.group"),
    Case("missing_ignored_column", lambda w: w.run(data={"ignore": ["zzz"]}), 2, "column 'zzz' (named in"),
    Case("target_with_one_class", lambda w: w.run(data={"path": w.parquet(_frame(100, label="yes"))}), 2,
         "only one class"),
    Case("class_only_outside_training", lambda w: w.run(data={"path": w.parquet(_frame(
        100, label=lambda df: "c" + df["row_id"].astype(str)))}), 2, "in the validation split that the training split lacks"),
    Case("nan_in_target", lambda w: w.run(task="regress", data={"path": w.parquet(_set(_frame(200, "regress"), 5,
                                                                                     "target", np.nan)),
                                                               "target": "target"}), 2, "1 missing"),
    Case("target_all_nan", lambda w: w.run(task="regress", data={
        "path": w.parquet(_frame(100, "regress", target=np.nan)), "target": "target"}), 2,
         "target column 'target' has 100 missing"),
    Case("infinite_target", lambda w: w.run(task="regress", data={"path": w.parquet(_set(_frame(200, "regress"), 5,
                                                                                       "target", np.inf)),
                                                                 "target": "target"}), 2, "infinite"),
    Case("text_target_for_regress", lambda w: w.run(task="regress", data={
        "path": w.parquet(_frame(100, "regress", target=lambda d: d["target"].map(lambda v: f"t{v:.1f}"))),
        "target": "target"}), 2, "target column 'target' must be numeric"),
    Case("text_in_numeric_column", lambda w: w.run(data={"path": w.parquet(_set(
        _frame(200, a=lambda d: d["a"].map(lambda v: f"{v:.4f}")), 17, "a", "abc"))}), 2,
         "column 'a' is numeric but holds non-numeric value 'abc'"),
    Case("split_column_name_taken", lambda w: w.run(data={"path": w.parquet(_frame(100, __split=1))}), 2,
         "column '__split' is reserved"),
    Case("row_key_name_taken_in_csv", lambda w: w.run(data={"path": w.file("d.csv", "\n".join(
        r + (",row_hash" if i == 0 else ",1") for i, r in enumerate(_csv_rows())) + "\n"), "id": None}), 2,
         "d.csv as CSV: column 'row_hash' is reserved"),
    Case("all_infinite_feature", lambda w: w.run(data={"path": w.parquet(_frame(100, a=np.inf))}), 2,
         "column 'a' has 100 infinite values"),
    Case("id_number_in_one_file_text_in_another", lambda w: _shards(w, "row_id", lambda s: s.map(lambda v: f"r{v}")), 2,
         "column 'row_id' is text in"),
    Case("target_text_in_one_file_number_in_another",
         lambda w: _shards(w, "label", lambda s: (s == "yes").astype(int), "csv"), 2, "column 'label' is numeric in"),
    Case("feature_number_in_one_file_text_in_another",
         lambda w: _shards(w, "b", lambda s: s.map(lambda v: f"x{v:.2f}")), 2, "part-1.parquet but numeric in"),

    # the rows and the split
    Case("fewer_rows_than_the_split_needs", lambda w: w.run(data={"path": w.parquet(make_frame(3))}), 2,
         "too few rows"),
    Case("ten_ids_on_300_rows", lambda w: _ids(w, 10), 2, "data.id 'row_id' repeats"),
    Case("four_ids_on_300_rows", lambda w: _ids(w, 4), 2, "data.id 'row_id' repeats"),
    Case("cluster_k_above_the_rows", lambda w: w.run(task="cluster", cluster={"k": 500}, data={"target": None}), 2,
         "cluster.k = 500 is larger than the number of training rows"),

    # dlmine predict
    Case("predict_missing_column", lambda w: w.predict(w.parquet(make_frame(20).drop(columns=["b"]))), 2,
         "lacks column(s) the model needs: b"),
    Case("predict_missing_data", lambda w: w.predict(str(w.tmp / "nope.parquet")), 2, "does not exist"),
    Case("predict_run_folder_not_model", lambda w: w.predict(w.parquet(make_frame(20)),
                                                            str(Path(w.model()).parent)), 2,
         "is not a dlmine model folder (no model.json)"),
    Case("predict_model_json_not_json", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        lambda m: (m / "model.json").write_text('{"task": "classify", "broken'))), 2, "is not a model description"),
    Case("predict_model_json_a_list", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        lambda m: (m / "model.json").write_text("[1, 2]"))), 2, "it is not a JSON object"),
    Case("predict_model_json_lacks_info", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        _edit_meta(lambda meta: meta.pop("info")))), 2, "it lacks 'info'"),
    Case("predict_model_json_edited_shape", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        _edit_meta(lambda meta: meta["model"].update(hidden=[99])))), 2, "cannot load the model"),
    Case("predict_another_tasks_model", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        _edit_meta(lambda meta: meta.update(task="regress")))), 2, "cannot load the model"),
    Case("predict_unregistered_task", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        _edit_meta(lambda meta: meta.update(task="quantile")))), 2, "unknown task 'quantile'"),
    Case("predict_weights_corrupt", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        lambda m: (m / "model.pt").write_bytes(b"garbage"))), 2, "model.pt is not a saved model's weights"),
    Case("predict_preprocess_corrupt", lambda w: w.predict(w.parquet(make_frame(20)), w.model(
        lambda m: (m / "preprocess.json").write_text("{"))), 2, "preprocess.json is not a saved preprocessing"),
    Case("predict_id_changes_type", _predict_mixed_ids, 2, "column 'row_id' is text in"),
    Case("features_from_not_a_select_run", lambda w: w.run(data={"features_from": str(w.tmp)}), 2,
         "holds no features.parquet"),
    Case("select_k_above_columns", lambda w: w.run(task="select", select={"k": 50}), 2,
         "select.k (50) is larger than the number of feature columns (5)"),
    Case("select_numeric_target", lambda w: w.run(task="select", data={"path": w.parquet(_frame(200, "regress")),
                                                                      "target": "target"}), 2,
         "target column 'target' looks like a numeric target"),
]

#: (case, exit code, the line the user saw), filled as the cases run
_SEEN: list[tuple[str, int, str]] = []


def table(rows=None) -> str:
    """The Markdown table of (case, exit code, the line the user sees)."""
    rows = _SEEN if rows is None else rows
    body = "\n".join(f"| {case} | {code} | {line.replace('|', '/')} |" for case, code, line in rows)
    return "| case | exit code | the line the user sees |\n|---|---|---|\n" + body + "\n"


@pytest.fixture(autouse=True, scope="module")
def _print_table():
    yield
    if _SEEN:
        print("\n" + table())  # shown with -s
        if os.environ.get("DLMINE_BAD_INPUT_TABLE"):
            Path(os.environ["DLMINE_BAD_INPUT_TABLE"]).write_text(table())


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


def _snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} \
        if folder.exists() else None


def _fresh_process(argv: list[str]) -> tuple[int, str]:
    """The command in a new Python process, not attached to the tests' Ray (stopped after 120 s:
    Ray itself retries an unreachable cluster for minutes)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, request, case):
    if case.ray:
        request.getfixturevalue("ray_local")
    where = Where(tmp_path, request)
    argv = case.build(where)
    before = _snapshot(where.out)
    capsys.readouterr()
    if case.fresh:
        code, err = _fresh_process(argv)
    else:
        code, err = main(argv), capsys.readouterr().err
    lines = err.strip().splitlines()
    line = lines[-1] if lines else ""
    _SEEN.append((case.name, code, line))
    assert code == case.code, err[-3000:]
    assert line.startswith("error: ") and case.needle in line, err[-3000:]
    errors = [ln for ln in lines if ln.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err and "retry" not in line, err[-3000:]
    # no output: none left, or the one there before left as it was; no staging folder
    assert _snapshot(where.out) == before
    if where.out.name == "p.parquet":  # dlmine predict: not even the folder it would have made
        assert not where.out.parent.exists(), "an empty output folder was left behind"
    else:
        assert not [p for p in where.out.parent.iterdir() if p.name.startswith(f".{where.out.name}.tmp")]


def test_the_table_has_every_kind_of_case():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


# --- not failures: a warning, and the one-line helper itself

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

