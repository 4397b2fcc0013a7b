"""The console tells a run's story in order: each stage's epoch lines between its header and the
next one, and the notes that follow a stage (k, the anomaly threshold) after its last epoch."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import write_job
from dlmine_ray.app.run import run_job


def _frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(3, 4))
    group = rng.integers(0, 3, rows)
    x = centres[group] + rng.normal(size=(rows, 4))
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(4)])
    df.insert(0, "row_id", np.arange(rows))
    df["group"] = group
    df["is_anomaly"] = (group == 2).astype(int)
    return df


JOBS = {
    # stage 1 'pretrain' then a note (k), stage 2 'refine'
    "cluster": dict(task="cluster", data={"target": None, "labels": "group", "id": "row_id", "ignore": ["is_anomaly"]},
                    model={"hidden": [16], "latent": 2, "dropout": 0.0},
                    train={"epochs": 3, "batch_size": 32, "early_stopping": 0},
                    cluster={"k": 3, "init": "kmeans", "refine_epochs": 2}),
    # stage 1 'pretrain', stage 2 'svdd', then a note (the threshold)
    "detect": dict(task="detect", data={"target": None, "labels": "is_anomaly", "id": "row_id", "ignore": ["group"]},
                   model={"hidden": [16], "latent": 2, "dropout": 0.0},
                   train={"epochs": 3, "batch_size": 32, "early_stopping": 0},
                   detect={"model": "deep_svdd", "svdd_epochs": 2, "contamination": 0.05}),
}
NOTE = {"cluster": ("pretrain", "k = 3"), "detect": ("svdd", "threshold ")}


@pytest.mark.parametrize("task", sorted(JOBS))
def test_stage_lines_are_in_order(tmp_path, capsys, ray_local, task):
    _frame().to_parquet(tmp_path / "rows.parquet", index=False)
    fields = dict(JOBS[task])
    fields["data"] = {**fields["data"], "path": str(tmp_path / "rows.parquet")}
    job = write_job(tmp_path / "job.yaml", compare_baselines=False, **fields)
    capsys.readouterr()
    run_job(job, tmp_path / "run")
    lines = capsys.readouterr().err.splitlines()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    stages = list(dict.fromkeys(h["stage"] for h in history))
    assert len(stages) == 2

    headers = [i for i, line in enumerate(lines) if line.startswith("▶ ")]
    epoch_lines = [i for i, line in enumerate(lines) if re.match(r"\s+epoch \d+/\d+ ", line)]
    assert len(epoch_lines) == len(history), "every epoch is printed once"
    note_of, note_text = NOTE[task]
    for n, stage in enumerate(stages, start=1):
        start = next(i for i in headers if f"stage {n}/2 '{stage}'" in lines[i])
        end = min(i for i in headers if i > start)  # the next stage's (or scoring's) header
        inside = [i for i in epoch_lines if start < i < end]
        runs = sum(h["stage"] == stage for h in history)
        assert len(inside) == runs, f"stage {stage}: {runs} epoch lines expected between its header and the " \
                                    f"next, found {len(inside)}:\n" + "\n".join(lines)
        assert [int(re.search(r"epoch (\d+)/", lines[i]).group(1)) for i in inside] == list(range(1, runs + 1))
        if stage == note_of:
            note = [i for i, line in enumerate(lines) if line.strip().startswith(note_text)]
            assert len(note) == 1 and inside[-1] < note[0] < end, "\n".join(lines)
