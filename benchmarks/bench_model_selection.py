"""Data-mining-assisted model selection, leave-one-dataset-out on ../shared/corpus/.

For each dataset (rows subsampled to --rows, epochs capped at --epochs), at budgets of --budgets
trials, the test score of (a) the untuned default job, (b) random search (FIFO), (c) ASHA with
random search, (d) the warm-started search: its knowledge base holds the random-search runs of the
OTHER datasets only (phase 1 records them; phase 2 copies the store and deletes the held-out
dataset before tuning it), (e) at the budgets of --portfolio-budgets, the zero-shot portfolio
start of a user whose knowledge base is empty: its portfolio is learned (tune/portfolio.py) from
the other datasets' phase-1 trials only. Each next to HistGradientBoosting on the same split
(every run fits it). Phase 1's random search draws the same seeded settings on every dataset,
which is what lets the portfolio compare settings across datasets.

``--portfolio-out FILE`` also writes the portfolio learned from every dataset of the run: the
shipped dlmine_ray/tune/portfolio.json comes from that.

Scores: ROC-AUC (classify) and r2 (regress) on the run's test split. Per dataset the normalised
regret of a method is (best - score) / (best - worst) over all methods and HGB on that dataset (0 =
the best seen). Printed: one row per dataset and budget, then per budget and method the median
regret (with its quartiles) and the share of datasets where the deep model reaches HGB (score >= HGB's)
and where it is not worse by the paired 95% interval.

    python benchmarks/bench_model_selection.py                       # 20 datasets, budgets 4 8 16
    python benchmarks/bench_model_selection.py --datasets 24 --json out.json
    python benchmarks/bench_model_selection.py --smoke               # 2 tiny datasets, budget 2 (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SMOKE = {"datasets": 2, "rows": 300, "epochs": 1, "budgets": [2], "portfolio_budgets": [2], "cpus": 1}
METHODS = ("untuned", "random", "asha", "warm", "portfolio")


def pick(n: int) -> list[dict]:
    """``n`` corpus datasets, alternating classify and regress, smallest first (a fixed choice)."""
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    by_task = {t: sorted([m for m in manifest if m["task"] == t], key=lambda m: (m["rows"], m["name"]))
               for t in ("classify", "regress")}
    out = []
    while len(out) < n and (by_task["classify"] or by_task["regress"]):
        for t in ("classify", "regress"):
            if by_task[t] and len(out) < n:
                out.append(by_task[t].pop(0))
    return out


def synthetic(folder: Path) -> list[dict]:
    """Two small made-up datasets in the corpus's format, for a smoke run where the corpus is absent."""
    from sklearn.datasets import make_classification, make_regression

    out = []
    for i, task in enumerate(("classify", "regress")):
        maker = make_classification if task == "classify" else make_regression
        x, y = maker(n_samples=400, n_features=6, random_state=i)
        df = pd.DataFrame(x, columns=[f"x{j}" for j in range(6)]).assign(y=y)
        df.to_parquet(folder / f"made_{task}.parquet", index=False)
        out.append({"name": f"made_{task}", "task": task, "target": "y", "rows": 400, "folder": str(folder)})
    return out


def subsample(entry: dict, rows: int, folder: Path) -> str:
    """The dataset's rows, at most ``rows`` of them (seeded), as one Parquet file."""
    df = pd.read_parquet(Path(entry.get("folder", CORPUS)) / f"{entry['name']}.parquet")
    if len(df) > rows:
        df = df.sample(rows, random_state=0).reset_index(drop=True)
    path = folder / f"{entry['name']}.parquet"
    df.to_parquet(path, index=False)
    return str(path)


def job(entry: dict, path: str, args, tune=None, knowledge="off") -> dict:
    return {"name": entry["name"], "task": entry["task"], "data": {"path": path, "target": entry["target"]},
            "train": {"epochs": args.epochs, "early_stopping": 5}, "tune": tune, "knowledge": knowledge,
            "compare_baselines": True}


