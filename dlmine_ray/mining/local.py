"""The local step of parallel FP-Growth, compiled with numba: no Ray and no Python objects per
transaction.

Transactions are CSR arrays: ``indptr`` (n + 1) and ``items`` (ranks in the F-list, 0 = the most
frequent, ascending and distinct within a transaction), with a weight per transaction. The miner
is FP-Growth's pattern growth without the tree:
- level 1 and 2 by counting: one pass counts every item and every pair (j, i), j < i, into a
  matrix (when it is small enough: ``PAIR_LIMIT``);
- then each item i's conditional database is reduced to the items frequent together with i,
  kept only in transactions with two or more of them (the pairs' counts are known already;
  every longer itemset with i lies in such a transaction), copied into one CSR;
- from there, depth-first growth: the conditional database of an itemset whose smallest rank is
  ``j`` is, for every transaction holding it, the part of the transaction before ``j`` -- a
  prefix, kept as (transaction, end position), so no further projection copies items. One pass
  over a conditional database counts its items; a second delivers each frequent item's
  occurrences into its own bucket (LCM's occurrence deliver), the next conditional database;
- repeats merged (LCM's database reduction, in part): identical transactions of each item's
  reduced database, and of every conditional database of ``CONDENSE_MIN`` or more transactions
  once cut to its frequent items, become one transaction with a weight. On a dense categorical
  table most of them repeat (``benchmarks/bench_rules.py --dense 20``; benchmarks/README.md).

Found itemsets come back as a tree in three arrays: ``parent`` (index of the itemset it extends,
-1 for single items), ``item`` (the rank it adds, smaller than every rank of its parent) and
``count``; parents come before their children. numba caches the compiled code beside this file
(recursive functions cannot be cached, hence the explicit stack in ``_grow``)."""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import List

PAIR_LIMIT = 16_000_000  # pair-count cells (8 bytes each): above, the first level is grown too
BATCH_ITEMS = 16_000_000  # about this many projected items are built at a time
#: a conditional database of at least this many transactions is condensed before growing from it
#: (``_condense``; below, the copy costs more than it saves)
CONDENSE_MIN = 64


@njit(cache=True)
def _build(indptr, items, weights, ts, ends, top_group, groups, min_count, deeper, cnt, occ, mark):
    """Count the items of one conditional database (transaction ``ts[k]`` up to ``ends[k]``) and
    deliver each frequent item's occurrences into its bucket: (items, counts, bucket offsets,
    bucket transactions, bucket end positions). ``cnt``, ``occ``, ``mark`` are zero scratch
    arrays, zero again on return."""
    size = 0
    for k in range(len(ts)):
        size += ends[k] - indptr[ts[k]]
    touched = np.empty(min(size, len(cnt)), np.int64)
    nt = 0
    for k in range(len(ts)):
        t = ts[k]
        w = weights[t] if len(weights) else 1
        for p in range(indptr[t], ends[k]):
            j = items[p]
            if occ[j] == 0:
                touched[nt] = j
                nt += 1
            occ[j] += 1
            cnt[j] += w
    cands = np.empty(nt, np.int64)
    counts = np.empty(nt, np.int64)
    offs = np.zeros(nt + 1, np.int64)
    nc = 0
    for q in range(nt):
        j = touched[q]
        if cnt[j] >= min_count and (top_group < 0 or j % groups == top_group):
            cands[nc] = j
            counts[nc] = cnt[j]
            offs[nc + 1] = offs[nc] + occ[j]
            nc += 1
            mark[j] = nc  # 1-based bucket number
    for q in range(nt):
        j = touched[q]
        cnt[j] = 0
        occ[j] = 0
    total = offs[nc] if deeper else 0
    bt = np.empty(total, np.int64)
    bp = np.empty(total, np.int64)
    if deeper and nc > 0:
        fill = offs[:nc].copy()
        for k in range(len(ts)):
            t = ts[k]
            for p in range(indptr[t], ends[k]):
                m = mark[items[p]]
                if m > 0:
                    f = fill[m - 1]
                    bt[f] = t
                    bp[f] = p  # the item's conditional database: the transaction before it
                    fill[m - 1] = f + 1
    for c in range(nc):
        mark[cands[c]] = 0
    return cands[:nc].copy(), counts[:nc].copy(), offs[:nc + 1].copy(), bt, bp


