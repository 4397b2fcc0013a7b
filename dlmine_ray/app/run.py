"""``dlmine run`` and ``dlmine_ray.run_job``: a job in, a complete run folder out (or nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional, Union

from dlmine_ray.app.jobfile import coerce_spec
from dlmine_ray.errors import first_line
from dlmine_ray.pipelines import RunContext, RunResult, driver_reason, run_pipeline
from dlmine_ray.pipelines.write import RunFolder
from dlmine_ray.runtime.progress import Reporter
from dlmine_ray.runtime.session import check_reachable, driver_session, ray_session
from dlmine_ray.spec import JobSpec
from dlmine_ray.tasks import get_task
from dlmine_ray.tune.knowledge import KnowledgeBase


def run_job(job: Union[JobSpec, dict, str, os.PathLike], output: Union[str, os.PathLike] = "runs/latest",
            address: Optional[str] = None, overwrite: bool = False, verbose: bool = False,
            quiet: bool = False, overrides: Optional[list] = None, num_cpus: Optional[int] = None,
            resume: bool = False) -> RunResult:
    """Run a job (a JobSpec, a dict, or a YAML path) and write its outputs into ``output``.

    Returns the RunResult; raises DlmineError for bad input, leaving no output behind. The run, and
    a failed one too, is recorded in the knowledge base (``knowledge:``), which is opened first: one
    that cannot be opened stops the run before anything is written.

    A run killed outright (SIGKILL, a lost machine) leaves its staging folder beside ``output``.
    The next run of that output removes it, or with ``resume`` takes it over: TorchTrainer
    training (several workers, GPUs, a large split) then goes on from its last epoch's checkpoint."""
    spec = coerce_spec(job, overrides)
    rep = Reporter(quiet=quiet, verbose=verbose)
    folder = RunFolder(str(output), overwrite)
    kb = KnowledgeBase.open(spec.knowledge)
    folder.open(job_digest(spec), resume)
    if resume:
        rep.info(f"resuming the interrupted run of this job into {folder.final}" if folder.resumed else
                 f"nothing to resume: no interrupted run of this job wrote to {folder.final}; starting afresh")
    gone = folder.remove_dead()  # the other dead runs' (the one resumed is this run's now)
    if gone:
        rep.info(f"removed {gone} staging folder(s) of interrupted runs of {folder.final}")
    scratch = str(folder.scratch)
    os.makedirs(scratch, exist_ok=True)
    ctx = None
    try:
        task = get_task(spec.task)
        on_driver = driver_reason(spec, task)
        cluster = address or os.environ.get("RAY_ADDRESS")
        if on_driver:
            if cluster:  # a wrong address is an error, small job or not
                check_reachable(cluster)
            rep.info(on_driver + (f"; the cluster at {cluster} is not used" if cluster else ""))
        with driver_session(num_cpus) if on_driver else ray_session(address, verbose, num_cpus) as cpus:
            ctx = RunContext(spec, task, folder, rep, spec.storage or scratch, scratch, cpus, knowledge=kb,
                             on_driver=bool(on_driver))
            result = run_pipeline(ctx)
        rep.stage("publishing", str(folder.final))
        shutil.rmtree(scratch, ignore_errors=True)
        result.output = folder.commit()
        _record(ctx, rep, result=result)
        rep.done()
        return result
    except BaseException as err:
        folder.discard()
        if ctx is not None and not isinstance(err, KeyboardInterrupt):
            _record(ctx, rep, error=err)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def job_digest(spec: JobSpec) -> str:
    """The job's digest, which marks its staging folder: ``--resume`` takes over only a run of the same job."""
    return hashlib.sha256(json.dumps(spec.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record(ctx: RunContext, rep: Reporter, result: Optional[RunResult] = None,
            error: Optional[BaseException] = None) -> None:
    """Add the run (completed or failed) to the knowledge base; a failure to write is told, and
    never costs the run its results."""
    if ctx.knowledge is None:
        return
    sel = ctx.selection or {}
    run = {"task": ctx.spec.task, "name": ctx.spec.name, "status": "completed" if error is None else "failed",
           "job": (result.spec if result is not None else ctx.spec).model_dump(),
           "metrics": result.metrics if result is not None else None, "selection_metric": sel.get("metric"),
           "selection_mode": sel.get("mode"), "selection_value": sel.get("value"),
           "seconds": ctx.seconds(), "output": str(result.output) if result is not None else None,
           "error": None if error is None else f"{type(error).__name__}: {first_line(error)}"}
    try:
        ctx.knowledge.record(run, ctx.dataset, ctx.trials if error is None else [])
    except Exception as err:  # the run's own folder is complete; the record is what is lost
        rep.info(f"[yellow]warning: the run was not recorded in the knowledge base: {first_line(err)}[/]")


def print_summary(result: RunResult) -> None:
    """Print a run's metrics table (deep model against baseline, with intervals and verdicts), or
    the task's one-line summary, and where the results are."""
    from rich.console import Console
    from rich.table import Table

    from dlmine_ray.report.page import metrics_table, value_text

    m = result.metrics
    task = get_task(m["task"])
    line = task.summary_text(m)
    if line is not None:
        print(line)
        print(f"results: {result.output}")
        return
    where = f"all {m['rows']:,} rows" if task.scores_every_row else f"test split ({m['rows_test']:,} rows)"
    t = Table(title=f"{result.spec.name}: {m['task']} — {where}")
    t.add_column("metric")
    t.add_column("deep model [95% CI]", justify="right")
    t.add_column(f"baseline ({task.baseline_name}) [95% CI]", justify="right")
    t.add_column("verdict")
    for row in metrics_table(m, task).itertuples(index=False):
        t.add_row(row.metric, value_text(row[1], row[2]), value_text(row.baseline, row[4]), row.verdict)
    console = Console()
    (console if console.is_terminal else Console(width=150)).print(t)
    print(f"results: {result.output}")
