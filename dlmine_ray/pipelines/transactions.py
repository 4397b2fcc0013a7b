"""The pipeline of transaction tasks (``data_kind = "transactions"``: the rules task), one
straight read: read -> transactions -> item counts -> parallel FP-Growth -> rules (exact: the
same itemsets and counts as any correct miner) and, with ``miner: neural|both``, the task's item
autoencoder trained by fit_stages, probed for rules that are then recounted exactly -> the
output tail (itemsets.parquet and rules.parquet are streamed as they are mined)."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from dlmine_ray.data.baskets import transactions
from dlmine_ray.data.local import read_local
from dlmine_ray.data.read import read_dataset
from dlmine_ray.errors import DlmineError
from dlmine_ray.mining.itemsets import min_count_for, rule_measures, rule_table
from dlmine_ray.mining.local import compile_all
from dlmine_ray.mining.passes import count_items, mine_tree
from dlmine_ray.pipelines.context import RunContext, RunResult
from dlmine_ray.pipelines.write import write_outputs, write_parquet_batches

_LIST = pa.list_(pa.string())
ITEMSET_CHUNK = 500_000  # itemsets decoded and written at a time
RULE_CHUNK = 200_000  # rules decoded and written at a time
POINTS = 20_000  # rules drawn for the report's support-confidence plot


def _lists(offsets: np.ndarray, ranks: np.ndarray, names: pa.Array) -> pa.Array:
    """CSR rank lists as a list<string> Arrow array of item names."""
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), names.take(pa.array(ranks, type=pa.int64())))


def _itemset_batches(tree, names: pa.Array, n: int) -> Iterator[pa.Table]:
    """itemsets.parquet a chunk at a time, by count (descending), then size: only one chunk of
    itemsets is ever decoded into names."""
    order = np.lexsort((tree.depth, -tree.count)) if len(tree) else np.zeros(0, np.int64)
    for lo in range(0, max(len(order), 1), ITEMSET_CHUNK):
        nodes = order[lo:lo + ITEMSET_CHUNK]
        offs, ranks = tree.decode_itemsets(nodes)
        counts = tree.count[nodes]
        yield pa.table({"itemset": _lists(offs, ranks, names), "size": pa.array(np.diff(offs), type=pa.int32()),
                        "count": counts, "support": counts / max(n, 1)})


def _compact_table(tree, rules: dict, lo: int, hi: int, names: pa.Array, n: int) -> pa.Table:
    """Rows ``lo:hi`` of compact rules (``_exact_rules``) as rules.parquet rows."""
    a_offs, a_ranks, c_offs, c_ranks = tree.decode_rules(rules["node"][lo:hi], rules["mask"][lo:hi])
    m = rule_measures(rules["count"][lo:hi], rules["a"][lo:hi], rules["c"][lo:hi], n)
    return pa.table({"antecedent": _lists(a_offs, a_ranks, names), "consequent": _lists(c_offs, c_ranks, names),
                     **m, "count": rules["count"][lo:hi].astype(np.int64)})


def _rules_table(rules: pd.DataFrame, names: np.ndarray) -> pa.Table:
    """A (small) DataFrame of rules with rank tuples as rules.parquet rows, by lift."""
    rules = rules.sort_values(["lift", "confidence", "support"], ascending=False, kind="stable")
    return pa.table({"antecedent": pa.array([names[list(a)].tolist() for a in rules["antecedent"]], type=_LIST),
                     "consequent": pa.array([names[list(c)].tolist() for c in rules["consequent"]], type=_LIST),
                     **{c: rules[c].to_numpy(np.float64) for c in ("support", "confidence", "lift", "leverage",
                                                                    "conviction")},
                     "count": rules["count"].to_numpy(np.int64)})


def _exact_rules(tree, n: int, r, rep) -> tuple[dict, int]:
    """Every rule of the tree's itemsets that meets min_confidence and has a lift above
    min_lift, generated a chunk at a time; only the best ``max_rules`` by lift are kept, as
    compact arrays {"node", "mask", "a", "c", "count", "lift"} sorted by lift (descending).
    Returns (the kept rules, how many rules met the thresholds)."""
    from dlmine_ray.mining.tree import best_rules, sort_rules

    kept = {k: np.zeros(0, np.float64 if k == "lift" else np.int64) for k in ("node", "mask", "a", "c", "count",
                                                                              "lift")}
    found, last, parts = 0, time.perf_counter(), []
    for done, (nodes, masks, a, c) in tree.rule_chunks(n, r.min_confidence, r.min_lift):
        count = tree.count[nodes]
        chunk = {"node": nodes, "mask": masks, "a": a, "c": c, "count": count,
                 "lift": rule_measures(count, a, c, n)["lift"]}
        found += len(nodes)
        if r.max_rules is None:  # all are kept: joined once at the end, not at every chunk
            parts.append(chunk)
        else:
            kept = best_rules({k: np.concatenate([kept[k], chunk[k]]) for k in kept}, r.max_rules)
        if time.perf_counter() - last > 30:  # a long generation says where it is
            rep.info(f"rules: {done:,} of {len(tree):,} itemsets done, {found:,} rules so far")
            last = time.perf_counter()
    if parts:
        kept = {k: np.concatenate([p[k] for p in parts]) for k in kept}
        del parts
    order = sort_rules(kept)
    return {k: v[order] for k, v in kept.items()}, found


def _decoded(tree, rules: dict, rows: np.ndarray) -> pd.DataFrame:
    """Some compact rules with their antecedents and consequents as rank tuples."""
    a_offs, a_ranks, c_offs, c_ranks = tree.decode_rules(rules["node"][rows], rules["mask"][rows])
    a_l, c_l = a_ranks.tolist(), c_ranks.tolist()
    return pd.DataFrame({"antecedent": [tuple(a_l[a_offs[i]:a_offs[i + 1]]) for i in range(len(rows))],
                         "consequent": [tuple(c_l[c_offs[i]:c_offs[i + 1]]) for i in range(len(rows))],
                         "lift": rules["lift"][rows]})


def _sample(n: int) -> np.ndarray:
    """The positions of at most ``POINTS`` of ``n`` rules (a seeded random sample, in order) for
    the report's plot."""
    if n <= POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, POINTS, replace=False))


