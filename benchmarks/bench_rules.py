"""Exact frequent-itemset mining: ours (parallel FP-Growth on Ray) against mlxtend's fpgrowth
and pyfim's fpgrowth (Borgelt's C code, one process), on the same synthetic baskets, in one run.

For each size (default 100k and 1M baskets, 1,000 items, Zipf-like popularity, ~10 items per
basket; `dlmine make-data baskets`) and min_support (0.5% and 0.2%):
  ours    count items + mine (dlmine_ray.data.transactions.count_items / mine_frequent) on the
          transactions already read into Ray's object store;
  mlxtend TransactionEncoder (sparse) + fpgrowth, from Python lists in memory;
  pyfim   fim.fpgrowth from the same Python lists.
Reading is not timed for anyone. The three must find the same itemsets (checked). Ratios > 1
mean ours is faster: mlxtend/ours and pyfim/ours.

    python benchmarks/bench_rules.py [--sizes 100000 1000000] [--supports 0.005 0.002]
                                     [--mlxtend-max 100000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--supports", type=float, nargs="+", default=[0.005, 0.002])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--avg-items", type=float, default=10.0)
    ap.add_argument("--mlxtend-max", type=int, default=100_000, help="skip mlxtend above this many baskets")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    import fim
    import pyarrow.parquet as pq

    from dlmine_ray.cluster import ray_session
    from dlmine_ray.data.read import read_dataset
    from dlmine_ray.data.synthetic import make_data
    from dlmine_ray.data.transactions import count_items, mine_frequent, transactions
    from dlmine_ray.spec import spec_from_dict

    tmp = tempfile.mkdtemp(prefix="dlmine_bench_rules_")
    rows = []
    try:
        with ray_session(None, False, args.cpus):
            for n in args.sizes:
                path = make_data("baskets", n, 1, max(4, n // 100_000), f"{tmp}/b{n}", items=args.items,
                                 avg_items=args.avg_items)
                lists = [sorted(set(b)) for b in pq.read_table(path).column("items").to_pylist()]
                spec = spec_from_dict({"task": "rules", "data": {"path": str(path), "items": "items"}})
                tx = transactions(read_dataset(str(path)), spec).materialize()
                for sup in args.supports:
                    min_count = max(1, math.ceil(sup * n - 1e-9))
                    t = time.perf_counter()
                    total, counts = count_items(tx)
                    freq = sorted((i for i, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
                    ours = mine_frequent(tx, {i: r for r, i in enumerate(freq)}, args.cpus, min_count, None)
                    t_ours = time.perf_counter() - t

                    t = time.perf_counter()
                    theirs = fim.fpgrowth(lists, target="s", supp=-min_count, report="a")
                    t_fim = time.perf_counter() - t
                    names = {i: name for i, name in enumerate(freq)}
                    same = {frozenset(names[i] for i in k): c for k, c in ours.items()} == \
                        {frozenset(k): c for k, c in theirs}

                    t_mlx, n_mlx = float("nan"), None
                    if n <= args.mlxtend_max:
                        import pandas as pd
                        from mlxtend.frequent_patterns import fpgrowth
                        from mlxtend.preprocessing import TransactionEncoder

                        t = time.perf_counter()
                        te = TransactionEncoder()
                        onehot = pd.DataFrame.sparse.from_spmatrix(te.fit(lists).transform(lists, sparse=True),
                                                                   columns=te.columns_)
                        n_mlx = len(fpgrowth(onehot, min_support=min_count / n - 1e-12))
                        t_mlx = time.perf_counter() - t
                    rows.append((n, sup, len(ours), t_ours, t_fim, t_mlx, same and (n_mlx in (None, len(ours)))))
                    print(f"{n:>9,} baskets  min_support {sup:.3%}  {len(ours):>6,} itemsets  ours {t_ours:6.2f}s  "
                          f"pyfim {t_fim:6.2f}s  mlxtend {t_mlx:7.2f}s  same itemsets: {rows[-1][-1]}", flush=True)
                del tx
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nratios (> 1: ours faster)")
    print(f"{'baskets':>10} {'support':>8} {'mlxtend/ours':>13} {'pyfim/ours':>11}")
    for n, sup, _, t_ours, t_fim, t_mlx, _ in rows:
        print(f"{n:>10,} {sup:>8.3%} {t_mlx / t_ours:>13.2f} {t_fim / t_ours:>11.2f}")


if __name__ == "__main__":
    main()
