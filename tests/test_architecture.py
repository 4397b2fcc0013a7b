"""The shape of the code (DESIGN.md): imports go one way down the layers and never in a circle, no
module outside tasks/ branches on a task's name, and a task is one module plus one registry line:
a toy task registered from this file runs end to end."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import Field

import dlmine_ray
from dlmine_ray.tasks import TASKS, Options, SupervisedTask, register_task, unregister_task

PACKAGE = Path(dlmine_ray.__file__).parent

#: the layers, top to bottom; a module may import from its own layer (without a cycle) and below.
#: Matched by the longest prefix: report/kit.py (the page kit) sits at the base with the errors, so
#: that a task's own report sections can draw with it.
LAYERS = [
    ("cli", ("dlmine_ray.cli",)),
    ("app", ("dlmine_ray.app", "dlmine_ray")),  # "dlmine_ray": the package's public API
    ("pipelines", ("dlmine_ray.pipelines",)),
    ("tune", ("dlmine_ray.tune",)),
    ("train", ("dlmine_ray.train",)),
    ("infer", ("dlmine_ray.infer", "dlmine_ray.explain")),
    ("report", ("dlmine_ray.report",)),
    ("mining", ("dlmine_ray.mining",)),
    ("data", ("dlmine_ray.data",)),
    ("runtime", ("dlmine_ray.runtime",)),
    ("spec", ("dlmine_ray.spec",)),
    ("tasks", ("dlmine_ray.tasks",)),
    ("models", ("dlmine_ray.models",)),
    ("base", ("dlmine_ray.errors", "dlmine_ray.report.kit")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every dlmine_ray module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer; add it to LAYERS"
    return rank


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_import_goes_up_the_layers():
    up = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
          for m, targets in GRAPH.items() for t in sorted(targets) if _layer(t) < _layer(m)]
    assert not up, "imports that go up the layers:\n" + "\n".join(up)


def test_no_import_cycle():
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_catch_what_they_forbid():
    # the two checks above are not vacuous: a task importing a pipeline, and a pair importing each other
    assert _layer("dlmine_ray.tasks.cluster") > _layer("dlmine_ray.pipelines.tabular")
    assert "dlmine_ray.tasks.base" in GRAPH["dlmine_ray.tasks.classify"]
    assert "dlmine_ray.tasks.cluster" in GRAPH["dlmine_ray.tasks"]  # the registry's imports are seen


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _task_name_uses(path: Path, names: set[str]) -> list[str]:
    """Code (not docstrings) in ``path`` that names a task: a string equal to a task's name, or an
    attribute named after one (``spec.cluster``: a task's own section; a method called so, like
    SQLAlchemy's ``table.select()``, is not one)."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names \
                and id(node) not in docs:
            hits.append(f"{path.name}:{node.lineno} '{node.value}'")
        elif isinstance(node, ast.Attribute) and node.attr in names and id(node) not in called:
            hits.append(f"{path.name}:{node.lineno} .{node.attr}")
    return hits


def test_no_branch_on_a_task_name_outside_tasks():
    names = set(TASKS)
    hits = [h for m, path in MODULES.items() if not m.startswith("dlmine_ray.tasks")
            for h in _task_name_uses(path, names)]
    assert not hits, "task names outside dlmine_ray/tasks/:\n" + "\n".join(hits)


def test_the_task_name_check_sees_a_branch(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text('"""cluster: a docstring may name it."""\nif spec.task == "cluster":\n    k = spec.cluster.k\n'
                 'rows = table.select()\nopts = spec.select\n')
    assert sorted(_task_name_uses(f, set(TASKS))) == ["bad.py:2 'cluster'", "bad.py:3 .cluster", "bad.py:5 .select"]


# -- a task written here, registered with one line, run end to end --------------------------------

class QuantileOptions(Options):
    """The section ``quantile:`` of a job."""

    q: float = Field(0.5, gt=0.0, lt=1.0, description="the quantile of the target to predict")


def _pinball(y, p, q):
    d = y - p
    return np.maximum(q * d, (q - 1) * d)


class QuantileTask(SupervisedTask):
    """Quantile regression: the pinball loss of quantile ``quantile.q``; the baseline is
    HistGradientBoosting with the same loss."""

    name = "quantile"
    options = QuantileOptions
    target_kind = "numeric"
    baseline_name = "HGB quantile"
    metric_modes = {"pinball": "min", "coverage": "max"}
    headline = ("pinball", "coverage")

    def output_dim(self, info):
        return 1

    def initial_info(self, spec, feature_names, target_info):
        return {**target_info, "q": spec.quantile.q}

    def step_loss(self, model, x, y, stage, ctx):
        d = y - model(x).squeeze(-1)
        q = ctx["info"]["q"]
        return torch.maximum(q * d, (q - 1) * d).mean()

    def eval_sums(self, model, x, y, stage, ctx):
        d = y - model(x).squeeze(-1)
        q = ctx["info"]["q"]
        return {"loss_sum": torch.maximum(q * d, (q - 1) * d).sum().item(), "n": float(len(y))}

    def predict_columns(self, outputs, info):
        return {"prediction": outputs[:, 0].astype(np.float64) * info["target_std"] + info["target_mean"]}

    def test_metrics(self, y_true, pred, info):
        y, p = np.asarray(y_true, np.float64), pred["prediction"].to_numpy(np.float64)
        return {"pinball": float(_pinball(y, p, info["q"]).mean()), "coverage": float((y <= p).mean())}

    def bootstrap_scorer(self, y_true, pred, info):
        y, p = np.asarray(y_true, np.float64), np.asarray(pred["prediction"], np.float64)
        loss, covered = _pinball(y, p, info["q"]), (y <= p).astype(float)
        return lambda w: {"pinball": w @ loss / w.sum(axis=1), "coverage": w @ covered / w.sum(axis=1)}

    def fit_baseline(self, x_train, y_train, info, spec):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(loss="quantile", quantile=info["q"],
                                             random_state=spec.train.seed).fit(x_train, y_train)

    def baseline_predict(self, baseline, x, info):
        return {"prediction": baseline.predict(x) * info["target_std"] + info["target_mean"]}


@pytest.fixture
def quantile_task():
    task = register_task(QuantileTask())
    yield task
    unregister_task(task.name)


def test_a_task_registered_here_runs_end_to_end(tmp_path, ray_local, quantile_task):
    from conftest import make_frame

    make_frame(400, kind="regress").to_parquet(tmp_path / "rows.parquet", index=False)
    job = {"name": "q90", "task": "quantile", "data": {"path": str(tmp_path / "rows.parquet"), "target": "target",
                                                        "id": "row_id"},
           "quantile": {"q": 0.9}, "model": {"hidden": [32]}, "train": {"epochs": 40, "batch_size": 32}}
    result = dlmine_ray.run_job(job, tmp_path / "run", quiet=True, num_cpus=2)
    out = tmp_path / "run"
    assert {"metrics.json", "predictions.parquet", "report.html", "job.yaml", "history.json", "model"} <= \
        {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "quantile" and m["rows_test"] > 0
    for key in ("pinball", "baseline_pinball", "pinball_ci", "diff_pinball_ci", "coverage", "baseline_coverage"):
        assert key in m, key
    # the option reached the loss: a 0.9 quantile covers most test rows (a mean or median would ~half)
    assert m["coverage"] > 0.7, m["coverage"]
    page = (out / "report.html").read_text()
    assert "baseline (HGB quantile)" in page and "<h2>Metrics on the test split</h2>" in page
    assert "q: 0.9" in (out / "job.yaml").read_text() and result.spec.quantile.q == 0.9
    pred = pd.read_parquet(out / "predictions.parquet")
    assert list(pred.columns) == ["row_id", "target", "prediction"]
    # the saved model scores new rows through dlmine predict's path, in Ray's workers
    n = dlmine_ray.predict(str(out / "model"), str(tmp_path / "rows.parquet"), str(tmp_path / "scored.parquet"))
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert n == 400 and np.allclose(scored.set_index("row_id").loc[pred["row_id"], "prediction"],
                                    pred["prediction"], rtol=1e-4, atol=1e-4)


def test_a_registered_task_has_its_section_and_checks(quantile_task):
    from dlmine_ray.errors import DlmineError
    from dlmine_ray.spec import spec_from_dict

    with pytest.raises(DlmineError, match="'quantile.q'"):
        spec_from_dict({"task": "quantile", "quantile": {"q": 1.5}})
    with pytest.raises(DlmineError, match="data.labels is for the cluster and detect tasks"):
        spec_from_dict({"task": "quantile", "data": {"labels": "y"}})
    assert spec_from_dict({"task": "quantile"}).data.target == "label"  # a supervised task's default
