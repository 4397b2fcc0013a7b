"""The run of a ``rules`` job: transactions -> item counts -> parallel FP-Growth -> rules ->
itemsets.parquet, rules.parquet, metrics.json, report.html. Exact: the same itemsets and counts
as any correct miner."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from dlmine_ray.data.transactions import count_items, mine_frequent, transactions
from dlmine_ray.mining.itemsets import association_rules, min_count_for
from dlmine_ray.outputs import write_json, write_parquet_batches

_LIST = pa.list_(pa.string())


def _itemset_table(itemsets: dict[tuple, int], names: np.ndarray, n: int) -> pa.Table:
    keys = sorted(itemsets, key=lambda k: (-itemsets[k], len(k), k))
    counts = np.asarray([itemsets[k] for k in keys], dtype=np.int64)
    return pa.table({"itemset": pa.array([names[list(k)].tolist() for k in keys], type=_LIST),
                     "size": pa.array([len(k) for k in keys], type=pa.int32()),
                     "count": counts, "support": counts / max(n, 1)})


def _rules_table(rules: pd.DataFrame, names: np.ndarray) -> pa.Table:
    rules = rules.sort_values(["lift", "confidence", "support"], ascending=False, kind="stable")
    return pa.table({"antecedent": pa.array([names[list(a)].tolist() for a in rules["antecedent"]], type=_LIST),
                     "consequent": pa.array([names[list(c)].tolist() for c in rules["consequent"]], type=_LIST),
                     **{c: rules[c].to_numpy(np.float64) for c in ("support", "confidence", "lift", "leverage",
                                                                    "conviction")},
                     "count": rules["count"].to_numpy(np.int64)})


def run_rules(spec, ds, folder, rep, cluster_cpus: float, t_start: float):
    """Mine a rules job's data; write its outputs into ``folder``; return the RunResult."""
    from dlmine_ray.runner import RunResult

    r = spec.rules
    rep.stage("reading transactions", _shape(spec))
    tx = transactions(ds, spec).materialize()
    rep.stage("counting items", "one Ray Data pass")
    t0 = time.perf_counter()
    n, counts = count_items(tx)
    if n == 0:
        from dlmine_ray.errors import DlmineError

        raise DlmineError("the dataset is empty: no transactions were read")
    min_count = min_count_for(r.min_support, n)
    frequent = sorted((item for item, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
    names = np.asarray(frequent, dtype=object)
    rep.info(f"{n:,} transactions, {len(counts):,} distinct items, {len(frequent):,} frequent "
             f"(min_support {r.min_support} = {min_count:,} transactions)")
    groups = r.groups or max(1, int(cluster_cpus))
    itemsets: dict[tuple, int] = {}
    if frequent:
        rep.stage("mining", f"parallel FP-Growth, {groups} item group(s)" + (f", max_len {r.max_len}" if r.max_len
                                                                             else ""))
        itemsets = mine_frequent(tx, {item: i for i, item in enumerate(frequent)}, groups, min_count, r.max_len)
    else:
        rep.info(f"no item reaches min_support {r.min_support} ({min_count:,} of {n:,} transactions): "
                 "no itemsets and no rules; lower rules.min_support")
    rules = association_rules(itemsets, n, r.min_confidence)
    mining_seconds = time.perf_counter() - t0
    rep.info(f"{len(itemsets):,} frequent itemsets, {len(rules):,} rules at min_confidence {r.min_confidence}")

    rep.stage("writing", "itemsets, rules, metrics, report")
    items_tab = _itemset_table(itemsets, names, n)
    rules_tab = _rules_table(rules, names)
    metrics: dict[str, Any] = {"task": "rules", "n_transactions": int(n), "n_items": int(len(counts)),
                               "n_frequent_items": int(len(frequent)), "n_itemsets": int(len(itemsets)),
                               "n_rules": int(len(rules)), "min_count": int(min_count),
                               "mining_seconds": round(mining_seconds, 3), "groups": int(groups)}
    if not frequent:
        metrics["message"] = f"no item reaches min_support {r.min_support} ({min_count} transactions)"
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
    write_parquet_batches(folder.path("itemsets.parquet"), [items_tab])
    write_parquet_batches(folder.path("rules.parquet"), [rules_tab])
    write_json(folder.path("metrics.json"), metrics)
    folder.path("job.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    from dlmine_ray.report.rules import write_rules_report

    write_rules_report(folder.path("report.html"), spec, metrics, rules_tab.to_pandas())
    return RunResult(folder.final, metrics, spec, None, {"mining_seconds": mining_seconds})


def _shape(spec) -> str:
    d = spec.data
    if d.transaction:
        return f"one item per row: transaction '{d.transaction}', item '{d.items}'"
    if d.items:
        return f"baskets: list column '{d.items}'"
    return "a table: every column=value is an item"