@njit(cache=True)
def _condense(indptr, items, weights, ts, ends, min_count, cnt):
    """One conditional database (transaction ``ts[k]`` up to ``ends[k]``) copied into a CSR of its
    own with only its frequent items, identical transactions merged (``_merge_same``): (indptr,
    items, weights). Deep in dense data the prefixes left are short and mostly repeat, so the
    itemsets grown below it scan far fewer transactions. ``cnt`` is a zero scratch array, zero
    again on return."""
    for k in range(len(ts)):
        w = weights[ts[k]] if len(weights) else 1
        for p in range(indptr[ts[k]], ends[k]):
            cnt[items[p]] += w
    size = 0
    for k in range(len(ts)):
        for p in range(indptr[ts[k]], ends[k]):
            if cnt[items[p]] >= min_count:
                size += 1
    ptr = np.zeros(len(ts) + 1, np.int64)
    out = np.empty(size, items.dtype)
    w_out = np.empty(len(ts), np.int64)
    m = 0
    u = 0
    for k in range(len(ts)):
        s = m
        for p in range(indptr[ts[k]], ends[k]):
            if cnt[items[p]] >= min_count:
                out[m] = items[p]
                m += 1
        if m > s:  # a transaction left with no frequent item adds nothing below
            w_out[u] = weights[ts[k]] if len(weights) else 1
            u += 1
            ptr[u] = m
    for k in range(len(ts)):
        for p in range(indptr[ts[k]], ends[k]):
            cnt[items[p]] = 0
    one = np.zeros(2, np.int64)
    one[1] = u
    _, c_ptr, c_items, c_w = _merge_same(one, ptr[:u + 1], out[:m], w_out[:u])
    return c_ptr, c_items, c_w


@njit(cache=True)
def _grow(indptr, items, weights, ts, ends, top_group, groups, min_count, max_len, root_parent, cnt, occ, mark,
          out_parent, out_item, out_count, condense_min):
    """Depth-first pattern growth from one conditional database (``ts``, ``ends``) with an
    explicit stack of frames (numba cannot cache recursive functions): frame d holds the buckets
    of the itemsets d + 1 items longer than the root being extended, as positions in the CSR it
    was built from (the input's, or one ``_condense`` made of a database of at least
    ``condense_min`` transactions). ``max_len``: at most this many items added to the root (0: no
    limit)."""
    f_ptr = List.empty_list(types.int64[::1])
    f_items = List.empty_list(types.int32[::1])
    f_w = List.empty_list(types.int64[::1])
    f_cands = List.empty_list(types.int64[::1])
    f_counts = List.empty_list(types.int64[::1])
    f_offs = List.empty_list(types.int64[::1])
    f_bt = List.empty_list(types.int64[::1])
    f_bp = List.empty_list(types.int64[::1])
    f_parent = List.empty_list(types.int64)
    f_next = List.empty_list(types.int64)
    c0, k0, o0, t0, p0 = _build(indptr, items, weights, ts, ends, top_group, groups, min_count, max_len != 1,
                                cnt, occ, mark)
    f_ptr.append(indptr)
    f_items.append(items)
    f_w.append(weights)
    f_cands.append(c0)
    f_counts.append(k0)
    f_offs.append(o0)
    f_bt.append(t0)
    f_bp.append(p0)
    f_parent.append(root_parent)
    f_next.append(0)
    while len(f_next) > 0:
        d = len(f_next) - 1
        c = f_next[d]
        if c == len(f_cands[d]):
            f_ptr.pop()
            f_items.pop()
            f_w.pop()
            f_cands.pop()
            f_counts.pop()
            f_offs.pop()
            f_bt.pop()
            f_bp.pop()
            f_parent.pop()
            f_next.pop()
            continue
        f_next[d] = c + 1
        out_parent.append(f_parent[d])
        out_item.append(f_cands[d][c])
        out_count.append(f_counts[d][c])
        me = len(out_item) - 1
        lo, hi = f_offs[d][c], f_offs[d][c + 1]
        if (max_len == 0 or d + 2 <= max_len) and hi > lo and len(f_bt[d]) > 0:
            deeper = max_len == 0 or d + 3 <= max_len
            ptr, its, ws = f_ptr[d], f_items[d], f_w[d]
            bt, bp = f_bt[d][lo:hi], f_bp[d][lo:hi]
            if deeper and hi - lo >= condense_min:
                ptr, its, ws = _condense(ptr, its, ws, bt, bp, min_count, cnt)
                bt, bp = np.arange(len(ptr) - 1), ptr[1:].copy()
            c1, k1, o1, t1, p1 = _build(ptr, its, ws, bt, bp, -1, groups, min_count, deeper, cnt, occ, mark)
            if len(c1) > 0:
                f_ptr.append(ptr)
                f_items.append(its)
                f_w.append(ws)
                f_cands.append(c1)
                f_counts.append(k1)
                f_offs.append(o1)
                f_bt.append(t1)
                f_bp.append(p1)
                f_parent.append(me)
                f_next.append(0)


