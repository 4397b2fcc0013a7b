"""One straight pipeline per kind of data; a task's ``data_kind`` picks its pipeline."""

from __future__ import annotations

from typing import Optional

from dlmine_ray.errors import DlmineError
from dlmine_ray.pipelines.context import RunContext, RunResult

#: the kinds of data whose pipeline runs small jobs in the driver (``RunContext.on_driver``)
DRIVER_KINDS = ("rows", "transactions")


def driver_reason(spec, task) -> Optional[str]:
    """Why a job runs in this process without Ray (a line for the console), or None when it goes
    through Ray: its input is local files (or a builtin dataset) of at most
    ``scaling.driver_max_mb`` MiB, its pipeline can (``DRIVER_KINDS``), and it asks for nothing
    that needs Ray (tuning, several workers, a GPU, a chosen trainer, what the task says only
    runs through Ray: ``Task.runs_in_driver``). DlmineError for paths that
    match no file, as the read would raise."""
    from dlmine_ray.data.read import local_input_bytes

    sc = spec.scaling
    if (task.data_kind not in DRIVER_KINDS or spec.tune is not None or sc.driver_max_mb <= 0
            or sc.trainer != "auto" or sc.num_workers > 1 or sc.use_gpu or not task.runs_in_driver(spec)):
        return None
    size = local_input_bytes(spec.data.path, spec.data.format)
    if size is None or size > sc.driver_max_mb * 2**20:
        return None
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
    return (f"small input ({shown} <= scaling.driver_max_mb {sc.driver_max_mb:g} MiB): the job runs in this "
            "process without Ray (scaling.driver_max_mb: 0 runs it through Ray)")


def run_pipeline(ctx: RunContext) -> RunResult:
    """Run ``ctx``'s job through the pipeline of its task's kind of data; returns the RunResult."""
    import importlib

    # imported when used: the transactions pipeline's compiled miner costs ~0.5 s to import
    pipelines = {"rows": "tabular", "transactions": "transactions"}
    module = pipelines.get(ctx.task.data_kind)
    if module is None:
        raise DlmineError(f"task {ctx.task.name} reads data of kind '{ctx.task.data_kind}', which no pipeline "
                          f"reads (known: {', '.join(pipelines)})")
    return importlib.import_module(f"dlmine_ray.pipelines.{module}").run(ctx)


__all__ = ["RunContext", "RunResult", "driver_reason", "run_pipeline"]
