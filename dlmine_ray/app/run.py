"""``dlmine run`` and ``dlmine_ray.run_job``: a job in, a complete run folder out (or nothing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Union

from dlmine_ray.app.jobfile import coerce_spec
from dlmine_ray.pipelines import RunContext, RunResult, run_pipeline
from dlmine_ray.pipelines.write import RunFolder
from dlmine_ray.runtime.progress import Reporter
from dlmine_ray.runtime.session import ray_session
from dlmine_ray.spec import JobSpec
from dlmine_ray.tasks import get_task


def run_job(job: Union[JobSpec, dict, str, os.PathLike], output: Union[str, os.PathLike] = "runs/latest",
            address: Optional[str] = None, overwrite: bool = False, verbose: bool = False,
            quiet: bool = False, overrides: Optional[list] = None, num_cpus: Optional[int] = None) -> RunResult:
    """Run a job (a JobSpec, a dict, or a YAML path) and write its outputs into ``output``.

    Returns the RunResult; raises DlmineError for bad input, leaving no output behind."""
    spec = coerce_spec(job, overrides)
    rep = Reporter(quiet=quiet, verbose=verbose)
    folder = RunFolder(str(output), overwrite)
    folder.open()
    scratch = tempfile.mkdtemp(prefix="dlmine_ray_storage_")
    try:
        with ray_session(address, verbose, num_cpus) as cpus:
            ctx = RunContext(spec, get_task(spec.task), folder, rep, spec.storage or scratch, scratch, cpus)
            result = run_pipeline(ctx)
        rep.stage("publishing", str(folder.final))
        result.output = folder.commit()
        rep.done()
        return result
    except BaseException:
        folder.discard()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