@njit(cache=True)
def _pair_counts(indptr, items, weights, n_items, group, groups, pairs):
    """Transactions holding each item of the group (``single``) and, with ``pairs``, each pair
    (j, i), j < i, i in the group (``pair[i // groups, j]``): one sequential pass."""
    rows = (n_items - group + groups - 1) // groups if pairs else 0
    single = np.zeros(n_items, np.int64)
    pair = np.zeros((rows, n_items), np.int64)
    for t in range(len(indptr) - 1):
        w = weights[t] if len(weights) else 1
        s = indptr[t]
        for q in range(s, indptr[t + 1]):
            i = items[q]
            if i % groups != group:
                continue
            single[i] += w
            if not pairs:
                continue
            r = i // groups
            for z in range(s, q):
                pair[r, items[z]] += w
    return single, pair


@njit(cache=True)
def _project(indptr, items, weights, group, groups, partner, first, last):
    """The reduced conditional databases of the group's items ``first`` <= i < ``last``: for every
    transaction holding i, the items before i that are frequent together with i
    (``partner[i // groups, j]``), kept only where there are at least two of them -- the pairs'
    counts are known, and every longer itemset with i lies in such a transaction. One CSR over
    all of them, item by item (``starts[i - first]`` is item i's first transaction); weights
    only where the input has them (none: every transaction counts once)."""
    span = last - first
    n_tx = np.zeros(span + 1, np.int64)
    item_size = np.zeros(span + 1, np.int64)
    starts = item_pos = fill_tx = p_ptr = p_w = np.zeros(0, np.int64)
    p_items = np.zeros(0, items.dtype)
    for fill in range(2):  # pass 0 counts sizes; pass 1 writes, in scan order within each item's block
        if fill:
            starts = np.cumsum(n_tx)
            item_pos = np.cumsum(item_size)  # where each item's next transaction's items go
            ntot = starts[span]
            p_ptr = np.zeros(ntot + 1, np.int64)
            p_items = np.empty(item_pos[span], items.dtype)
            p_w = np.empty(ntot if len(weights) else 0, np.int64)
            fill_tx = starts[:span].copy()
        for t in range(len(indptr) - 1):
            s = indptr[t]
            for q in range(s + 2, indptr[t + 1]):
                i = items[q]
                if i < first or i >= last or i % groups != group:
                    continue
                r = i // groups
                k = 0
                for z in range(s, q):
                    if partner[r, items[z]]:
                        k += 1
                if k < 2:
                    continue
                if not fill:
                    n_tx[i - first + 1] += 1
                    item_size[i - first + 1] += k
                    continue
                w0 = item_pos[i - first]
                k = 0
                for z in range(s, q):
                    j = items[z]
                    if partner[r, j]:
                        p_items[w0 + k] = j
                        k += 1
                u = fill_tx[i - first]
                p_ptr[u + 1] = w0 + k  # blocks are contiguous, so this also starts transaction u + 1
                if len(weights):
                    p_w[u] = weights[t]
                fill_tx[i - first] = u + 1
                item_pos[i - first] = w0 + k
    return starts, p_ptr, p_items, p_w


