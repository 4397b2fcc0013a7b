"""Transactions on Ray Data, and the distributed passes of parallel FP-Growth.

Three input shapes become one Ray Dataset with an ``items`` list column, one row per
transaction: baskets (``data.items`` names a list column), long (``data.transaction`` and
``data.items``: one row per transaction and item), or a categorical table (every column but
the id and ignored ones; each ``column=value`` is an item; nulls are no item)."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from dlmine_ray.data.read import dataset_columns, first_line
from dlmine_ray.errors import DlmineError


def transactions(ds, spec):
    """A Ray Dataset with one ``items`` list column (one row per transaction)."""
    d = spec.data
    names, types = dataset_columns(ds)
    for col, field in ((d.items, "data.items"), (d.transaction, "data.transaction"), (d.id, "data.id")):
        if col is not None and col not in names:
            raise DlmineError(f"column '{col}' ({field}) not found; columns are: {', '.join(names[:20])}")
    if d.transaction is not None:  # long: one row per (transaction, item)
        tx, it = d.transaction, d.items

        def collect(df: pd.DataFrame) -> pd.DataFrame:
            items = df[it].dropna().astype(str).unique().tolist()
            return pd.DataFrame({"items": [items]})

        return ds.select_columns([tx, it]).groupby(tx).map_groups(collect, batch_format="pandas")
    if d.items is not None:  # baskets: a list column
        t = types[d.items]
        arrow = getattr(t, "arrow_dtype", t) if not isinstance(t, pa.DataType) else t
        if not (isinstance(arrow, pa.DataType) and (pa.types.is_list(arrow) or pa.types.is_large_list(arrow))):
            raise DlmineError(f"item column '{d.items}' is not a list column (it holds {t}); for one row per "
                              "(transaction, item) also name the transaction column in data.transaction")
        return ds.select_columns([d.items]).rename_columns({d.items: "items"}) if d.items != "items" \
            else ds.select_columns(["items"])
    skip = set(d.ignore) | ({d.id} if d.id else set())
    cols = [c for c in names if c not in skip]
    if not cols:
        raise DlmineError("no item columns left after removing the id and ignored columns")

    def as_items(df: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for c in cols:
            v = df[c]
            parts.append(np.where(v.notna(), c + "=" + v.astype(str), None))
        rows = np.column_stack(parts) if parts else np.zeros((len(df), 0), dtype=object)
        return pd.DataFrame({"items": [[x for x in r if x is not None] for r in rows]})

    return ds.map_batches(as_items, batch_format="pandas")


def _flat(batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A batch's (row index, item code) pairs, duplicates within a transaction removed, sorted by
    row; the item names (codes index them); the number of transactions. Works on Arrow
    dictionary codes, not Python strings."""
    import pyarrow.compute as pc

    col = batch.column("items").combine_chunks()
    n = len(col)
    empty = np.zeros(0, np.int64)
    if n == 0:
        return empty, empty, np.zeros(0, dtype=object), 0
    offsets = col.offsets.to_numpy()
    values = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    if len(values) == 0:
        return empty, empty, np.zeros(0, dtype=object), n
    enc = pc.dictionary_encode(pc.cast(values, pa.string()))
    codes = enc.indices.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(enc.indices.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    rows, codes = rows[valid], codes[valid].astype(np.int64)
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    key = np.sort(rows * len(names) + codes)  # by row, then code (np.unique's hashing is slower)
    key = key[np.r_[True, key[1:] != key[:-1]]]  # an item twice in a transaction counts once
    return key // len(names), key % len(names), names, n


def _blocks(tx) -> list:
    """The materialised transactions' blocks as Arrow-table object refs."""
    return tx.to_arrow_refs()


def _count_block(batch: pa.Table) -> tuple[int, dict]:
    _, codes, names, n = _flat(batch)
    counts = np.bincount(codes, minlength=len(names)) if len(names) else np.zeros(0, np.int64)
    return n, dict(zip(names.tolist(), counts.tolist()))


def count_items(tx) -> tuple[int, Counter]:
    """(number of transactions, Counter of transactions per item): one task per block."""
    import ray

    count = ray.remote(_count_block)
    try:
        parts = ray.get([count.remote(b) for b in _blocks(tx)])
    except DlmineError:
        raise
    except Exception as err:
        raise DlmineError(f"cannot read transactions: {first_line(err)}") from None
    total, counts = 0, Counter()
    for n, c in parts:
        total += n
        counts.update(c)
    return total, counts


def _flist(ranks: dict[str, int]) -> tuple[pd.Index, np.ndarray]:
    """The F-list as (item names, their ranks), the form the block functions look items up in."""
    return pd.Index(list(ranks.keys())), np.asarray(list(ranks.values()), dtype=np.int64)


def _ranked(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A batch's transactions as flat (row, rank) pairs of their frequent items, sorted by row
    and rank, duplicates removed: one sort of ``row * n_ranks + rank``."""
    import pyarrow.compute as pc

    col = batch.column("items").combine_chunks()
    n = len(col)
    empty = np.zeros(0, np.int64)
    offsets = col.offsets.to_numpy() if n else empty
    if n == 0 or offsets[-1] == offsets[0]:
        return empty, empty, n
    values = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    enc = pc.dictionary_encode(pc.cast(values, pa.string()))
    idx = vocab.get_indexer(np.asarray(enc.dictionary.to_pylist(), dtype=object))
    code_rank = np.where(idx >= 0, rank_of[np.maximum(idx, 0)], -1)  # infrequent items: -1
    codes = enc.indices.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(enc.indices.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    r = code_rank[codes[valid].astype(np.int64)]
    keep = r >= 0
    width = int(rank_of.max()) + 1 if len(rank_of) else 1
    key = np.sort(rows[valid][keep] * width + r[keep])
    key = key[np.r_[True, key[1:] != key[:-1]]]
    return key // width, key % width, n


def _emit_block(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray, groups: int) -> list[dict]:
    """One block's group-dependent prefixes, counted: one dict per group."""
    from dlmine_ray.mining.itemsets import group_prefixes_sorted

    rows, r, _ = _ranked(batch, vocab, rank_of)
    return group_prefixes_sorted(rows, r, groups)


def _emit_one(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray, groups: int) -> dict:
    return _emit_block(batch, vocab, rank_of, groups)[0]


def _mine_group(group: int, groups: int, min_count: int, max_len: Optional[int], *parts: dict):
    from dlmine_ray.mining.itemsets import mine_group

    merged: Counter = Counter()
    for p in parts:
        merged.update(p)
    return mine_group(merged, group, groups, min_count, max_len)


def mine_frequent(tx, ranks: dict[str, int], groups: int, min_count: int, max_len: Optional[int]
                  ) -> dict[tuple, int]:
    """Parallel FP-Growth on Ray: one task per block sends every transaction's group-dependent
    prefixes, counted per group (map + combine); one task per group merges its prefixes and mines
    them locally (reduce). Returns {sorted rank tuple: count} for every frequent itemset."""
    import ray

    vocab, rank_of = (ray.put(v) for v in _flist(ranks))
    # one object per (block, group): a group's reducer fetches only its own prefixes
    emit = ray.remote(num_returns=groups)(_emit_block) if groups > 1 else ray.remote(_emit_one)
    per_block = [emit.remote(b, vocab, rank_of, groups) for b in _blocks(tx)]
    if groups == 1:
        per_block = [[ref] for ref in per_block]
    reduce = ray.remote(_mine_group)
    futures = [reduce.remote(g, groups, min_count, max_len, *[refs[g] for refs in per_block]) for g in range(groups)]
    out: dict[tuple, int] = {}
    for found in ray.get(futures):
        out.update(found)
    return out


def _multi_hot_block(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray, n_items: int) -> pa.Table:
    from ray.data.extensions import ArrowTensorArray

    rows, r, n = _ranked(batch, vocab, rank_of)
    x = np.zeros((n, n_items), dtype=np.uint8)
    x[rows, r] = 1
    return pa.table({"features": ArrowTensorArray.from_numpy(x), "target": np.zeros(n, dtype=np.int8)})


def multi_hot(tx, ranks: dict[str, int], n_items: int):
    """Transactions as 0/1 vectors over the ranked items (``features``, uint8) plus the loop's
    dummy ``target``: the neural miner's training data."""
    return tx.map_batches(_multi_hot_block, fn_args=(*_flist(ranks), n_items), batch_format="pyarrow")


def _count_rules_block(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray, n_items: int,
                       wanted: dict[tuple, list]) -> dict[tuple, tuple[int, np.ndarray]]:
    from scipy import sparse

    rows, r, n = _ranked(batch, vocab, rank_of)
    x = sparse.csr_matrix((np.ones(len(r), np.int64), (rows, r)), shape=(n, n_items))
    xc = x.tocsc()
    out = {}
    for ant, cons in wanted.items():
        mask = np.ones(n, dtype=bool)
        for a in ant:
            col = np.zeros(n, dtype=bool)
            col[xc.indices[xc.indptr[a]:xc.indptr[a + 1]]] = True
            mask &= col
        hit = np.nonzero(mask)[0]
        both = np.asarray(x[hit][:, cons].sum(axis=0)).ravel() if len(hit) else np.zeros(len(cons), np.int64)
        out[ant] = (len(hit), both)
    return out


def count_rules(tx, ranks: dict[str, int], candidates: list[tuple[tuple, int]]) -> dict:
    """Exact counts for candidate rules: {antecedent: (transactions holding it,
    {consequent: transactions holding antecedent and consequent})}, one Ray task per block."""
    import ray

    wanted: dict[tuple, list] = {}
    for ant, c in candidates:
        wanted.setdefault(tuple(ant), []).append(int(c))
    if not wanted:
        return {}
    vocab, rank_of = (ray.put(v) for v in _flist(ranks))
    w = ray.put(wanted)
    task = ray.remote(_count_rules_block)
    totals: dict[tuple, list] = {}
    for part in ray.get([task.remote(b, vocab, rank_of, len(ranks), w) for b in _blocks(tx)]):
        for ant, (n_ant, both) in part.items():
            if ant in totals:
                totals[ant][0] += n_ant
                totals[ant][1] = totals[ant][1] + both
            else:
                totals[ant] = [n_ant, both]
    return {ant: (n_ant, dict(zip(wanted[ant], both.tolist()))) for ant, (n_ant, both) in totals.items()}
