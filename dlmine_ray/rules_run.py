"""The run of a ``rules`` job: transactions -> item counts -> parallel FP-Growth -> rules ->
itemsets.parquet, rules.parquet, metrics.json, report.html. Exact: the same itemsets and counts
as any correct miner."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from dlmine_ray.data.transactions import count_items, mine_frequent, transactions
from dlmine_ray.mining.itemsets import association_rules, min_count_for, rule_table
from dlmine_ray.mining.local import compile_all
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


def run_rules(spec, ds, folder, rep, cluster_cpus: float, t_start: float, storage: str = "",
              local_storage: str = ""):
    """Mine a rules job's data; write its outputs into ``folder``; return the RunResult."""
    from dlmine_ray.runner import RunResult

    r = spec.rules
    rep.stage("reading transactions", _shape(spec))
    tx = transactions(ds, spec).materialize()
    rep.stage("counting items", "one Ray Data pass")
    t0 = time.perf_counter()
    # the local miner is compiled with numba: compile it (first run after an install) or load it
    # from numba's cache here, while the workers count, so that the mining tasks find it cached
    compiled: list[float] = []
    warm = threading.Thread(target=lambda: compiled.append(compile_all()), daemon=True)
    if r.miner in ("exact", "both"):
        warm.start()
    n, counts, encoded = count_items(tx)
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
    if warm.ident is not None:  # started
        warm.join()
        if compiled and compiled[0] > 2:
            rep.info(f"compiled the local miner (once after an install; numba caches it): {compiled[0]:.0f}s")
    if frequent and r.miner in ("exact", "both"):
        rep.stage("mining", f"parallel FP-Growth, {groups} item group(s)" + (f", max_len {r.max_len}" if r.max_len
                                                                             else ""))
        itemsets = mine_frequent(encoded, {item: i for i, item in enumerate(frequent)}, groups, min_count, r.max_len)
    elif not frequent:
        rep.info(f"no item reaches min_support {r.min_support} ({min_count:,} of {n:,} transactions): "
                 "no itemsets and no rules; lower rules.min_support")
    rules = association_rules(itemsets, n, r.min_confidence)
    mining_seconds = time.perf_counter() - t0  # counting + exact mining + rules
    if r.miner in ("exact", "both"):
        rep.info(f"{len(itemsets):,} frequent itemsets, {len(rules):,} rules at min_confidence {r.min_confidence}")
    neural = None
    if frequent and r.miner in ("neural", "both"):
        neural = _neural_rules(spec, tx, encoded, frequent, counts, n, min_count, rep, cluster_cpus, storage,
                               local_storage)

    rep.stage("writing", "itemsets, rules, metrics, report")
    items_tab = _itemset_table(itemsets, names, n)
    rules_tab = _rules_table(rules, names)
    metrics: dict[str, Any] = {"task": "rules", "n_transactions": int(n), "n_items": int(len(counts)),
                               "n_frequent_items": int(len(frequent)), "n_itemsets": int(len(itemsets)),
                               "n_rules": int(len(rules)), "min_count": int(min_count),
                               "mining_seconds": round(mining_seconds, 3), "groups": int(groups)}
    if neural is not None:
        metrics.update({"n_rules_neural": int(len(neural["rules"])), "n_candidates_neural": neural["candidates"],
                        "neural_seconds": round(neural["seconds"], 3),
                        "neural_training_transactions": int(neural["trained_on"])})
        if r.miner == "both":
            metrics["neural_top_recall"] = _top_recall(rules, neural["rules"], r.neural_antecedent, r.top)
        if r.miner == "neural":  # no itemsets are enumerated: rules.parquet holds the neural rules
            metrics.update({"mining_seconds": round(neural["seconds"], 3), "n_rules": int(len(neural["rules"]))})
    if not frequent:
        metrics["message"] = f"no item reaches min_support {r.min_support} ({min_count} transactions)"
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
    write_parquet_batches(folder.path("itemsets.parquet"), [items_tab])
    neural_tab = _rules_table(neural["rules"], names) if neural is not None else None
    if neural is not None:
        if r.miner == "neural":
            rules_tab = neural_tab
        else:
            write_parquet_batches(folder.path("neural_rules.parquet"), [neural_tab])
    write_parquet_batches(folder.path("rules.parquet"), [rules_tab])
    write_json(folder.path("metrics.json"), metrics)
    folder.path("job.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    from dlmine_ray.report.rules import write_rules_report

    write_rules_report(folder.path("report.html"), spec, metrics, rules_tab.to_pandas(),
                       neural_tab.to_pandas() if neural_tab is not None else None)
    return RunResult(folder.final, metrics, spec, None, {"mining_seconds": mining_seconds})


def _shape(spec) -> str:
    d = spec.data
    if d.transaction:
        return f"one item per row: transaction '{d.transaction}', item '{d.items}'"
    if d.items:
        return f"baskets: list column '{d.items}'"
    return "a table: every column=value is an item"


def _neural_rules(spec, tx, encoded, frequent, counts, n, min_count, rep, cluster_cpus, storage,
                  local_storage) -> dict:
    """Train the item autoencoder with the generic loop, probe it for candidate rules, recount
    every candidate exactly; return {"rules": DataFrame (rank tuples), "candidates", "seconds",
    "trained_on"}."""
    import os

    import torch

    from dlmine_ray.data.transactions import count_rules, multi_hot
    from dlmine_ray.progress import BoardWatcher, make_board
    from dlmine_ray.runner import _fit
    from dlmine_ray.tasks import get_task
    from dlmine_ray.tasks.rules import candidate_rules
    from dlmine_ray.train.trainer import use_ray_train

    r = spec.rules
    t0 = time.perf_counter()
    task = get_task("rules")
    ranks = {item: i for i, item in enumerate(frequent)}
    sampled = n > r.neural_sample
    hot = multi_hot(tx.random_sample(r.neural_sample / n, seed=spec.train.seed) if sampled else tx, ranks,
                    len(frequent)).materialize()
    trained_on = hot.count() if sampled else n
    if sampled:
        rep.info(f"the autoencoder trains on a random sample of {trained_on:,} of {n:,} transactions "
                 "(rules.neural_sample); the recount uses all of them")
    info = task.initial_info(spec, frequent)
    big = use_ray_train(spec, hot.size_bytes())
    rep.stage("neural mining", f"autoencoder over {len(frequent):,} items, "
                               f"{'Ray Train workers' if big else 'one Ray task'}, up to {spec.train.epochs} epochs")
    layout = {"n_features": len(frequent), "info": info, "has_valid": False, "stage": "fit",
              "train": spec.train.model_dump()}
    board = make_board()
    with BoardWatcher(board, rep):
        outcome = _fit(spec, {"train": hot}, layout, storage, board, cluster_cpus,
                       os.path.join(local_storage, "neural"), big)
    model = task.build_model(len(frequent), info, spec.model.model_dump())
    model.load_state_dict(torch.load(outcome.state_path, map_location="cpu", weights_only=True))
    t_trained = time.perf_counter()
    priors = np.asarray([counts[i] / n for i in frequent], dtype=np.float32)
    cands = candidate_rules(model, priors, r.neural_antecedent, r.neural_threshold)
    t_probed = time.perf_counter()
    rep.info(f"trained in {t_trained - t0:.1f}s; {len(cands):,} candidate rules from probing in "
             f"{t_probed - t_trained:.1f}s; recounting them on the data")
    n_ant, both = count_rules(encoded, ranks, cands)
    keep = np.flatnonzero((both >= min_count) & (n_ant > 0) & (both >= r.min_confidence * n_ant - 1e-9))
    ants = [tuple(sorted(cands[i][0])) for i in keep]
    cons = [(cands[i][1],) for i in keep]
    both_counts, ant_counts = both[keep], n_ant[keep]
    con_counts = [counts[frequent[c]] for (c,) in cons]
    out = rule_table(ants, cons, both_counts, ant_counts, con_counts, n)
    rep.info(f"{len(out):,} neural rules meet min_support and min_confidence (exact counts; recount "
             f"{time.perf_counter() - t_probed:.1f}s)")
    return {"rules": out, "candidates": len(cands), "seconds": time.perf_counter() - t0, "trained_on": trained_on}


def _top_recall(exact: pd.DataFrame, neural: pd.DataFrame, max_antecedent: int, top: int) -> float:
    """The share of the exact miner's ``top`` rules by lift (of the form the neural miner can
    find: one consequent, at most ``max_antecedent`` antecedent items) that the neural miner found."""
    form = exact[(exact["consequent"].map(len) == 1) & (exact["antecedent"].map(len) <= max_antecedent)]
    best = form.sort_values("lift", ascending=False, kind="stable").head(top)
    if not len(best):
        return float("nan")
    found = {(tuple(a), tuple(c)) for a, c in zip(neural["antecedent"], neural["consequent"])}
    return float(np.mean([(tuple(a), tuple(c)) in found for a, c in zip(best["antecedent"], best["consequent"])]))