@njit(cache=True)
def _merge_same(starts, p_ptr, p_items, p_w):
    """Merge identical transactions within each item's block of ``_project``'s CSR into one
    transaction weighted by how many there were (``p_w`` empty: each weighs 1). On dense data
    (a categorical table) most reduced transactions repeat, and every deeper conditional database
    is scanned once per itemset grown from it. Equal transactions are found by a 64-bit hash
    (FNV-1a over the ranks), sorted within the block, and compared item by item."""
    n_tx = len(p_ptr) - 1
    h = np.empty(n_tx, np.uint64)
    for u in range(n_tx):
        x = np.uint64(14695981039346656037)
        for q in range(p_ptr[u], p_ptr[u + 1]):
            x = (x ^ np.uint64(p_items[q])) * np.uint64(1099511628211)
        h[u] = (x ^ np.uint64(p_ptr[u + 1] - p_ptr[u])) * np.uint64(1099511628211)
    out_starts = np.zeros(len(starts), np.int64)
    out_ptr = np.zeros(n_tx + 1, np.int64)
    out_items = np.empty(len(p_items), p_items.dtype)
    out_w = np.empty(n_tx, np.int64)
    taken = np.zeros(n_tx, np.bool_)
    nt = 0
    ni = 0
    for b in range(len(starts) - 1):
        lo, hi = starts[b], starts[b + 1]
        order = np.argsort(h[lo:hi], kind="mergesort") + lo
        k = 0
        while k < hi - lo:
            e = k + 1  # [k, e): one run of equal hashes
            while e < hi - lo and h[order[e]] == h[order[k]]:
                e += 1
            for a in range(k, e):  # each transaction not yet merged leads the equal ones after it
                u = order[a]
                if taken[u]:
                    continue
                wu = p_w[u] if len(p_w) else 1
                su, lu = p_ptr[u], p_ptr[u + 1] - p_ptr[u]
                for c in range(a + 1, e):
                    v = order[c]
                    if taken[v] or p_ptr[v + 1] - p_ptr[v] != lu:
                        continue
                    same = True
                    for z in range(lu):
                        if p_items[p_ptr[v] + z] != p_items[su + z]:
                            same = False
                            break
                    if same:
                        taken[v] = True
                        wu += p_w[v] if len(p_w) else 1
                for z in range(lu):
                    out_items[ni + z] = p_items[su + z]
                ni += lu
                out_w[nt] = wu
                nt += 1
                out_ptr[nt] = ni
            k = e
        out_starts[b + 1] = nt
    return out_starts, out_ptr[:nt + 1].copy(), out_items[:ni].copy(), out_w[:nt].copy()


@njit(cache=True, nogil=True)  # nogil: the driver mines item groups in threads
def _mine(indptr, items, weights, n_items, group, groups, min_count, max_len, pair_limit, batch_items,
          condense_min):
    out_parent = List.empty_list(types.int64)
    out_item = List.empty_list(types.int64)
    out_count = List.empty_list(types.int64)
    cnt = np.zeros(n_items, np.int64)
    occ = np.zeros(n_items, np.int64)
    mark = np.zeros(n_items, np.int64)
    n = len(indptr) - 1
    top = group if group >= 0 else 0
    step = groups if group >= 0 else 1
    rows = (n_items - top + step - 1) // step
    if max_len != 1 and rows * n_items > pair_limit:
        # too many items for a pair matrix: grow from the whole database
        _grow(indptr, items, weights, np.arange(n, dtype=np.int64), indptr[1:].copy(), group, groups, min_count,
              max_len, -1, cnt, occ, mark, out_parent, out_item, out_count, condense_min)
    else:
        # FP-Growth's first two levels done by counting: items and pairs in one pass; then each
        # item's conditional database holds only the items frequent together with it
        single, pair = _pair_counts(indptr, items, weights, n_items, top, step, max_len != 1)
        partner = pair >= min_count
        pair_id = np.full(n_items, -1, np.int64)
        first = top
        while first < n_items:
            last = first
            size = 0
            while last < n_items and (last == first or size < batch_items):
                if last % step == top:
                    size += single[last] * 4
                last += 1
            deeper = max_len == 0 or max_len > 2
            if deeper:
                starts, p_ptr, p_items, p_w = _merge_same(*_project(indptr, items, weights, top, step, partner,
                                                                    first, last))
            for i in range(first, last):
                if i % step != top or single[i] < min_count:
                    continue
                out_parent.append(-1)
                out_item.append(i)
                out_count.append(single[i])
                me = len(out_item) - 1
                if max_len == 1:
                    continue
                r = i // step
                for j in range(i):
                    if partner[r, j]:
                        out_parent.append(me)
                        out_item.append(j)
                        out_count.append(pair[r, j])
                        pair_id[j] = len(out_item) - 1
                if not deeper:
                    continue
                lo, hi = starts[i - first], starts[i - first + 1]
                if hi > lo:
                    # the pairs' conditional databases, from i's reduced database
                    c1, k1, o1, t1, p1 = _build(p_ptr, p_items, p_w, np.arange(lo, hi), p_ptr[lo + 1:hi + 1].copy(),
                                                -1, step, min_count, True, cnt, occ, mark)
                    for c in range(len(c1)):
                        if o1[c + 1] > o1[c]:
                            _grow(p_ptr, p_items, p_w, t1[o1[c]:o1[c + 1]], p1[o1[c]:o1[c + 1]], -1, step,
                                  min_count, max_len - 2 if max_len else 0, pair_id[c1[c]], cnt, occ, mark,
                                  out_parent, out_item, out_count, condense_min)
            first = last
    m = len(out_item)
    parent = np.empty(m, np.int64)
    item = np.empty(m, np.int64)
    count = np.empty(m, np.int64)
    for i in range(m):
        parent[i] = out_parent[i]
        item[i] = out_item[i]
        count[i] = out_count[i]
    return parent, item, count


