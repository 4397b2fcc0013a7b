#!/usr/bin/env python
"""How a job's cost grows with its rows: the same job at a small and a large size, each as a
fresh `dlmine run` process, with wall time and the peak memory of its whole process tree.

  python benchmarks/bench_scale.py [--cases classify detect] [--small 1000000] [--large 10000000]
                                   [--epochs 1] [--data /tmp/dlmine_scale] [--driver-max-mb 0]
  python benchmarks/bench_scale.py --smoke   # 20k and 100k rows, a minute (CI)

Cases (data made once with `dlmine make-data` under --data and kept for the next run):
  classify  32 float features, binary label (`make-data classification`), an MLP 256-256,
            the HGB baseline on its default row cap, explanations on;
  detect    the same features without the label, the autoencoder detector;
  rules     baskets (`make-data baskets`: 1,000 items, ~10 per basket), the exact miner,
            min_support 0.5%, max_len 4, the rules written out. Its rows are transactions.

Under the job default, input of at most 256 MiB runs in the driver without Ray (the 1M-row
table, 193 MB, does) and larger input through Ray; `--driver-max-mb 0` sends both sizes through
Ray, which compares one path with itself.

Per run: wall time, the stages' own times (as the run prints them), peak summed PSS and RSS of
the process tree (a local Ray started by the run is part of it), and the cores other processes
used meanwhile (a WARNING above 0.2: the run shared the machine; discard it). The ratio
large / small wall time is printed beside the row ratio: at most 10.5 for 10x the rows is the
issue's bar for "linear".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peak_memory import run_measured  # noqa: E402

SMOKE = {"small": 20_000, "large": 100_000, "cases": ["classify"], "data": None}


def _busy() -> float:
    m = psutil.cpu_times()
    return m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0) + getattr(m, "steal", 0)


def _tree_cpu(pids: list[int], seen: dict[int, float]) -> None:
    for p in pids:
        try:
            t = psutil.Process(p).cpu_times()
            seen[p] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall time, stage times, peak tree PSS/RSS and the cores others used."""
    b0 = _busy()
    cpu: dict[int, float] = {}
    with open(log, "w") as out:
        code, wall, peak = run_measured(cmd, 1.0, lambda pids: _tree_cpu(pids, cpu), stdout=out,
                                        stderr=subprocess.STDOUT)
    # the tree's CPU: what its processes used (the last reading of each; processes that ended between
    # readings are missed, so "others" is an upper bound)
    others = max(0.0, (_busy() - b0) - sum(cpu.values())) / wall
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({code}):\n{text[-3000:]}")
    stages = {}
    for line in text.splitlines():
        line = line.strip()
        if line.endswith("s") and " took " in line:
            stage, secs = line.rsplit(" took ", 1)
            try:
                stages[stage] = float(secs[:-1])
            except ValueError:
                pass
    return {"wall_s": round(wall, 1), "peak_pss_gib": round(peak["pss"] / 2**30, 2),
            "peak_rss_gib": round(peak["rss"] / 2**30, 2), "others_cores": round(others, 2), "stages": stages}


def make(kind: str, rows: int, root: Path) -> Path:
    out, done = root / f"{kind}_{rows}", root / f"{kind}_{rows}.done"
    if not done.exists():  # (make-data writes the folder whole or not at all)
        shards = max(2, min(64, rows // 250_000))
        shape = ["--items", "1000", "--avg-items", "10"] if kind == "baskets" else ["--features", "32"]
        subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "make-data", kind, "--rows", str(rows),
                        *shape, "--shards", str(shards), "--output", str(out), "--overwrite"],
                       check=True, capture_output=True)
        done.write_text("")
    return out


def job(case: str, data: Path, epochs: int, driver_max_mb=None) -> dict:
    base = {"name": f"scale_{case}", "knowledge": "off",
            **({"scaling": {"driver_max_mb": driver_max_mb}} if driver_max_mb is not None else {}),
            "model": {"kind": "mlp", "hidden": [256, 256], "dropout": 0.1},
            "train": {"epochs": epochs, "batch_size": 1024, "lr": 0.001, "early_stopping": 0}}
    if case == "rules":
        return {"name": "scale_rules", "task": "rules", "knowledge": "off",
                **({"scaling": {"driver_max_mb": driver_max_mb}} if driver_max_mb is not None else {}),
                "data": {"path": str(data), "items": "items", "target": None},
                "rules": {"min_support": 0.005, "min_confidence": 0.5, "max_len": 4, "miner": "exact"}}
    if case == "classify":
        return {**base, "task": "classify", "data": {"path": str(data), "target": "label", "id": "row_id",
                                                      "split": {"valid": 0.05, "test": 0.05, "seed": 0}}}
    return {**base, "task": "detect", "model": {"hidden": [64, 32], "latent": 8},
            "data": {"path": str(data), "target": None, "id": "row_id", "ignore": ["label"],
                     "split": {"valid": 0.05, "test": 0.05, "seed": 0}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=["classify", "detect", "rules"],
                    default=["classify", "detect"])
    ap.add_argument("--small", type=int, default=1_000_000)
    ap.add_argument("--large", type=int, default=10_000_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", default="/tmp/dlmine_scale", help="where the made datasets are kept")
    ap.add_argument("--driver-max-mb", type=float, default=None,
                    help="the jobs' scaling.driver_max_mb (default: the job default, under which small input "
                         "runs in the driver without Ray; 0: every run through Ray)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--smoke", action="store_true", help=f"a short run that checks the script works: {SMOKE}")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="dlmine_scale_"))
    root = Path(args.data) if args.data else work / "data"
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    for case in args.cases:
        for rows in (args.small, args.large):
            data = make("baskets" if case == "rules" else "classification", rows, root)
            jf = work / f"{case}_{rows}.yaml"
            jf.write_text(yaml.safe_dump(job(case, data, args.epochs, args.driver_max_mb)))
            out = work / f"run_{case}_{rows}"
            r = measure([sys.executable, "-m", "dlmine_ray.cli", "run", str(jf), "--output", str(out),
                         "--overwrite"], work / f"{case}_{rows}.log")
            m = json.loads((out / "metrics.json").read_text())
            r["metrics"] = {k: m[k] for k in ("accuracy", "baseline_accuracy", "roc_auc", "train_seconds",
                                              "trainer", "rows_train", "rows", "n_itemsets", "n_rules",
                                              "mining_seconds", "mined_in") if k in m}
            results[f"{case} {rows:,}"] = r
            print(f"{case:9s} {rows:>11,} rows: wall {r['wall_s']:7.1f} s, peak PSS {r['peak_pss_gib']:.2f} GiB "
                  f"(RSS {r['peak_rss_gib']:.2f}), others {r['others_cores']:.2f} cores; "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()), flush=True)
        small, large = results[f"{case} {args.small:,}"], results[f"{case} {args.large:,}"]
        print(f"{case}: {args.large // args.small}x the rows took {large['wall_s'] / small['wall_s']:.2f}x the "
              f"wall time; peak PSS {small['peak_pss_gib']:.2f} -> {large['peak_pss_gib']:.2f} GiB", flush=True)
    busy = [k for k, r in results.items() if r["others_cores"] > 0.2]
    if busy:
        print("WARNING: other processes used > 0.2 cores during: " + ", ".join(busy) + " (discard these runs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
