"""Exact frequent-itemset mining: ours (parallel FP-Growth on Ray) against mlxtend's fpgrowth
and pyfim's fpgrowth (Borgelt's C code, one process), on the same synthetic baskets, in one run.

For each size (default 100k and 1M baskets, 1,000 items, Zipf-like popularity, ~10 items per
basket; `dlmine make-data baskets`) and min_support (0.5% and 0.2%):
  ours    count items + mine (dlmine_ray.mining.passes.count_items / mine_frequent) on the
          transactions already read into Ray's object store;
  mlxtend TransactionEncoder (sparse) + fpgrowth, from Python lists in memory;
  pyfim   fim.fpgrowth from the same Python lists.
Reading is not timed for anyone. The three must find the same itemsets (checked). Ratios > 1
mean ours is faster: mlxtend/ours and pyfim/ours. Before the table, one small warm-up run
starts Ray's worker processes and loads the compiled local miner (its time is printed: the
cost a cold cluster pays once); the figures after it are warm.

Memory: each miner then runs once more in a fresh process of its own (ours with a fresh local
Ray: its workers and the raylet holding the object store are that process's descendants),
while a thread samples the summed PSS of the process tree; the figure is the peak above the
value just before the call, so the input already held (Python lists; blocks in the object
store) does not count. A fresh process keeps memory freed by an earlier call, which the
allocator keeps, from hiding the next call's peak. Skip it with --no-memory.

    python benchmarks/bench_rules.py [--sizes 100000 1000000] [--supports 0.005 0.002]
                                     [--mlxtend-max 100000] [--cpus 2] [--no-memory]
    python benchmarks/bench_rules.py --smoke   # seconds, tiny sizes; skips pyfim when it is not installed
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


#: --smoke: tiny baskets, one CPU; the memory pass still runs (fresh processes)
SMOKE = {"sizes": [3000], "supports": [0.02], "items": 60, "avg_items": 4.0, "cpus": 1}


def dense_table(n: int, columns: int, values: int, folder: str, classes: int = 5, seed: int = 0) -> str:
    """A dense categorical table as transactions (Parquet, ``items``: one ``c<j>=<v>`` per column):
    each row belongs to one of ``classes`` hidden groups, and each column's value is drawn from
    its group's own distribution (Dirichlet(0.6) over ``values``), so columns are correlated and
    long itemsets are frequent, as in the classic dense benchmarks (chess, connect, mushroom)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)  # the distributions first, so that every n draws from the same ones
    cums = [np.cumsum(rng.dirichlet(np.full(values, 0.6), size=classes), axis=1) for _ in range(columns)]
    group = rng.integers(0, classes, n)
    cols = []
    for j, cum in enumerate(cums):
        v = (rng.random(n)[:, None] > cum[group]).sum(axis=1)
        cols.append(np.char.add(f"c{j}=", v.astype(str)))
    items = np.stack(cols, axis=1)
    os.makedirs(folder, exist_ok=True)
    shards = max(4, n // 100_000)
    for k, part in enumerate(np.array_split(np.arange(n), shards)):
        offsets = pa.array(np.arange(0, (len(part) + 1) * columns, columns, dtype=np.int32))
        lists = pa.ListArray.from_arrays(offsets, pa.array(items[part].ravel()))
        pq.write_table(pa.table({"basket_id": pa.array(part), "items": lists}), f"{folder}/part-{k:05d}.parquet")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--supports", type=float, nargs="+", default=[0.005, 0.002])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--avg-items", type=float, default=10.0)
    ap.add_argument("--mlxtend-max", type=int, default=100_000, help="skip mlxtend above this many baskets")
    ap.add_argument("--dense", type=int, default=0, metavar="COLUMNS",
                    help="mine a dense categorical table of this many columns instead of baskets "
                         "(each row one transaction of COLUMNS column=value items; see dense_table)")
    ap.add_argument("--values", type=int, default=3, help="--dense: values per column")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    ap.add_argument("--one", nargs=3, metavar=("MINER", "PATH", "MIN_COUNT"), help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true",
                    help="a seconds-long run at tiny sizes that only checks the script works (CI); defaults "
                         f"become {SMOKE}, explicit options still win; pyfim is skipped when it is not installed")
    known = ap.parse_known_args()[0]
    if known.smoke:
        ap.set_defaults(**SMOKE)
    if known.dense:
        ap.set_defaults(supports=[0.10, 0.05])
    args = ap.parse_args()

    try:
        import fim
    except ImportError:
        if not args.smoke and (not args.one or args.one[0] == "pyfim"):
            raise SystemExit("bench_rules.py compares with pyfim: pip install -e \".[bench]\" (--smoke skips it)")
        fim = None
        if not args.one:
            print("pyfim is not installed: its column is skipped (nan)", flush=True)
    import pandas as pd
    import pyarrow.parquet as pq
    from mlxtend.frequent_patterns import fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    from dlmine_ray.data.baskets import transactions
    from dlmine_ray.data.read import read_dataset
    from dlmine_ray.data.synthetic import make_data
    from dlmine_ray.mining.passes import count_items, mine_frequent
    from dlmine_ray.runtime.session import ray_session
    from dlmine_ray.spec import spec_from_dict
    from peak_memory import TreePeak

    def read(path):
        spec = spec_from_dict({"task": "rules", "data": {"path": str(path), "items": "items"}})
        return transactions(read_dataset(str(path)), spec).materialize()

    def ours(tx, min_count):
        _, counts, encoded = count_items(tx)
        freq = sorted((i for i, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
        found = mine_frequent(encoded, {i: r for r, i in enumerate(freq)}, args.cpus, min_count, None)
        return {frozenset(freq[i] for i in k): c for k, c in found.items()}

    def pyfim(lists, min_count):
        return {frozenset(k): c for k, c in fim.fpgrowth(lists, target="s", supp=-min_count, report="a")}

    def mlxtend(lists, min_count):
        te = TransactionEncoder()
        onehot = pd.DataFrame.sparse.from_spmatrix(te.fit(lists).transform(lists, sparse=True), columns=te.columns_)
        found = fpgrowth(onehot, min_support=min_count / len(lists) - 1e-12, use_colnames=True)
        return {frozenset(k): int(round(v * len(lists))) for k, v in zip(found["itemsets"], found["support"])}

    def timed(fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        return time.perf_counter() - t, out

    def peak(miner, path, min_count):
        """Peak MiB above the start of the call, measured in a fresh process."""
        if args.no_memory:
            return float("nan")
        out = subprocess.run([sys.executable, __file__, "--one", miner, str(path), str(min_count),
                              "--cpus", str(args.cpus)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"memory run of {miner} failed:\n{out.stderr[-2000:]}")
        return float(out.stdout.strip().splitlines()[-1])

    if args.one:
        miner, path, min_count = args.one[0], args.one[1], int(args.one[2])
        lists = [sorted(set(b)) for b in pq.read_table(path).column("items").to_pylist()]
        if miner == "ours":
            with ray_session(None, False, args.cpus):
                tx = read(path)
                warm = tempfile.mkdtemp(prefix="dlmine_bench_warm_")
                try:
                    ours(read(make_data("baskets", 2000, 1, 2, f"{warm}/b", items=50, avg_items=4)), 20)
                finally:
                    shutil.rmtree(warm, ignore_errors=True)
                with TreePeak(interval=0.02) as m:
                    ours(tx, min_count)
        else:
            with TreePeak(interval=0.02) as m:
                (pyfim if miner == "pyfim" else mlxtend)(lists, min_count)
        print(m.extra / 2**20)
        return

    tmp = tempfile.mkdtemp(prefix="dlmine_bench_rules_")
    rows = []
    try:
        with ray_session(None, False, args.cpus):
            warm = make_data("baskets", 2000, 1, 2, f"{tmp}/warm", items=50, avg_items=4)
            cold, _ = timed(ours, read(warm), 20)
            print(f"warm-up (2,000 baskets; starts workers, loads the compiled miner): {cold:.2f}s", flush=True)
            for n in args.sizes:
                path = (dense_table(n, args.dense, args.values, f"{tmp}/d{n}") if args.dense else
                        make_data("baskets", n, 1, max(4, n // 100_000), f"{tmp}/b{n}", items=args.items,
                                  avg_items=args.avg_items))
                lists = [sorted(set(b)) for b in pq.read_table(path).column("items").to_pylist()]
                tx = read(path)
                for sup in args.supports:
                    min_count = max(1, math.ceil(sup * n - 1e-9))
                    t_ours, found = timed(ours, tx, min_count)
                    t_fim = m_fim = float("nan")
                    same = True
                    if fim is not None:
                        t_fim, theirs = timed(pyfim, lists, min_count)
                        same = found == theirs
                    t_mlx = m_mlx = float("nan")
                    if n <= args.mlxtend_max:
                        t_mlx, by_mlx = timed(mlxtend, lists, min_count)
                        same = same and by_mlx == found
                        m_mlx = peak("mlxtend", path, min_count)
                    m_ours = peak("ours", path, min_count)
                    if fim is not None:
                        m_fim = peak("pyfim", path, min_count)
                    rows.append((n, sup, t_ours, t_fim, t_mlx, m_ours, m_fim, m_mlx))
                    print(f"{n:>9,} {'rows' if args.dense else 'baskets'}  min_support {sup:.3%}  {len(found):>6,} itemsets  same itemsets: {same}\n"
                          f"    seconds   ours {t_ours:6.2f}  pyfim {t_fim:6.2f}  mlxtend {t_mlx:7.2f}\n"
                          f"    peak MiB  ours {m_ours:6.0f}  pyfim {m_fim:6.0f}  mlxtend {m_mlx:7.0f}", flush=True)
                    if not same:
                        raise SystemExit("the miners disagree")
                del tx
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nratios (> 1: ours faster / smaller)")
    print(f"{'baskets':>10} {'support':>8} {'mlxtend/ours':>13} {'pyfim/ours':>11} {'MiB pyfim/ours':>15} "
          f"{'MiB mlxtend/ours':>17}")
    def ratio(a, b):
        return a / b if b > 0 else float("nan")

    for n, sup, t_ours, t_fim, t_mlx, m_ours, m_fim, m_mlx in rows:
        print(f"{n:>10,} {sup:>8.3%} {t_mlx / t_ours:>13.2f} {t_fim / t_ours:>11.2f} {ratio(m_fim, m_ours):>15.2f} "
              f"{ratio(m_mlx, m_ours):>17.2f}")


if __name__ == "__main__":
    main()
