"""Explanations: a classify or regress run explains its deep model (integrated gradients with their
completeness gap, permutation importance, surrogate rules with their fidelity) in metrics.json and
report.html."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import write_job
from dlmine_ray.cli import main

NOISE = [f"noise{i}" for i in range(5)]


def _table(rows: int, seed: int, kind: str) -> pd.DataFrame:
    """Two informative columns and six noise columns. classify: the label depends on ``a`` (mean 10,
    sd 3: a surrogate's thresholds in original units are near 10, standardised ones near 0) and on
    the categorical ``color`` (red or not); regress: the target on ``a`` and ``b``. Noise: five
    numeric columns and the categorical ``shape``."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"row_id": np.arange(rows), "a": 10 + 3 * rng.normal(size=rows),
                       "color": rng.choice(["red", "green", "blue"], size=rows)})
    for c in NOISE:
        df[c] = rng.normal(size=rows)
    df["shape"] = rng.choice(["square", "circle"], size=rows)
    z = (df["a"] - 10) / 3
    if kind == "classify":
        df["label"] = np.where(2 * z + 3 * (df["color"] == "red") - 1 > 0, "yes", "no")
    else:
        df["b"] = rng.normal(size=rows)
        df["target"] = 3 * z - 2 * df["b"] + rng.normal(0, 0.1, rows)
    return df


def _run(tmp_path, kind: str, seed: int = 0):
    df = _table(800, seed, kind)
    df.to_parquet(tmp_path / f"{kind}.parquet", index=False)
    fields = {"task": kind, "data": {"path": str(tmp_path / f"{kind}.parquet"),
                                     "target": "label" if kind == "classify" else "target"},
              "model": {"hidden": [32]}, "train": {"epochs": 30, "batch_size": 32}}
    out = tmp_path / f"run_{kind}"
    assert main(["run", write_job(tmp_path / f"{kind}.yaml", **fields), "--output", str(out)]) == 0
    return out, df, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """One classify run, shared by the tests that read its outputs or explain with its model."""
    from conftest import _ensure_ray

    _ensure_ray()
    return _run(tmp_path_factory.mktemp("explain"), "classify")


def _section(page: str) -> str:
    start = page.index("<h2>Explanations</h2>")
    return page[start:page.index("<h2>", start + 1)]


def test_classify_run_explains_the_two_informative_columns(classify_run):
    out, _, m = classify_run
    assert m["accuracy"] > 0.9, m
    # the one-hot group of color counts as one feature, and it and a rank first by both methods
    assert set(m["top_features_ig"][:2]) == {"a", "color"}, m["top_features_ig"]
    assert set(m["top_features_permutation"][:2]) == {"a", "color"}, m["top_features_permutation"]
    assert 0 <= m["ig_completeness_gap"] < 0.05, m["ig_completeness_gap"]
    assert 0 < m["explained_rows"] <= 256
    assert m["surrogate_fidelity_metric"] == "accuracy" and m["surrogate_fidelity"] > 0.85, m
    assert 2 <= len(m["surrogate_rules"]) <= 8 and all(r.startswith("if ") for r in m["surrogate_rules"])
    assert any(" a " in r and r.endswith(" then yes") for r in m["surrogate_rules"]), m["surrogate_rules"]

    section = _section((out / "report.html").read_text())
    for part in ("Top features", "Per class", "no (", "yes (", "Surrogate rules", "Fidelity"):
        assert part in section, part
    assert f'{m["surrogate_fidelity"]:.4g}' in section
    # rules in original units: a's thresholds lie near its mean of 10 (a standardised one would be near 0)
    rules = re.findall(r'<td class="l">([^<]*)</td><td class="l">(yes|no)</td>', section)
    assert rules and any("color = red" in r for r, _ in rules), rules
    thresholds = [float(v) for r, _ in rules for v in re.findall(r"(-?[\d.]+) &lt; a\b", r)
                  + re.findall(r"\ba (?:&lt;=|&gt;) (-?[\d.]+)", r)]
    assert thresholds and all(4 < t < 16 for t in thresholds), (thresholds, rules)
    assert "color=red" not in section  # encoded names never reach the reader


def test_regress_run_ranks_a_and_b_first(tmp_path, ray_local):
    out, _, m = _run(tmp_path, "regress", seed=1)
    assert m["r2"] > 0.9, m
    assert set(m["top_features_ig"][:2]) == {"a", "b"}, m["top_features_ig"]
    assert set(m["top_features_permutation"][:2]) == {"a", "b"}, m["top_features_permutation"]
    assert m["ig_completeness_gap"] < 0.05
    assert m["surrogate_fidelity_metric"] == "r2" and 0.5 < m["surrogate_fidelity"] <= 1.0, m
    section = _section((out / "report.html").read_text())
    assert "Surrogate rules" in section and "Per class" not in section
