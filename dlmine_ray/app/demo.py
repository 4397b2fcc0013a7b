"""``dlmine demo``: the built-in jobs, on data scikit-learn ships, with a summary table."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from dlmine_ray.app.jobfile import coerce_spec, load_job
from dlmine_ray.runtime.session import ray_session
from dlmine_ray.tasks import get_task


def demo_jobs() -> list[Path]:
    """The demo's job files, in order."""
    root = resources.files("dlmine_ray") / "demo_jobs"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def run_demo(output: str = "runs/demo", overwrite: bool = True, verbose: bool = False,
             address: Optional[str] = None, quick: bool = False) -> list:
    """Run every demo job into ``output/<job name>``; print and return the results."""
    from dlmine_ray.app.run import run_job

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: don't squeeze the table into 80 columns
        console = Console(width=170)
    results = []
    t0 = time.perf_counter()
    with ray_session(address, verbose):
        for path in demo_jobs():
            spec = load_job(path)
            if quick:  # a smoke run: same jobs, two epochs, two trials
                spec = coerce_spec(spec, get_task(spec.task).quick_overrides(spec))
            console.print(f"\n[bold]== {spec.name} ({spec.task}) ==[/]")
            t = time.perf_counter()
            res = run_job(spec, str(Path(output) / spec.name), overwrite=overwrite, verbose=verbose)
            results.append((res, time.perf_counter() - t))
    table = Table(title=f"dlmine demo — {len(results)} jobs in {time.perf_counter() - t0:.0f}s")
    from dlmine_ray.report.page import metrics_table, value_text

    for col in ("job", "task", "metric", "deep model [95% CI]", "baseline [95% CI]", "verdict", "rows train/scored",
                "seconds"):
        table.add_column(col, justify="left" if col in ("job", "task", "metric", "verdict") else "right",
                         no_wrap=True)
    for res, secs in results:
        m = res.metrics
        task = get_task(m["task"])
        rows = metrics_table(m, task).set_index("metric")
        for name in task.headline:
            if name not in task.metric_modes:  # a count, not compared with a baseline
                deep, base, call = f"{m[name]:,}", f"– {task.baseline_name}", ""
            else:
                r = rows.loc[name] if name in rows.index else None
                deep = "–" if r is None else value_text(r["deep model"], r["deep CI"], ".4f")
                base = f"{'–' if r is None else value_text(r['baseline'], r['baseline CI'], '.4f')} {task.baseline_name}"
                call = "" if r is None else r["verdict"]
            table.add_row(res.spec.name + ("*" if res.leaderboard is not None else ""), m["task"], name, deep, base,
                          call, task.scale_text(m), f"{secs:.0f}")
    console.print(table)
    if any(r.leaderboard is not None for r, _ in results):
        console.print("* tuned with Ray Tune; the leaderboard is in leaderboard.parquet and report.html")
    console.print(f"results (metrics.json, report.html, model/, predictions.parquet, clusters.parquet, "
                  f"scores.parquet or itemsets.parquet + rules.parquet) in {Path(output).absolute()}/<job>")
    return results
