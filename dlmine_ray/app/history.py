"""``dlmine history``: what the knowledge base holds: its datasets and runs, best scores first."""

from __future__ import annotations

import json
import math
from typing import Optional

import pandas as pd

from dlmine_ray.errors import DlmineError, failing_as
from dlmine_ray.tune.knowledge import KnowledgeBase


def history(knowledge: Optional[str] = None, task: Optional[str] = None, dataset: Optional[str] = None,
            export: Optional[str] = None, limit: int = 20, mine: bool = False, echo=print) -> pd.DataFrame:
    """Print the knowledge base's datasets and its newest runs (``task``, ``dataset``: filters);
    with ``export``, write every matching run to that Parquet file; with ``mine``, what the trials
    on each dataset teach (importance and rules). Returns the runs."""
    from rich.console import Console
    from rich.table import Table

    kb = KnowledgeBase.open(knowledge)
    if kb is None:
        raise DlmineError("the knowledge base is off (knowledge: off / DLMINE_KNOWLEDGE=off)")
    with failing_as("cannot read the knowledge base"):
        runs = kb.runs(task, dataset)
        datasets = kb.datasets()
    console = Console() if Console().is_terminal else Console(width=160)
    echo(f"knowledge base: {kb.shown}")
    if len(datasets):
        shown = datasets[datasets["fingerprint"].isin(set(runs["fingerprint"].dropna()))] if (task or dataset) \
            else datasets
        t = Table(title=f"{len(shown)} dataset(s)")
        for col in ("dataset", "fingerprint", "rows", "columns", "runs", "best"):
            t.add_column(col, justify="right" if col in ("rows", "columns", "runs") else "left")
        for d in shown.itertuples():
            its = runs[runs["fingerprint"] == d.fingerprint]
            t.add_row(str(d.name), d.fingerprint[:12], f"{d.n_rows:,}", str(d.n_columns), str(len(its)),
                      _best(its))
        console.print(t)
    t = Table(title=f"{len(runs)} run(s)" + (f", the newest {limit}" if len(runs) > limit else ""))
    for col in ("when", "task", "job", "dataset", "status", "selection", "trials", "seconds"):
        t.add_column(col, justify="right" if col in ("trials", "seconds") else "left")
    for r in runs.head(limit).itertuples():
        value = r.selection_value
        sel = f"{r.selection_metric}={value:.4g}" if value is not None and math.isfinite(value) else ""
        n_trials = r.n_trials if r.n_trials is not None and math.isfinite(r.n_trials) else 0
        t.add_row(pd.Timestamp(r.created, unit="s").strftime("%Y-%m-%d %H:%M"), r.task, str(r.name),
                  str(r.dataset or (r.fingerprint or "")[:12]), r.status if r.status == "completed" else
                  f"{r.status}: {(r.error or '')[:60]}", sel, f"{int(n_trials):,}", f"{r.seconds or 0:.0f}")
    console.print(t)
    if mine:
        _mine(kb, runs, console, echo)
    if export:
        flat = runs.copy()
        for c in ("job", "metrics", "versions"):
            flat[c] = flat[c].map(lambda v: json.dumps(v, default=str) if v is not None else None)
        with failing_as(f"cannot write {export}"):
            flat.to_parquet(export, index=False)
        echo(f"wrote {len(flat):,} run(s) to {export}")
    return runs


def _mine(kb, runs: pd.DataFrame, console, echo) -> None:
    """For each (task, dataset, metric) with 8 trials or more: importances and trial rules."""
    from rich.table import Table

    from dlmine_ray.tune.lessons import infer_space, lessons

    names = dict(zip(runs["fingerprint"], runs["dataset"]))
    said = False
    for task in sorted(runs["task"].unique()):
        fps = [f for f in runs.loc[runs["task"] == task, "fingerprint"].dropna().unique()]
        with failing_as("cannot read the knowledge base"):
            trials = kb.trials(task, fps)
        for (fp, metric, mode), t in trials.groupby(["fingerprint", "selection_metric", "selection_mode"]):
            learnt = lessons(t, infer_space(t), mode) if len(t) >= 8 else None
            if learnt is None:
                continue
            said = True
            head = f"{task} on {names.get(fp) or fp[:12]}: {learnt['trials']} trials, {metric} ({mode})"
            imp = Table(title=f"{head}: what mattered (fANOVA)")
            imp.add_column("setting")
            imp.add_column("importance", justify="right")
            for s, v in zip(learnt["importance"]["setting"], learnt["importance"]["importance"]):
                imp.add_row(s, f"{v:.3f}")
            console.print(imp)
            rules = Table(title=f"{head}: rules over the trials")
            for col in ("rule", "support", "confidence", "lift"):
                rules.add_column(col, justify="left" if col == "rule" else "right")
            for r in learnt["trial_rules"].itertuples():
                rules.add_row(r.rule, f"{r.support:.2f}", f"{r.confidence:.2f}", f"{r.lift:.2f}")
            console.print(rules)
    if not said:
        echo("no dataset has 8 or more recorded trials of one task to mine")


def _best(runs: pd.DataFrame) -> str:
    """The best selection value among completed runs, per task and metric, as text."""
    done = runs[(runs["status"] == "completed") & runs["selection_value"].notna()]
    parts = []
    for (task, metric, mode), g in done.groupby(["task", "selection_metric", "selection_mode"]):
        v = g["selection_value"].min() if mode == "min" else g["selection_value"].max()
        parts.append(f"{task} {metric}={v:.4g}")
    return "; ".join(parts)
