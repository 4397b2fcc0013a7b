#!/usr/bin/env python
"""Small-input exact rules, from a user's command: `dlmine run` of an exact-miner rules job on
`builtin:baskets` (20,000 synthetic baskets, 200 items) against mlxtend on the same baskets.

  python benchmarks/bench_rules_small.py [--repeats 3] [--min-support 0.01] [--max-len 4]
  python benchmarks/bench_rules_small.py --smoke   # one repeat (CI)

Ours, each a fresh `dlmine run` process: the job as a user writes it (small input is counted and
mined in the driver, `scaling.driver_max_mb`) and the same job through a fresh local Ray
(`scaling.driver_max_mb: 0`); the figure is the run's `mining_seconds` (counting items, mining
every frequent itemset, generating the rules; reading and writing excluded), and the command's
wall time beside it. mlxtend, in this process on the same baskets as Python lists:
TransactionEncoder (sparse) + fpgrowth + association_rules with the same min_support, max_len and
min_confidence. Both must find the same number of itemsets (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def ours(job: dict, work: Path, name: str, *extra: str) -> dict:
    jf = work / f"{name}.yaml"
    jf.write_text(yaml.safe_dump(job))
    out = work / name
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "run", str(jf), "--output", str(out), "--overwrite",
                        *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"mining_s": m["mining_seconds"], "wall_s": wall, "itemsets": m["n_itemsets"], "rules": m["n_rules"],
            "mined_in": m["mined_in"]}


def mlxtend_run(baskets: list, min_support: float, max_len: int, min_confidence: float) -> dict:
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    t0 = time.perf_counter()
    te = TransactionEncoder()
    onehot = te.fit(baskets).transform(baskets, sparse=True)
    frame = pd.DataFrame.sparse.from_spmatrix(onehot, columns=te.columns_)
    sets = fpgrowth(frame, min_support=min_support, max_len=max_len, use_colnames=True)
    rules = association_rules(sets, metric="confidence", min_threshold=min_confidence, num_itemsets=len(baskets))
    return {"mining_s": time.perf_counter() - t0, "itemsets": len(sets), "rules": len(rules)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-support", type=float, default=0.01)
    ap.add_argument("--max-len", type=int, default=4)
    ap.add_argument("--min-confidence", type=float, default=0.6)
    ap.add_argument("--smoke", action="store_true", help="one repeat")
    args = ap.parse_args()
    if args.smoke:
        args.repeats = 1
    from dlmine_ray.data.read import read_table_here

    baskets = read_table_here("builtin:baskets").column("items").to_pylist()
    job = {"name": "small-rules", "task": "rules", "knowledge": "off",
           "data": {"path": "builtin:baskets", "items": "items", "target": None},
           "rules": {"min_support": args.min_support, "min_confidence": args.min_confidence, "max_len": args.max_len,
                     "min_lift": 0.0, "miner": "exact"}}
    res = {"driver": [], "ray": [], "mlxtend": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):  # interleaved, so that drift hits every case alike
            res["driver"].append(ours(job, work, "driver"))
            res["ray"].append(ours(job, work, "ray", "--set", "scaling.driver_max_mb=0"))
            res["mlxtend"].append(mlxtend_run(baskets, args.min_support, args.max_len, args.min_confidence))
    print(f"\n{len(baskets):,} baskets, min_support {args.min_support}, max_len {args.max_len}, "
          f"min_confidence {args.min_confidence}; median of {args.repeats}")
    print(f"{'miner':28s} {'mining s':>9s} {'wall s':>8s} {'itemsets':>9s} {'rules':>7s}")
    med = {}
    for name, label in (("driver", "ours, in the driver"), ("ray", "ours, through a fresh Ray"),
                        ("mlxtend", "mlxtend fpgrowth + rules")):
        rs = res[name]
        med[name] = statistics.median(r["mining_s"] for r in rs)
        wall = f"{statistics.median(r['wall_s'] for r in rs):8.1f}" if "wall_s" in rs[0] else f"{'-':>8s}"
        print(f"{label:28s} {med[name]:9.3f} {wall} {rs[0]['itemsets']:9,} {rs[0]['rules']:7,}")
    if res["driver"][0]["itemsets"] != res["mlxtend"][0]["itemsets"]:
        raise SystemExit("the miners found different numbers of itemsets")
    print(f"\nmlxtend / ours in the driver: {med['mlxtend'] / med['driver']:.2f} (above 1: ours faster); "
          f"mlxtend / ours through Ray: {med['mlxtend'] / med['ray']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