def mine_csr(indptr: np.ndarray, items: np.ndarray, n_items: int, min_count: int, max_len: int | None = None,
             weights: np.ndarray | None = None, group: int = -1, groups: int = 1,
             pair_limit: int = PAIR_LIMIT, batch_items: int = BATCH_ITEMS, condense_min: int = CONDENSE_MIN
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequent itemsets of CSR transactions as (parent, item, count) arrays (see the module
    docstring). With ``group`` >= 0, only itemsets whose largest rank r has r % groups == group.
    Pairs are counted in a matrix when it has at most ``pair_limit`` cells; conditional
    databases are built for about ``batch_items`` items at a time; those of ``condense_min`` or
    more transactions are condensed (frequent items only, repeats merged) before growing."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    items = np.ascontiguousarray(items, dtype=np.int32)  # ranks: 4 bytes an item
    if weights is None:  # every transaction counts once
        weights = np.zeros(0, np.int64)
    if len(indptr) <= 1 or n_items == 0:
        e = np.zeros(0, np.int64)
        return e, e.copy(), e.copy()
    return _mine(indptr, items, np.ascontiguousarray(weights, dtype=np.int64), int(n_items), int(group),
                 int(max(groups, 1)), int(max(min_count, 1)), int(max_len or 0), int(pair_limit), int(batch_items),
                 int(condense_min))


def itemset_tuples(parent: np.ndarray, item: np.ndarray, count: np.ndarray) -> dict[tuple, int]:
    """The tree of found itemsets as {sorted rank tuple: count}."""
    sets: list[tuple] = []
    out: dict[tuple, int] = {}
    for p, i, c in zip(parent.tolist(), item.tolist(), count.tolist()):
        s = (i,) + sets[p] if p >= 0 else (i,)
        sets.append(s)
        out[s] = c
    return out


@njit(cache=True)
def sort_rows(indptr, values):
    """Sort each row of a CSR array in place and drop repeats within a row; returns the new
    (indptr, values). Rows are short (insertion sort)."""
    n = len(indptr) - 1
    out_ptr = np.empty(n + 1, np.int64)
    out = np.empty(len(values), values.dtype)
    w = 0
    out_ptr[0] = 0
    for r in range(n):
        s = w
        for p in range(indptr[r], indptr[r + 1]):
            v = values[p]
            if v < 0:  # dropped (an infrequent or missing item)
                continue
            q = w
            while q > s and out[q - 1] > v:
                q -= 1
            if q > s and out[q - 1] == v:
                continue
            for z in range(w, q, -1):
                out[z] = out[z - 1]
            out[q] = v
            w += 1
        out_ptr[r + 1] = w
    return out_ptr, out[:w]


@njit(cache=True)
def group_prefixes_csr(indptr, items, groups, group):
    """Each transaction's prefix up to and including its last item of ``group`` (items with
    rank % groups == group); transactions without such an item send nothing."""
    n = len(indptr) - 1
    out_ptr = np.empty(n + 1, np.int64)
    out_ptr[0] = 0
    m = 0
    for r in range(n):
        end = -1
        for p in range(indptr[r + 1] - 1, indptr[r] - 1, -1):
            if items[p] % groups == group:
                end = p + 1
                break
        if end > 0:
            m += end - indptr[r]
            out_ptr[r + 1] = m
        else:
            out_ptr[r + 1] = m
    out = np.empty(m, items.dtype)
    w = 0
    for r in range(n):
        ln = out_ptr[r + 1] - out_ptr[r]
        for z in range(ln):
            out[w + z] = items[indptr[r] + z]
        w += ln
    return out_ptr, out


def compile_all() -> float:
    """Run every compiled function once on a tiny input with the dtypes the mining passes use,
    so that numba compiles them (the first time after an install, ~20 s) or loads them from its
    cache (well under a second); the rule generation's functions (``tree``) too. Returns the
    seconds taken."""
    import time

    from dlmine_ray.mining.tree import compile_tree

    t = time.perf_counter()
    compile_tree()
    indptr, items = sort_rows(np.array([0, 2, 3], np.int64), np.array([1, 0, 0], np.int32))
    for g in range(2):
        p, i = group_prefixes_csr(indptr, items, 2, g)
        mine_csr(p, i, 2, 1, group=g, groups=2)
    return time.perf_counter() - t

