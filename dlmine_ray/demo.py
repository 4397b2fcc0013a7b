"""``dlmine demo``: the built-in jobs, on data scikit-learn ships, with a summary table."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from dlmine_ray.cluster import ray_session
from dlmine_ray.spec import coerce_spec, load_job

#: the metrics each task shows in the summary table
_HEADLINE = {"classify": ["accuracy", "roc_auc"], "regress": ["r2", "rmse"], "cluster": ["nmi", "silhouette"],
             "detect": ["roc_auc", "average_precision"], "rules": ["n_itemsets", "n_rules"]}


def demo_jobs() -> list[Path]:
    """The demo's job files, in order."""
    root = resources.files("dlmine_ray") / "demo_jobs"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def run_demo(output: str = "runs/demo", overwrite: bool = True, verbose: bool = False,
             address: Optional[str] = None, quick: bool = False) -> list:
    """Run every demo job into ``output/<job name>``; print and return the results."""
    from dlmine_ray.runner import run_job

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: don't squeeze the table into 80 columns
        console = Console(width=170)
    results = []
    t0 = time.perf_counter()
    with ray_session(address, verbose):
        for path in demo_jobs():
            spec = load_job(path)
            if quick:  # a smoke run: same jobs, two epochs, two trials
                quick_set = [("train.epochs", 2)] + ([("tune.num_samples", 2)] if spec.tune else [])
                if spec.task == "cluster":
                    quick_set += [("cluster.distill_epochs", 2), ("cluster.refine_epochs", 2)]
                spec = coerce_spec(spec, quick_set)
            console.print(f"\n[bold]== {spec.name} ({spec.task}) ==[/]")
            t = time.perf_counter()
            res = run_job(spec, str(Path(output) / spec.name), overwrite=overwrite, verbose=verbose)
            results.append((res, time.perf_counter() - t))
    table = Table(title=f"dlmine demo — {len(results)} jobs in {time.perf_counter() - t0:.0f}s")
    from dlmine_ray.tasks import get_task

    from dlmine_ray.report.html import metrics_table, value_text

    for col in ("job", "task", "metric", "deep model [95% CI]", "baseline [95% CI]", "verdict", "rows train/scored",
                "seconds"):
        table.add_column(col, justify="left" if col in ("job", "task", "metric", "verdict") else "right",
                         no_wrap=True)
    for res, secs in results:
        m = res.metrics
        if m["task"] == "rules":
            for name in _HEADLINE["rules"]:
                table.add_row(res.spec.name, "rules", name, f"{m[name]:,}", "– exact FP-Growth", "",
                              f"{m['n_transactions']:,} transactions", f"{secs:.0f}")
            continue
        scored = m["rows_test"] if "rows_test" in m else m["rows"]
        rows = metrics_table(m).set_index("metric")
        for name in _HEADLINE[m["task"]]:
            r = rows.loc[name] if name in rows.index else None
            deep = "–" if r is None else value_text(r["deep model"], r["deep CI"], ".4f")
            base = "–" if r is None else value_text(r["baseline"], r["baseline CI"], ".4f")
            table.add_row(res.spec.name + ("*" if res.leaderboard is not None else ""), m["task"], name, deep,
                          f"{base} {get_task(m['task']).baseline_name}", "" if r is None else r["verdict"],
                          f"{m['rows_train']:,}/{scored:,}", f"{secs:.0f}")
    console.print(table)
    if any(r.leaderboard is not None for r, _ in results):
        console.print("* tuned with Ray Tune; the leaderboard is in leaderboard.parquet and report.html")
    console.print(f"results (metrics.json, report.html, model/, predictions.parquet, clusters.parquet, "
                  f"scores.parquet or itemsets.parquet + rules.parquet) in {Path(output).absolute()}/<job>")
    return results
