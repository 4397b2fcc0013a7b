"""Every shipped job file (jobs/ and the demo's) is a valid job."""

from pathlib import Path

import pytest

from dlmine_ray.app.demo import demo_jobs
from dlmine_ray.app.jobfile import load_job
from dlmine_ray.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "jobs").glob("*.yaml")) + demo_jobs()


def test_there_are_job_files():
    assert len(FILES) >= 6
    assert {p.name for p in demo_jobs()} >= {"01_digits_classify.yaml", "02_diabetes_regress.yaml",
                                             "04_digits_cluster.yaml", "05_wdbc_detect.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_job_file_validates(path):
    spec = load_job(path)
    assert spec.name and spec.task in TASKS
