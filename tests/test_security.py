"""A job file is data: no field of it runs code. The row filter (data.normal_when) accepts only
its language; everything else is refused at the boundary with one line, before anything runs."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import write_job
from dlmine_ray.cli import main
from dlmine_ray.spec import spec_from_dict
from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.rowfilter import RowFilter

ROWS = pd.DataFrame({"label": [0, 1, 0, None], "x": [1.0, 2.0, np.nan, 4.0], "Grad.Rate": [1, 5, 7, 9],
                     "kind": ["a", "b", "c", None]})


@pytest.mark.parametrize("text, kept", [
    ("label == 0", [1, 0, 1, 0]),
    ("(label == 0) & (x > 0.5)", [1, 0, 0, 0]),
    ("label == 0 and x > 0.5", [1, 0, 0, 0]),
    ("label in [0, 2]", [1, 0, 1, 0]),
    ("kind not in ('a',)", [0, 1, 1, 0]),
    ("~isnull(x)", [1, 1, 0, 1]),
    ("notnull(kind) | (x >= 4)", [1, 1, 1, 1]),
    ("`Grad.Rate` > 3", [0, 1, 1, 1]),
    ("1 < x <= 2", [0, 1, 0, 0]),
    ("x > -1", [1, 1, 0, 1]),
    ("label != 1", [1, 0, 1, 0]),  # a null is neither equal nor unequal: not kept
])
def test_the_filter_language_keeps_the_rows_it_says(text, kept):
    assert RowFilter("data.normal_when", text).mask(ROWS).astype(int).tolist() == kept


@pytest.mark.parametrize("text, needle", [
    ("(label == 0) & (@os.system('touch PWNED') == 0)", "'@'"),
    ("@pd.read_csv", "'@'"),
    ("label.__class__.__mro__", "attribute access (.__mro__)"),
    ("__import__('os').system('touch PWNED')", "function calls"),
    ("__builtins__ == 1", "the name '__builtins__'"),
    ("open('PWNED') == 1", "function calls (open(...))"),
    ("x.abs() > 1", "function calls"),
    ("x[0] > 1", "subscripts"),
    ("(lambda: 1)() == 1", "function calls"),
    ("x + 1 > 2", "arithmetic"),
    ("[c for c in x] == 1", "comprehensions"),
    ("label == {'a': 1}", "dicts"),
    ("import os", "a syntax error"),
    ("label == 0 &", "a syntax error"),
    ("`Grad.Rate > 3", "an unclosed backtick"),
    ("isnull(x, y)", "isnull(...) with other than one column"),
])
def test_anything_but_the_filter_language_is_refused_in_one_line(text, needle):
    with pytest.raises(DlmineError) as ei:
        spec_from_dict({"task": "detect", "data": {"path": "x.csv", "normal_when": text}})
    message = str(ei.value)
    assert needle in message and "data.normal_when" in message and "\n" not in message


def test_a_filter_that_would_run_a_shell_command_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"label": [0, 1] * 20, "x": np.arange(40.0)}).to_csv(tmp_path / "rows.csv", index=False)
    mark = tmp_path / "PWNED"
    job = write_job(tmp_path / "job.yaml", task="detect",
                    data={"path": str(tmp_path / "rows.csv"), "target": None, "id": None,
                          "normal_when": f"(label == 0) & (@os.system('touch {mark}') == 0)"})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.normal_when" in err[0] and "'@'" in err[0]
    assert not mark.exists() and not (tmp_path / "out").exists()


def test_a_filter_naming_a_missing_column_is_one_line(tmp_path):
    with pytest.raises(ValueError) as ei:
        RowFilter("data.normal_when", "(label == 0) & (nope > 1)").mask(ROWS)
    assert "names column(s) the data does not have: nope" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        RowFilter("data.normal_when", "x").mask(ROWS)
    assert "must give true/false for every row" in str(ei.value)


@pytest.mark.parametrize("name", ["../../somewhere", "/etc/x", "a/b", "..", "a..b", ".hidden", "", "x" * 65,
                                  "name with space", "tab\tname"])
def test_a_job_name_that_is_not_a_slug_is_refused(name):
    with pytest.raises(DlmineError) as ei:
        spec_from_dict({"name": name, "data": {"path": "x.csv"}})
    assert "must be a slug" in str(ei.value) and "\n" not in str(ei.value)


def test_a_job_named_outside_its_folders_writes_nothing(tmp_path, capsys, table_dir):
    job = write_job(tmp_path / "job.yaml", name="../../escaped", data={"path": str(table_dir)})
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 2
    assert "must be a slug" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path.parent.parent / "escaped").exists()
    for ok in ("wine-tuned", "digits_2.v1", "A"):
        assert spec_from_dict({"name": ok, "data": {"path": "x.csv"}}).name == ok


LOOPBACK = ("127.", "::1", "::ffff:127.")


def test_a_local_run_listens_on_loopback_only(tmp_path, table_dir):
    """Every socket that a local `dlmine run` (no --address) and the Ray it starts listen on, polled
    while the job runs, is bound to loopback: GCS, raylet, workers, agents, the metrics exporter."""
    import subprocess
    import sys
    import time

    import psutil

    # (through Ray: a job this small would otherwise run in the driver and start no Ray)
    job = write_job(tmp_path / "job.yaml", data={"path": str(table_dir)}, train={"epochs": 40, "early_stopping": 0},
                    knowledge="off", scaling={"driver_max_mb": 0})
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "dlmine_ray.cli", "run", job, "-o", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = {}
    try:
        while proc.poll() is None:
            try:
                tree = {p.pid: p for p in [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)}
                for c in psutil.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN and c.pid in tree:
                        seen[(c.laddr.ip, c.laddr.port)] = tree[c.pid].name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    names = set(seen.values())
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), seen
    exposed = {k: v for k, v in seen.items() if not k[0].startswith(LOOPBACK)}
    assert not exposed, f"listening beyond loopback: {exposed}"