def score_of(metrics: dict, task: str) -> tuple[float, float, list]:
    key = "roc_auc" if task == "classify" else "r2"
    return float(metrics.get(key, np.nan)), float(metrics.get(f"baseline_{key}", np.nan)), \
        metrics.get(f"diff_{key}_ci") or [np.nan, np.nan]


def run(entry: dict, spec: dict, work: Path) -> dict:
    import dlmine_ray

    out = work / f"run-{time.time_ns()}"
    t0 = time.perf_counter()
    try:
        res = dlmine_ray.run_job(spec, out, quiet=True)
        deep, hgb, diff = score_of(res.metrics, entry["task"])
        return {"score": deep, "hgb": hgb, "diff_hi": diff[1], "seconds": time.perf_counter() - t0}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def held_out_store(master: Path, dataset_name: str, folder: Path) -> str:
    """A copy of the phase-1 knowledge base without the runs (and trials) on ``dataset_name``."""
    from sqlalchemy import create_engine, text

    import sqlite3

    copy = folder / f"kb-without-{dataset_name}.db"
    with sqlite3.connect(master) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # a copy of what is committed (the store is in WAL mode: a file copy can miss it)
    engine = create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        fps = [r[0] for r in conn.execute(text("SELECT fingerprint FROM datasets WHERE name LIKE :n"),
                                          {"n": f"%{dataset_name}.parquet"})]
        for fp in fps:
            conn.execute(text("DELETE FROM trials WHERE run_id IN (SELECT run_id FROM runs WHERE fingerprint = :f)"),
                         {"f": fp})
            conn.execute(text("DELETE FROM runs WHERE fingerprint = :f"), {"f": fp})
            conn.execute(text("DELETE FROM datasets WHERE fingerprint = :f"), {"f": fp})
    engine.dispose()
    return str(copy)


def learned_portfolio(store: str, entries: list[dict], out: Path, learnt_from: dict) -> Path:
    """The portfolio document learned from the trials in ``store``, written to ``out``."""
    from dlmine_ray.spec import spec_from_dict
    from dlmine_ray.tune.knowledge import KnowledgeBase
    from dlmine_ray.tune.portfolio import learn_all

    tasks = sorted({e["task"] for e in entries})
    kb = KnowledgeBase.open(store)
    try:
        doc = learn_all(kb, tasks, {t: spec_from_dict({"task": t, "data": {"path": "x"}}).selection()
                                    for t in tasks}, learnt_from=learnt_from)
    finally:
        kb.engine.dispose()
    out.write_text(json.dumps(doc, indent=1))
    return out


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per budget and method: median normalised regret [quartiles], share reaching HGB."""
    out = []
    for (budget,), g in rows.groupby(["budget"]):
        regrets = {m: [] for m in METHODS}
        reach = {m: [] for m in METHODS}
        not_worse = {m: [] for m in METHODS}
        for _, d in g.groupby("dataset"):
            scores = dict(zip(d["method"], d["score"]))
            hgb = float(d["hgb"].median())
            allv = [v for v in list(scores.values()) + [hgb] if np.isfinite(v)]
            best, worst = max(allv), min(allv)
            for m in METHODS:
                if m in scores and np.isfinite(scores[m]):
                    regrets[m].append((best - scores[m]) / (best - worst) if best > worst else 0.0)
                    reach[m].append(scores[m] >= hgb)
                    hi = float(d.loc[d["method"] == m, "diff_hi"].iloc[0])  # deep minus HGB, upper bound
                    not_worse[m].append(not (np.isfinite(hi) and hi < 0))
        for m in METHODS:
            r = np.asarray(regrets[m])
            if len(r):
                out.append({"budget": budget, "method": m, "datasets": len(r), "median_regret": float(np.median(r)),
                            "q25": float(np.quantile(r, 0.25)), "q75": float(np.quantile(r, 0.75)),
                            "reaches_hgb": float(np.mean(reach[m])),
                            "not_worse_than_hgb": float(np.mean(not_worse[m]))})
    return pd.DataFrame(out)


def pooled(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method and budget: the median regret normalised over every method AND budget run on the
    dataset (and HGB), so that different budgets compare (warm at 4 trials against random at 16)."""
    out, regrets = [], {}
    for _, d in rows.groupby("dataset"):
        allv = [v for v in list(d["score"]) + [float(d["hgb"].median())] if np.isfinite(v)]
        best, worst = max(allv), min(allv)
        for (m, b), score in d.groupby(["method", "budget"])["score"].first().items():
            if np.isfinite(score) and not (m == "untuned" and b != rows["budget"].min()):
                regrets.setdefault((m, b), []).append((best - score) / (best - worst) if best > worst else 0.0)
    for (m, b), r in sorted(regrets.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1])):
        r = np.asarray(r)
        out.append({"method": m, "budget": b, "datasets": len(r), "median_regret": float(np.median(r)),
                    "q25": float(np.quantile(r, 0.25)), "q75": float(np.quantile(r, 0.75))})
    return pd.DataFrame(out)


