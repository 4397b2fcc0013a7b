"""The distributed passes of parallel FP-Growth over a Ray Dataset of transactions (an ``items``
list column, see ``data/baskets.py``): counting items, mining item groups in parallel, the
multi-hot rows of the neural miner, and the exact recount of candidate rules."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from dlmine_ray.errors import failing_as


def _encode_block(batch: pa.Table) -> tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One block read once: [number of transactions, {item: transactions holding it}] for the
    driver, and the block as CSR (offsets, item codes sorted and distinct within each
    transaction, item names the codes index) for the mining pass. Works on Arrow dictionary
    codes, not Python strings."""
    import pyarrow.compute as pc

    from dlmine_ray.mining.local import sort_rows

    col = batch.column("items").combine_chunks()
    n = len(col)
    if n == 0 or col.offsets[-1].as_py() == col.offsets[0].as_py():
        return [n, {}], (np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype=object))
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    enc = pc.dictionary_encode(pc.cast(values, pa.string()))
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)  # null: no item
    indptr, codes = sort_rows(offsets - offsets[0], codes)  # an item twice in a transaction counts once
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    counts = np.bincount(codes, minlength=len(names))
    return [n, dict(zip(names.tolist(), counts.tolist()))], (indptr, codes, names)


#: transactions held in this process are encoded this many at a time (``count_items``)
LOCAL_BLOCK_ROWS = 1_000_000


def count_items(tx) -> tuple[int, Counter, list]:
    """(number of transactions, Counter of transactions per item, the encoded blocks' object
    refs for ``mine_frequent``): one Ray task per block reads it once. Transactions held in this
    process (``data.local.LocalRows``) are encoded here, ``LOCAL_BLOCK_ROWS`` at a time (the
    blocks are then the encoded tuples themselves: mine them with ``local=True``)."""
    from dlmine_ray.data.local import LocalRows

    if isinstance(tx, LocalRows):
        table, total, counts, blocks = tx.to_arrow(), 0, Counter(), []
        with failing_as("cannot read transactions"):
            # a slice at a time: encoding copies its rows several times over (a 10M-basket job
            # peaked at 5.33 GiB encoding them at once, 3.37 GiB in slices of LOCAL_BLOCK_ROWS)
            for start in range(0, max(table.num_rows, 1), LOCAL_BLOCK_ROWS):
                (n, c), enc = _encode_block(table.slice(start, LOCAL_BLOCK_ROWS))
                total += n
                counts.update(c)
                blocks.append(enc)
        return total, counts, blocks
    import ray

    encode = ray.remote(num_returns=2)(_encode_block)
    pairs = [encode.remote(b) for b in tx.to_arrow_refs()]  # the materialised blocks
    with failing_as("cannot read transactions"):
        parts = ray.get([meta for meta, _ in pairs])
    total, counts = 0, Counter()
    for n, c in parts:
        total += n
        counts.update(c)
    return total, counts, [enc for _, enc in pairs]


def _flist(ranks: dict[str, int]) -> tuple[pd.Index, np.ndarray]:
    """The F-list as (item names, their ranks), the form the block functions look items up in."""
    return pd.Index(list(ranks.keys())), np.asarray(list(ranks.values()), dtype=np.int64)


def _ranked_csr(encoded: tuple, vocab: pd.Index, rank_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An encoded block's transactions as CSR (offsets, F-list ranks ascending within each
    transaction); infrequent items dropped."""
    from dlmine_ray.mining.local import sort_rows

    indptr, codes, names = encoded
    idx = vocab.get_indexer(names) if len(names) else np.zeros(0, np.int64)
    code_rank = np.where(idx >= 0, rank_of[np.maximum(idx, 0)], -1).astype(np.int32)  # infrequent: -1, dropped
    return sort_rows(indptr, code_rank[codes] if len(codes) else codes)


def _emit_block(encoded: tuple, vocab: pd.Index, rank_of: np.ndarray, groups: int) -> list:
    """One encoded block's group-dependent transactions: for each group, every transaction's
    prefix (in F-list order) up to its last item of the group, as CSR (offsets, ranks)."""
    from dlmine_ray.mining.local import group_prefixes_csr

    ptr, ranks = _ranked_csr(encoded, vocab, rank_of)
    if groups == 1:  # one group: every prefix is the whole transaction (no copy)
        return ptr, ranks
    return [group_prefixes_csr(ptr, ranks, groups, g) for g in range(groups)]


def _mine_group(group: int, groups: int, n_items: int, min_count: int, max_len: Optional[int], *parts):
    """A group's prefixes from every block, mined locally: (parent, item, count) arrays."""
    from dlmine_ray.mining.local import mine_csr

    indptr, items = parts[0] if len(parts) == 1 else _concat_csr(parts)  # one block is mined as it is
    return mine_csr(indptr, items, n_items, min_count, max_len, group=group if groups > 1 else -1, groups=groups)


