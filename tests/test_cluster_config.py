"""cluster.yaml is a valid Ray cluster-launcher config, and it keeps the promises made about it.

Validation is Ray's own: `prepare_config` (merge with the provider's defaults.yaml, as `ray up`
does) followed by `validate_config` (jsonschema against ray/autoscaler/ray-schema.json, plus
Ray's own cross-field checks). No cloud call and no Ray start is needed.
"""

from __future__ import annotations

import copy
import fnmatch
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    doc = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(doc, dict), "cluster.yaml must be a YAML mapping"
    return doc


def _ray_validate(doc: dict) -> dict:
    """What `ray up` does before it talks to the cloud; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(doc))
    validate_config(prepared)
    return prepared


def _worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_validates_with_rays_schema(config):
    prepared = _ray_validate(config)
    # The prepared config is the one that `ray up` would use: our values, not the defaults.
    assert prepared["cluster_name"] == "dlmine"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert set(prepared["available_node_types"]) == set(config["available_node_types"])


@pytest.mark.parametrize(
    "breakage, field",
    [
        pytest.param(lambda c: c.update(not_a_ray_field=1), "not_a_ray_field", id="unknown top-level key"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"].update(gpus=1), "gpus",
                     id="unknown node-type key"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"].pop("resources"), "resources",
                     id="node type without resources"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5), "0.5",
                     id="fractional resource"),
        pytest.param(lambda c: c.update(max_workers=-1), "-1", id="negative max_workers"),
    ],
)
def test_validation_rejects_broken_copies(config, breakage, field):
    # Guards against a validation that passes everything (e.g. a schema that failed to load):
    # each broken copy must fail in jsonschema, on the field that was broken.
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError, match=field):
        _ray_validate(broken)


def test_validation_rejects_a_head_type_that_does_not_exist(config):
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        _ray_validate(broken)


def test_has_an_autoscaling_cpu_worker_type(config):
    cpu_types = {
        name: t for name, t in _worker_types(config).items()
        if t["resources"].get("CPU", 0) > 0 and t["resources"].get("GPU", 0) == 0
    }
    assert cpu_types, "no CPU-only worker type"
    scalable = [n for n, t in cpu_types.items() if t.get("max_workers", 0) > t.get("min_workers", 0)]
    assert scalable, f"no CPU worker type can autoscale (max_workers > min_workers): {sorted(cpu_types)}"
    for name in scalable:
        assert cpu_types[name]["max_workers"] <= config["max_workers"], name


def test_has_an_optional_gpu_worker_type(config):
    gpu_types = {name: t for name, t in _worker_types(config).items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker type declares GPU resources"
    for name, t in gpu_types.items():
        assert t.get("min_workers", 0) == 0, f"{name}: GPU workers should start only when a job asks"
        assert t.get("max_workers", 0) >= 1, name
        assert t["resources"].get("CPU", 0) >= 1, f"{name}: a GPU worker needs CPUs for its Train worker"


def test_every_node_type_names_its_image(config):
    # Without ImageId, Ray falls back to an old Ubuntu 18.04 Deep Learning AMI.
    images = {name: t["node_config"].get("ImageId") for name, t in config["available_node_types"].items()}
    assert all(images.values()), images
    assert len(set(images.values())) == 1, f"node types use different images: {images}"


def test_setup_installs_pinned_torch_then_this_checkout(config):
    mounts = config["file_mounts"]
    remote = [r for r, local in mounts.items() if (CLUSTER_YAML.parent / local).resolve() == REPO]
    assert remote, f"file_mounts does not copy this checkout: {mounts}"
    assert (REPO / "pyproject.toml").is_file() and 'name = "dlmine_ray"' in (REPO / "pyproject.toml").read_text()

    cmds = config["setup_commands"]
    torch_at = [i for i, c in enumerate(cmds) if "pip install" in c and "torch==2.13.0" in c]
    project_at = [i for i, c in enumerate(cmds) if "pip install" in c and any(f"-e {r}" in c for r in remote)]
    assert torch_at, f"no setup command installs torch==2.13.0: {cmds}"
    assert project_at, f"no setup command pip-installs the mounted checkout {remote}: {cmds}"
    assert min(torch_at) < min(project_at), "install torch before the project, so that the pin wins"

    # `ray up` runs the common setup commands on the head and on every worker.
    prepared = _ray_validate(config)
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("torch==2.13.0" in c for c in prepared[key]), key
    for name, t in config["available_node_types"].items():
        assert "worker_setup_commands" not in t, f"{name} overrides the setup commands"


def test_rsync_excludes_keep_the_package(config):
    # An unanchored pattern such as `data/` matches at any depth: it would drop dlmine_ray/data/.
    package_dirs = {p.relative_to(REPO).parts for p in (REPO / "dlmine_ray").rglob("*") if p.is_dir()}
    for pattern in config.get("rsync_exclude", []):
        if pattern.startswith("/"):
            continue
        name = pattern.rstrip("/")
        for parts in package_dirs:
            assert not any(fnmatch.fnmatch(part, name) for part in parts), (
                f"rsync_exclude '{pattern}' would drop {'/'.join(parts)}; anchor it with a leading '/'"
            )


def test_nothing_is_open_to_the_world(config):
    """The Jobs API runs code: the dashboard binds to the head's loopback (reached through
    `ray dashboard cluster.yaml`), SSH comes in only from a CIDR the user must set, and no comment
    promises a resume after a lost node that the code does not do."""
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    group = config["provider"]["security_group"]
    rules = group["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)], "only SSH from outside"
    cidrs = [ip["CidrIp"] for r in rules for ip in r["IpRanges"]]
    assert cidrs == ["REPLACE-WITH-YOUR-IP/32"] and all(not c.startswith("0.0.0.0") for c in cidrs)
    text = CLUSTER_YAML.read_text()
    assert "resumes from the last checkpoint after a lost node" not in text
    assert "ray dashboard cluster.yaml" in text
