"""One straight pipeline per kind of data; a task's ``data_kind`` picks its pipeline."""

from __future__ import annotations

from dlmine_ray.errors import DlmineError
from dlmine_ray.pipelines.context import RunContext, RunResult


def run_pipeline(ctx: RunContext) -> RunResult:
    """Run ``ctx``'s job through the pipeline of its task's kind of data; returns the RunResult."""
    from dlmine_ray.pipelines import tabular, transactions

    pipelines = {"rows": tabular.run, "transactions": transactions.run}
    run = pipelines.get(ctx.task.data_kind)
    if run is None:
        raise DlmineError(f"task {ctx.task.name} reads data of kind '{ctx.task.data_kind}', which no pipeline "
                          f"reads (known: {', '.join(pipelines)})")
    return run(ctx)


__all__ = ["RunContext", "RunResult", "run_pipeline"]
