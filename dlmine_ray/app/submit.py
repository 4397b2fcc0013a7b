"""``dlmine submit``: send a job to a Ray cluster through the Ray Jobs API, the project's code
travelling in the job's runtime environment."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import yaml

import dlmine_ray
from dlmine_ray.app.jobfile import load_job
from dlmine_ray.data.keys import is_uri
from dlmine_ray.errors import failing_as
from dlmine_ray.runtime.session import RAY_ENV_DEFAULTS

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _absolute_paths(path):
    def fix(p: str) -> str:
        if p.startswith("builtin:") or is_uri(p):
            return p
        return os.path.abspath(os.path.expanduser(p))
    return [fix(p) for p in path] if isinstance(path, list) else fix(path)


def submit(job_file: str, address: str, output: Optional[str] = None, overrides=None, wait: bool = False,
           overwrite: bool = False, timeout: float = 3600.0, echo=print) -> tuple[str, str]:
    """Submit the job; return (submission id, status). With ``wait``, follow its logs until it
    ends and return the final status."""
    from ray.job_submission import JobSubmissionClient

    spec = load_job(job_file, overrides)
    doc = spec.model_dump()
    # Relative local paths mean "relative to where I ran submit": on a laptop cluster the job
    # runs on this filesystem, but from the job's own working directory.
    doc["data"]["path"] = _absolute_paths(spec.data.path)
    # the default output is unique per submission: the same job submitted twice in one second
    # (three at once from a script) must not write into one folder
    out = output or f"/tmp/dlmine_runs/{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if not is_uri(out):
        out = os.path.abspath(os.path.expanduser(out))
    with failing_as(f"cannot reach the Ray cluster at {address}"):
        client = JobSubmissionClient(address)
    with tempfile.TemporaryDirectory(prefix="dlmine_submit_") as wd:
        Path(wd, "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        entry = f"python -m dlmine_ray.cli run job.yaml --output {shlex.quote(out)}" + (" --overwrite" if overwrite else "")
        retry_until = time.monotonic() + 120
        while True:
            try:
                sub_id = client.submit_job(
                    entrypoint=entry,
                    runtime_env={"working_dir": wd, "py_modules": [os.path.dirname(dlmine_ray.__file__)],
                                 "env_vars": dict(RAY_ENV_DEFAULTS)},
                    metadata={"dlmine_job": spec.name, "dlmine_output": out},
                )
                break
            except RuntimeError as err:
                # a cluster that has just started answers before its job agent is ready
                if "No available agent" not in str(err) or time.monotonic() > retry_until:
                    raise
                time.sleep(2)
    echo(f"submitted {sub_id} (job '{spec.name}'), output on the cluster: {out}")
    if not wait:
        return sub_id, str(client.get_job_status(sub_id))
    printed = 0
    deadline = time.monotonic() + timeout
    status = "PENDING"
    while time.monotonic() < deadline:
        status = str(client.get_job_status(sub_id)).split(".")[-1]
        logs = client.get_job_logs(sub_id)
        if len(logs) > printed:
            sys.stdout.write(logs[printed:])
            sys.stdout.flush()
            printed = len(logs)
        if status in TERMINAL:
            break
        time.sleep(1.0)
    echo(f"job {sub_id} {status}")
    return sub_id, status
