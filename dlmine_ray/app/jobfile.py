"""Jobs as a user writes them: a YAML file, ``--set key=value`` overrides, or a dict or JobSpec
from Python; each becomes one validated JobSpec (``dlmine_ray.spec``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from dlmine_ray.errors import DlmineError
from dlmine_ray.spec import JobSpec, spec_from_dict


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Turn ``["train.epochs=3", "model.hidden=[64]"]`` into (key, YAML-parsed value) pairs."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise DlmineError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise DlmineError(f"--set expects key=value, got '{pair}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


def load_job(path: Union[str, os.PathLike], overrides: Optional[list[tuple[str, Any]]] = None) -> JobSpec:
    """Read and validate a YAML job file. Relative local data paths resolve against the current
    directory, as they would for any command-line tool."""
    p = Path(path)
    if not p.is_file():
        raise DlmineError(f"job file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "parse error"
        raise DlmineError(f"job file {p} is not valid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    return spec_from_dict(doc, overrides)


def coerce_spec(job: Union[JobSpec, dict, str, os.PathLike], overrides=None) -> JobSpec:
    """Accept a JobSpec, a dict or a YAML path; return a validated JobSpec."""
    if isinstance(job, JobSpec):
        if overrides:
            return spec_from_dict(job.model_dump(), overrides)
        return job
    if isinstance(job, dict):
        return spec_from_dict(job, overrides)
    return load_job(job, overrides)