def _points(support, confidence, lift) -> pd.DataFrame:
    """At most ``POINTS`` rules' (support, confidence, lift) (``_sample``), for the plot."""
    pick = _sample(len(lift))
    return pd.DataFrame({"support": np.asarray(support)[pick], "confidence": np.asarray(confidence)[pick],
                         "lift": np.asarray(lift)[pick]})


def _cut_message(found: int, kept: int, r) -> str:
    return (f"rules.max_rules cut the output: kept the {kept:,} rules of highest lift of {found:,} that meet "
            f"min_confidence {r.min_confidence} and min_lift {r.min_lift}; raise rules.max_rules (null: all) or "
            "raise min_confidence / min_lift")


def run(ctx: RunContext) -> RunResult:
    """Mine a transaction task's job; its outputs go into ``ctx.folder``."""
    spec, rep, folder, r = ctx.spec, ctx.reporter, ctx.folder, ctx.options
    rep.stage("reading", str(spec.data.path))
    if ctx.on_driver:  # small input: read, counted and mined in this process (data/local.py)
        ds = read_local(spec.data.path, spec.data.format, na_values=spec.data.na_values)
    else:
        ds = read_dataset(spec.data.path, spec.data.format, na_values=spec.data.na_values)
    # the miner is compiled with numba: compile it (first run after an install) or load it from
    # numba's cache while Ray Data reads, and wait for it before the clock starts, so that no
    # miner's seconds hold the one-off compile (it is reported apart, compile_seconds); the
    # workers then load the compiled code from the cache
    compiled: list[float] = []
    warm = threading.Thread(target=lambda: compiled.append(compile_all()), daemon=True)
    warm.start()
    rep.stage("reading transactions", _shape(spec))
    tx = transactions(ds, spec).materialize()
    warm.join()
    compile_seconds = compiled[0] if compiled else float("nan")
    if compile_seconds > 2:
        rep.info(f"compiled the local miner (once after an install; numba caches it): {compile_seconds:.0f}s, "
                 "not counted in the miners' seconds")
    rep.stage("counting items", "in this process" if ctx.on_driver else "one Ray Data pass")
    t0 = time.perf_counter()
    n, counts, encoded = count_items(tx)
    if n == 0:
        raise DlmineError("the dataset is empty: no transactions were read")
    if ctx.knowledge is not None:
        from dlmine_ray.tune.metafeatures import describe_baskets

        ctx.dataset = describe_baskets(n, counts, str(spec.data.path))
    min_count = min_count_for(r.min_support, n)
    frequent = sorted((item for item, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
    names = np.asarray(frequent, dtype=object)
    names_pa = pa.array(frequent, type=pa.string())
    rep.info(f"{n:,} transactions, {len(counts):,} distinct items, {len(frequent):,} frequent "
             f"(min_support {r.min_support} = {min_count:,} transactions)")
    # one item group per CPU (in the driver, one thread each over the same transactions)
    groups = r.groups or max(1, int(ctx.cpus))
    metrics: dict[str, Any] = {"task": spec.task, "n_transactions": int(n), "n_items": int(len(counts)),
                               "n_frequent_items": int(len(frequent)), "n_itemsets": 0, "n_rules": 0,
                               "n_rules_found": 0, "rules_truncated": False, "min_count": int(min_count),
                               "min_lift": float(r.min_lift), "max_rules": r.max_rules,
                               "compile_seconds": round(compile_seconds, 3), "groups": int(groups),
                               "mined_in": "driver" if ctx.on_driver else "ray"}
    written = 0.0  # seconds spent writing itemsets and rules, not mining
    top = pd.DataFrame()
    points = _points([], [], [])
    exact_form = pd.DataFrame({"antecedent": [], "consequent": [], "lift": []})
    if frequent and r.miner in ("exact", "both"):
        how = "FP-Growth in this process's threads" if ctx.on_driver else "parallel FP-Growth"
        rep.stage("mining", f"{how}, {groups} item group(s)" + (f", max_len {r.max_len}" if r.max_len else ""))
        tree = mine_tree(encoded, {item: i for i, item in enumerate(frequent)}, groups, min_count, r.max_len,
                         local=ctx.on_driver)
        tw = time.perf_counter()
        write_parquet_batches(folder.path("itemsets.parquet"), _itemset_batches(tree, names_pa, n))
        written += time.perf_counter() - tw
        rep.info(f"{len(tree):,} frequent itemsets found (up to {tree.max_size()} items); generating rules (this "
                 "can take long with millions of itemsets: lower rules.max_len, or set rules.max_rules to bound "
                 "what is kept)")
        rep.stage("generating rules", f"min_confidence {r.min_confidence}, lift above {r.min_lift}, at most "
                           f"{f'{r.max_rules:,}' if r.max_rules is not None else 'all'} kept")
        kept, found = _exact_rules(tree, n, r, rep)
        truncated = r.max_rules is not None and found > r.max_rules
        metrics.update({"n_itemsets": int(len(tree)), "n_rules": int(len(kept["lift"])), "n_rules_found": int(found),
                        "rules_truncated": bool(truncated)})
        rep.info(f"{found:,} rules with confidence >= {r.min_confidence} and lift > {r.min_lift}")
        if truncated:
            metrics["rules_message"] = _cut_message(found, len(kept["lift"]), r)
            rep.info(metrics["rules_message"])
        tw = time.perf_counter()
        # rules.parquet: the exact rules (with miner both, the neural ones go beside them)
        write_parquet_batches(folder.path("rules.parquet"),
                              (_compact_table(tree, kept, lo, lo + RULE_CHUNK, names_pa, n)
                               for lo in range(0, max(len(kept["lift"]), 1), RULE_CHUNK)))
        written += time.perf_counter() - tw
        top = _compact_table(tree, kept, 0, r.top, names_pa, n).to_pandas()
        pick = _sample(len(kept["lift"]))  # measures only for the plotted rules
        m = rule_measures(kept["count"][pick], kept["a"][pick], kept["c"][pick], n)
        points = pd.DataFrame({k: m[k] for k in ("support", "confidence", "lift")})
        if r.miner == "both":  # the rules the neural miner can find: one consequent, a short antecedent
            size = tree.depth[kept["node"]].astype(np.int64)
            n_ant = np.bitwise_count(kept["mask"]).astype(np.int64)
            form = np.flatnonzero((size - n_ant == 1) & (n_ant <= r.neural_antecedent) & (kept["lift"] > 1.0))
            exact_form = _decoded(tree, kept, form[:r.top])
        del tree, kept
    elif not frequent:
        metrics["message"] = f"no item reaches min_support {r.min_support} ({min_count} transactions)"
        rep.info(f"no item reaches min_support {r.min_support} ({min_count:,} of {n:,} transactions): "
                 "no itemsets and no rules; lower rules.min_support")
    metrics["mining_seconds"] = round(time.perf_counter() - t0 - written, 3)  # counting + exact mining + rules
    if not (frequent and r.miner in ("exact", "both")):
        empty = pa.table({"itemset": pa.array([], type=_LIST), "size": pa.array([], type=pa.int32()),
                          "count": pa.array([], type=pa.int64()), "support": pa.array([], type=pa.float64())})
        write_parquet_batches(folder.path("itemsets.parquet"), [empty])
    neural = None
    if frequent and r.miner in ("neural", "both"):
        neural = _neural_rules(ctx, tx, encoded, frequent, counts, n, min_count)
    if neural is not None:  # said within the neural miner's stage, before the writing starts
        nr = neural["found"]
        nr = nr[nr["lift"] > r.min_lift]
        neural_found = len(nr)
        rep.info(f"{neural_found:,} of them with lift > {r.min_lift} (rules.min_lift)")
    rep.stage("writing", "metrics, report")
    neural_tab = None
    if neural is not None:
        neural_tab = _rules_table(nr, names)
        if r.max_rules is not None and len(neural_tab) > r.max_rules:
            neural_tab = neural_tab.slice(0, r.max_rules)
        metrics.update({"n_rules_neural": int(len(neural_tab)), "n_candidates_neural": neural["candidates"],
                        "neural_seconds": round(neural["seconds"], 3),
                        "neural_training_transactions": int(neural["trained_on"])})
        if r.miner == "both":
            metrics["neural_top_recall"] = _top_recall(exact_form, nr)
            metrics["neural_top_recall_rules"] = int(len(exact_form))
            metrics["neural_top_recall_definition"] = (
                f"the share of the exact miner's {len(exact_form)} rules of highest lift among those that are "
                f"associations (lift > 1) of the form the neural miner can find (one consequent, at most "
                f"{r.neural_antecedent} antecedent items) that the neural miner also found (rules.top = {r.top})")
            write_parquet_batches(folder.path("neural_rules.parquet"), [neural_tab])
        else:  # no itemsets are enumerated: rules.parquet holds the neural rules
            truncated = neural_found > len(neural_tab)
            metrics.update({"mining_seconds": round(neural["seconds"], 3), "n_rules": int(len(neural_tab)),
                            "n_rules_found": int(neural_found), "rules_truncated": bool(truncated)})
            if truncated:
                metrics["rules_message"] = _cut_message(neural_found, len(neural_tab), r)
                rep.info(metrics["rules_message"])
            write_parquet_batches(folder.path("rules.parquet"), [neural_tab])
            top = neural_tab.slice(0, r.top).to_pandas()
            points = _points(neural_tab.column("support").to_numpy(), neural_tab.column("confidence").to_numpy(),
                             neural_tab.column("lift").to_numpy())
    if not folder.path("rules.parquet").exists():  # no frequent item, or nothing to mine
        write_parquet_batches(folder.path("rules.parquet"), [_rules_table(rule_table([], [], [], [], [], 1), names)])
    write_outputs(ctx, metrics, history=neural["history"] if neural is not None else None,
                  report={"material": {"top": top, "points": points}})
    return RunResult(folder.final, metrics, spec)


def _shape(spec) -> str:
    d = spec.data
    if d.transaction:
        return f"one item per row: transaction '{d.transaction}', item '{d.items}'"
    if d.items:
        return f"baskets: list column '{d.items}'"
    return "a table: every column=value is an item"


def _neural_rules(ctx: RunContext, tx, encoded, frequent, counts, n, min_count) -> dict:
    """Train the task's item autoencoder with fit_stages, probe it for candidate rules, recount
    every candidate exactly; return {"found": DataFrame of rules (rank tuples), "candidates",
    "seconds", "trained_on", "history"}."""
    from dlmine_ray.mining.passes import count_rules, multi_hot
    from dlmine_ray.pipelines.fit import fit_stages

    spec, task, rep, r = ctx.spec, ctx.task, ctx.reporter, ctx.options
    t0 = time.perf_counter()
    ranks = {item: i for i, item in enumerate(frequent)}
    sampled = n > r.neural_sample
    hot = multi_hot(tx.random_sample(r.neural_sample / n, seed=spec.train.seed) if sampled else tx, ranks,
                    len(frequent)).materialize()
    trained_on = hot.count() if sampled else n
    if sampled:
        rep.info(f"the autoencoder trains on a random sample of {trained_on:,} of {n:,} transactions "
                 "(rules.neural_sample); the recount uses all of them")
    rep.stage("neural mining", f"an autoencoder over {len(frequent):,} items")
    fitted = fit_stages(ctx, {"train": hot}, len(frequent), task.initial_info(spec, frequent, {}), name="neural")
    model = task.build_model(len(frequent), fitted.info, spec.model.model_dump())
    model.load_state_dict(fitted.state)
    t_trained = time.perf_counter()
    priors = np.asarray([counts[i] / n for i in frequent], dtype=np.float32)
    cands = task.propose_rules(model, priors, spec)
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
    return {"found": out, "candidates": len(cands), "seconds": time.perf_counter() - t0, "trained_on": trained_on,
            "history": fitted.history}


def _top_recall(best: pd.DataFrame, neural: pd.DataFrame) -> float:
    """The share of the exact rules ``best`` (rank tuples; chosen by ``run``: the exact
    miner's ``top`` rules of highest lift that are associations, lift > 1, of the form the neural
    miner can find) that the neural miner also found; NaN when there is none."""
    if not len(best):
        return float("nan")
    found = {(tuple(sorted(a)), tuple(sorted(c))) for a, c in zip(neural["antecedent"], neural["consequent"])}
    return float(np.mean([(tuple(sorted(a)), tuple(sorted(c))) in found
                          for a, c in zip(best["antecedent"], best["consequent"])]))