def head_to_head(rows: pd.DataFrame, a: tuple, b: tuple) -> Optional[dict]:
    """(method, budget) ``a`` against ``b`` on the datasets where both ran: how often a >= b, and the
    median of a - b (test score)."""
    sa = rows[(rows["method"] == a[0]) & (rows["budget"] == a[1])].set_index("dataset")["score"]
    sb = rows[(rows["method"] == b[0]) & (rows["budget"] == b[1])].set_index("dataset")["score"]
    both = (sa - sb.reindex(sa.index)).dropna()
    if not len(both):
        return None
    return {"a": f"{a[0]}@{a[1]}", "b": f"{b[0]}@{b[1]}", "datasets": len(both), "a_not_worse": int((both >= 0).sum()),
            "median_diff": float(both.median()), "q25": float(both.quantile(0.25)), "q75": float(both.quantile(0.75))}


def _save(args, rows: list, summary=None) -> None:
    """The rows so far (and the summary at the end) into --json: a long run that is stopped keeps them."""
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "args": vars(args)}, indent=1,
                                              default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=20)
    ap.add_argument("--rows", type=int, default=3000, help="rows per dataset at most (seeded subsample)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--portfolio-budgets", type=int, nargs="*", default=[4],
                    help="budgets at which the portfolio start (e) runs")
    ap.add_argument("--warm-budgets", type=int, nargs="*", default=None,
                    help="budgets at which the warm-started search (d) runs (default: --budgets)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="methods to run (the largest budget's random search always runs when warm or "
                         "portfolio does: it is the history they learn from)")
    ap.add_argument("--portfolio-out", help="write the portfolio learned from every dataset of the run here")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", help="also write the rows and the summary here")
    ap.add_argument("--smoke", action="store_true", help=f"a check that the script runs (CI): defaults {SMOKE}")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    if not (CORPUS / "manifest.json").is_file() and not args.smoke:
        sys.exit(f"the corpus is not at {CORPUS}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from dlmine_ray.runtime.session import ray_session

    work = Path(tempfile.mkdtemp(prefix="dlmine_bench_ms_"))
    master = work / "history.db"
    rows = []
    t_start = time.perf_counter()
    try:
        entries = pick(args.datasets) if (CORPUS / "manifest.json").is_file() else synthetic(work)
        paths = {e["name"]: subsample(e, args.rows, work) for e in entries}
        top = max(args.budgets)
        want = set(args.methods)
        learn = bool(want & {"warm", "portfolio"})
        warm_budgets = args.budgets if args.warm_budgets is None else args.warm_budgets
        with ray_session(num_cpus=args.cpus):
            # phase 1: untuned, random search (recorded: the history phase 2 learns from), ASHA
            for e in entries:
                p = paths[e["name"]]
                if "untuned" in want:
                    r = run(e, job(e, p, args), work)
                    rows += [{"dataset": e["name"], "task": e["task"], "budget": b, "method": "untuned", **r}
                             for b in args.budgets]
                for b in args.budgets:
                    if "random" in want or (learn and b == top):
                        kb = str(master) if b == top else "off"
                        r = run(e, job(e, p, args, {"num_samples": b, "scheduler": "fifo", "warm_start": False},
                                       kb), work)
                        rows.append({"dataset": e["name"], "task": e["task"], "budget": b, "method": "random", **r})
                    if "asha" in want:
                        r = run(e, job(e, p, args, {"num_samples": b, "scheduler": "asha", "warm_start": False}),
                                work)
                        rows.append({"dataset": e["name"], "task": e["task"], "budget": b, "method": "asha", **r})
                print(f"phase 1: {e['name']} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
                _save(args, rows)
            # phase 2: the warm-started search, each dataset held out of the store it learns from;
            # the portfolio start, its portfolio learned from the other datasets only
            for e in entries if learn else ():
                kb = held_out_store(master, e["name"], work)
                os.environ["DLMINE_PORTFOLIO"] = "off"  # (d) measures the knowledge base alone
                for b in warm_budgets if "warm" in want else ():
                    r = run(e, job(e, paths[e["name"]], args, {"num_samples": b, "scheduler": "fifo"}, kb), work)
                    rows.append({"dataset": e["name"], "task": e["task"], "budget": b, "method": "warm", **r})
                others = [o["name"] for o in entries if o["name"] != e["name"]]
                os.environ["DLMINE_PORTFOLIO"] = str(learned_portfolio(
                    kb, entries, work / f"portfolio-without-{e['name']}.json", {"datasets": others}))
                for b in args.portfolio_budgets if "portfolio" in want else ():
                    r = run(e, job(e, paths[e["name"]], args, {"num_samples": b, "scheduler": "fifo"}), work)
                    rows.append({"dataset": e["name"], "task": e["task"], "budget": b, "method": "portfolio", **r})
                os.environ.pop("DLMINE_PORTFOLIO")
                print(f"phase 2: {e['name']} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
                _save(args, rows)
        if args.portfolio_out:
            learned_portfolio(str(master), entries, Path(args.portfolio_out),
                              {"datasets": [e["name"] for e in entries], "rows": args.rows, "epochs": args.epochs,
                               "trials_per_dataset": top, "by": "benchmarks/bench_model_selection.py"})
            print(f"portfolio learned from {len(entries)} datasets written to {args.portfolio_out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    wide = df.pivot_table(index=["dataset", "task", "budget"], columns="method", values="score").reset_index()
    wide["hgb"] = df.groupby(["dataset", "budget"])["hgb"].median().values
    print(wide.round(4).to_string(index=False))
    summary = summarise(df)
    print("\nper budget and method: median normalised regret [q25, q75] over datasets; share reaching HGB")
    print(summary.round(3).to_string(index=False))
    table = pooled(df)
    print("\nper method and budget, regret normalised over every method and budget on the dataset")
    print(table.round(3).to_string(index=False))
    low, top = min(args.budgets), max(args.budgets)
    pf = min(args.portfolio_budgets or [low])
    pairs = [(("warm", low), ("random", top)), (("warm", low), ("random", low)), (("portfolio", pf), ("random", pf)),
             (("portfolio", pf), ("warm", pf)), (("portfolio", pf), ("untuned", low))]
    for a, b in dict.fromkeys(pairs):
        h = head_to_head(df, a, b)
        if h:
            print(f"{h['a']} vs {h['b']}: not worse on {h['a_not_worse']}/{h['datasets']} datasets, "
                  f"median test-score difference {h['median_diff']:+.4f} [q25 {h['q25']:+.4f}, q75 {h['q75']:+.4f}]")
    print(f"\n{len(set(df['dataset']))} datasets, rows <= {args.rows}, epochs <= {args.epochs}, "
          f"{time.perf_counter() - t_start:.0f}s")
    _save(args, rows, {"per_budget": summary.to_dict("records"), "pooled": table.to_dict("records")})


if __name__ == "__main__":
    main()