def _concat_csr(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """CSR blocks (offsets, items) as one."""
    sizes = [len(p) - 1 for p, _ in parts]
    indptr = np.zeros(sum(sizes) + 1, np.int64)
    at, base = 1, 0
    for (p, _), s in zip(parts, sizes):
        indptr[at:at + s] = p[1:] + base
        at, base = at + s, base + p[-1]
    items = np.concatenate([i for _, i in parts]) if parts else np.zeros(0, np.int32)
    return indptr, items


def _group_trees(encoded: list, ranks: dict[str, int], groups: int, min_count: int, max_len: Optional[int],
                 local: bool = False):
    """Parallel FP-Growth on Ray over ``count_items``' encoded blocks: one task per block sends
    every transaction's group-dependent prefixes (map), one object per (block, group); one task
    per group mines its prefixes locally (reduce), keeping the itemsets whose largest rank is in
    the group. Yields each group's (parent, item, count) tree, one at a time, so that the driver
    holds one group's arrays from the object store at once. ``local``: the blocks are held here
    (``count_items`` of LocalRows): each group is mined in a thread of this process from the
    whole transactions (a group keeps only the itemsets whose largest rank is its own)."""
    if local:  # every group mines the same whole transactions, one thread each (no prefixes copied)
        from concurrent.futures import ThreadPoolExecutor

        vocab, rank_of = _flist(ranks)
        parts = [_ranked_csr(b, vocab, rank_of) for b in encoded]
        if len(parts) > 1:  # one CSR, shared by the threads
            parts = [_concat_csr(parts)]
        if groups == 1:
            yield _mine_group(0, 1, len(ranks), min_count, max_len, *parts)
            return
        with ThreadPoolExecutor(groups) as pool:  # the compiled miner releases the GIL
            futures = [pool.submit(_mine_group, g, groups, len(ranks), min_count, max_len, *parts)
                       for g in range(groups)]
            for f in futures:
                yield f.result()
        return
    import ray

    vocab, rank_of = (ray.put(v) for v in _flist(ranks))
    emit = ray.remote(num_returns=groups)(_emit_block) if groups > 1 else ray.remote(_emit_block)
    per_block = [emit.remote(b, vocab, rank_of, groups) for b in encoded]
    if groups == 1:
        per_block = [[ref] for ref in per_block]
    reduce = ray.remote(_mine_group)
    futures = [reduce.remote(g, groups, len(ranks), min_count, max_len, *[refs[g] for refs in per_block])
               for g in range(groups)]
    del per_block  # the prefixes are freed as soon as their group is mined
    for i in range(len(futures)):
        tree = ray.get(futures[i])
        futures[i] = None
        yield tree


def mine_tree(encoded: list, ranks: dict[str, int], groups: int, min_count: int, max_len: Optional[int],
              local: bool = False):
    """Every frequent itemset (see ``_group_trees``) as one ``ItemsetTree`` of compact arrays
    (about 30 bytes an itemset, no Python object per itemset); returns the tree."""
    from dlmine_ray.mining.tree import ItemsetTree

    return ItemsetTree.from_groups(_group_trees(encoded, ranks, groups, min_count, max_len, local), len(ranks))


def mine_frequent(encoded: list, ranks: dict[str, int], groups: int, min_count: int, max_len: Optional[int]
                  ) -> dict[tuple, int]:
    """Every frequent itemset (see ``_group_trees``) as {sorted rank tuple: count}: one Python
    tuple per itemset, for small results and the benchmarks; runs use ``mine_tree``."""
    from dlmine_ray.mining.local import itemset_tuples

    out: dict[tuple, int] = {}
    for tree in _group_trees(encoded, ranks, groups, min_count, max_len):
        out.update(itemset_tuples(*tree))
    return out


def _multi_hot_block(batch: pa.Table, vocab: pd.Index, rank_of: np.ndarray, n_items: int) -> pa.Table:
    from ray.data.extensions import ArrowTensorArray

    ptr, r = _ranked_csr(_encode_block(batch)[1], vocab, rank_of)
    n = len(ptr) - 1
    x = np.zeros((n, n_items), dtype=np.uint8)
    x[np.repeat(np.arange(n), np.diff(ptr)), r] = 1
    return pa.table({"features": ArrowTensorArray.from_numpy(x), "target": np.zeros(n, dtype=np.int8)})


def multi_hot(tx, ranks: dict[str, int], n_items: int):
    """Transactions as 0/1 vectors over the ranked items (``features``, uint8) plus the loop's
    dummy ``target``: the neural miner's training data."""
    return tx.map_batches(_multi_hot_block, fn_args=(*_flist(ranks), n_items), batch_format="pyarrow")


def _count_rules_block(encoded: tuple, vocab: pd.Index, rank_of: np.ndarray, n_items: int,
                       wanted: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact counts in one encoded block for candidate rules grouped by antecedent length: per
    group (antecedents as a P x k array of ranks, each candidate's antecedent row, its
    consequent), the transactions holding each antecedent and those holding each candidate's
    antecedent and consequent. Sparse products: Y (transactions x antecedents, the product of
    the antecedent's item columns), then Y^T X."""
    from scipy import sparse

    ptr, r = _ranked_csr(encoded, vocab, rank_of)
    n = len(ptr) - 1
    x = sparse.csr_matrix((np.ones(len(r), np.int64), r, ptr), shape=(n, n_items))
    xc = x.tocsc()
    out = []
    for ants, rows, cons in wanted:
        y = xc[:, ants[:, 0]]
        for j in range(1, ants.shape[1]):
            y = y.multiply(xc[:, ants[:, j]])
        y = sparse.csc_matrix(y)
        n_ant = np.asarray(y.sum(axis=0)).ravel().astype(np.int64)
        both = (y.T @ x).tocsr()
        out.append((n_ant, np.asarray(both[rows, cons]).ravel().astype(np.int64)))
    return out


def count_rules(encoded: list, ranks: dict[str, int], candidates: list[tuple[tuple, int]]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts for candidate rules (antecedent ranks, consequent rank) over ``count_items``'
    encoded blocks, one Ray task per block: (transactions holding the antecedent, transactions
    holding antecedent and consequent), one entry per candidate, in the candidates' order."""
    import ray

    n_ant = np.zeros(len(candidates), np.int64)
    both = np.zeros(len(candidates), np.int64)
    if not candidates:
        return n_ant, both
    by_len: dict[int, list[int]] = {}
    for i, (ant, _) in enumerate(candidates):
        by_len.setdefault(len(ant), []).append(i)
    wanted, where = [], []
    for k, idx in sorted(by_len.items()):
        ants = sorted({tuple(candidates[i][0]) for i in idx})
        row_of = {a: j for j, a in enumerate(ants)}
        rows = np.asarray([row_of[tuple(candidates[i][0])] for i in idx], dtype=np.int64)
        cons = np.asarray([candidates[i][1] for i in idx], dtype=np.int64)
        wanted.append((np.asarray(ants, dtype=np.int64).reshape(len(ants), k), rows, cons))
        where.append((np.asarray(idx), rows))
    vocab, rank_of = (ray.put(v) for v in _flist(ranks))
    w = ray.put(wanted)
    task = ray.remote(_count_rules_block)
    for part in ray.get([task.remote(b, vocab, rank_of, len(ranks), w) for b in encoded]):
        for (idx, rows), (a, c) in zip(where, part):
            n_ant[idx] += a[rows]
            both[idx] += c
    return n_ant, both
