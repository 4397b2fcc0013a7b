"""The job spec rejects bad jobs at the boundary, naming the field."""

import pytest
import yaml

from dlmine_ray.errors import DlmineError
from dlmine_ray.app.jobfile import load_job, parse_overrides
from dlmine_ray.spec import spec_from_dict

README_EXAMPLE = """
name: digits
task: classify
data:
  path: data/digits/
  target: label
  ignore: [row_id]
  split: {valid: 0.15, test: 0.15, seed: 0}
model: {kind: mlp, hidden: [256, 128], dropout: 0.1}
train: {epochs: 30, batch_size: 256, lr: 0.001, early_stopping: 5}
scaling: {num_workers: 1, use_gpu: false}
tune:
  num_samples: 8
  scheduler: asha
  space: {model.hidden: [[64], [256, 128]], train.lr: {loguniform: [0.0001, 0.01]}}
"""


def test_readme_example_validates(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(README_EXAMPLE)
    spec = load_job(p)
    assert spec.task == "classify" and spec.model.hidden == [256, 128]
    assert spec.tune.num_samples == 8 and spec.tune.space["train.lr"] == {"loguniform": [0.0001, 0.01]}


def test_defaults_work_without_any_field():
    spec = spec_from_dict({})
    assert spec.data.path == "builtin:digits" and spec.train.epochs > 0 and spec.tune is None


@pytest.mark.parametrize("doc, needle", [
    ({"trian": {"epochs": 3}}, "'trian': unknown field"),
    ({"train": {"epochs": "many"}}, "'train.epochs'"),
    ({"train": {"epochs": 0}}, "'train.epochs'"),
    ({"train": {"lr": -1}}, "'train.lr'"),
    ({"task": "cluster-ish"}, "'task'"),
    ({"data": {"split": {"valid": 0.5, "test": 0.45}}}, "at least 10%"),
    ({"data": {"target": "y", "ignore": ["y"]}}, "also listed in data.ignore"),
    ({"model": {"hidden": []}}, "'model.hidden'"),
    ({"scaling": {"num_workers": 0}}, "'scaling.num_workers'"),
    ({"tune": {"space": {"train.nope": [1, 2]}}}, "not a job field"),
    ({"tune": {"space": {"train.lr": {"lognormal": [1, 2]}}}}, "tune.space.train.lr"),
    ({"tune": {"space": {}}}, "tune.space is empty"),
])
def test_bad_fields_are_named(doc, needle):
    with pytest.raises(DlmineError) as ei:
        spec_from_dict(doc)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(DlmineError, match=r"not valid YAML at line \d+"):
        load_job(p)


def test_missing_job_file(tmp_path):
    with pytest.raises(DlmineError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({"name": "x"}))
    spec = load_job(p, parse_overrides(["train.epochs=3", "model.hidden=[8, 4]", "data.target=y"]))
    assert spec.train.epochs == 3 and spec.model.hidden == [8, 4] and spec.data.target == "y"
    with pytest.raises(DlmineError, match="'train.epochs'"):
        load_job(p, parse_overrides(["train.epochs=-2"]))
    with pytest.raises(DlmineError, match="key=value"):
        parse_overrides(["train.epochs"])
