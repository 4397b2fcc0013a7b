"""Every frequent itemset of a run in compact arrays, and the rules generated from them in
bounded memory, compiled with numba.

The groups' trees (``local.mine_csr``: ``parent``, ``item``, ``count``, parents before children;
a node's item is smaller than every rank of its parent, so a root is an itemset's largest rank)
are concatenated into one tree, about 30 bytes an itemset: no Python tuple per itemset. An
itemset is found by walking from its largest rank down: the child of node ``p`` with item ``x``
is looked up by binary search in the sorted keys ``(p + 1) * n_items + x``. Every subset of a
frequent itemset is frequent, so the subset counts that rules need are all in the tree, whichever
group mined them.

Rules are generated a chunk of itemsets at a time (``rule_chunks``), each rule as (node,
antecedent bit mask over the node's items in ascending rank, antecedent count, consequent count);
``min_confidence`` and ``min_lift`` are applied as they are made, so only rules that are kept take
memory. Names are attached only when a chunk is written (``decode_itemsets``, ``decode_rules``)."""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from numba import njit

MAX_RULE_ITEMS = 24  # an itemset of k items gives 2^k - 2 rules: beyond this, set rules.max_len


@njit(cache=True)
def _depths(parent):
    depth = np.empty(len(parent), np.int8)
    for v in range(len(parent)):
        p = parent[v]
        depth[v] = 1 if p < 0 else depth[p] + 1
    return depth


@njit(cache=True)
def _find(keys, order, n_items, node, item):
    """The node extending ``node`` (-1: the root) by ``item``, or -1 when it is not frequent."""
    k = (node + 1) * n_items + item
    pos = np.searchsorted(keys, k)
    if pos < len(keys) and keys[pos] == k:
        return order[pos]
    return -1


@njit(cache=True)
def _rules(parent, item, count, depth, keys, order, n_items, n, min_conf, min_lift, start, stop, cap, kmax):
    """Rules of the itemsets ``start`` <= v < ``stop`` until ``cap`` would be passed: (the next
    itemset to do, nodes, antecedent masks, antecedent counts, consequent counts, itemsets done
    that had rules to test). A rule A -> C is kept when count(A u C) >= min_conf * count(A) and
    count(A u C) * n > min_lift * count(A) * count(C) (its lift above ``min_lift``)."""
    out_node = np.empty(cap, np.int64)
    out_mask = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int64)
    out_c = np.empty(cap, np.int64)
    s = np.empty(64, np.int64)
    sub_node = np.empty(1 << kmax, np.int64)  # per subset of the current itemset: its node
    sub_count = np.empty_like(sub_node)
    m = 0
    v = start
    while v < stop:
        k = depth[v]
        if k < 2:
            v += 1
            continue
        full = (1 << k) - 1
        if m + full - 1 > cap:
            break
        u = v
        for b in range(k):  # the itemset's ranks, ascending: the node's item is the smallest
            s[b] = item[u]
            u = parent[u]
        # node of each subset: its smallest item (lowest bit) extends the subset without it
        sub_node[0] = -1
        for mask in range(1, full + 1):
            low = mask & -mask
            b = 0
            while (low >> b) != 1:
                b += 1
            nd = _find(keys, order, n_items, sub_node[mask ^ low], s[b])
            sub_node[mask] = nd
            sub_count[mask] = count[nd] if nd >= 0 else 0
        c = count[v]
        for mask in range(1, full):
            a = sub_count[mask]
            cc = sub_count[full ^ mask]
            if a <= 0 or cc <= 0:  # cannot happen with a complete tree; guards the division below
                continue
            if c < min_conf * a - 1e-9:
                continue
            if float(c) * n <= min_lift * float(a) * float(cc):
                continue
            out_node[m] = v
            out_mask[m] = mask
            out_a[m] = a
            out_c[m] = cc
            m += 1
        v += 1
    return v, out_node[:m].copy(), out_mask[:m].copy(), out_a[:m].copy(), out_c[:m].copy()


@njit(cache=True)
def _decode(parent, item, nodes):
    """The itemsets of ``nodes`` as CSR (offsets, ranks ascending within each)."""
    offs = np.zeros(len(nodes) + 1, np.int64)
    total = 0
    for r in range(len(nodes)):
        u = nodes[r]
        while u >= 0:
            total += 1
            u = parent[u]
        offs[r + 1] = total
    out = np.empty(total, np.int64)
    for r in range(len(nodes)):
        w = offs[r]
        u = nodes[r]
        while u >= 0:
            out[w] = item[u]
            w += 1
            u = parent[u]
    return offs, out


@njit(cache=True)
def _split(offs, ranks, masks):
    """Each rule's itemset (CSR) split by its antecedent mask: (antecedent offsets, ranks,
    consequent offsets, ranks), ascending ranks within each."""
    n = len(masks)
    a_offs = np.zeros(n + 1, np.int64)
    c_offs = np.zeros(n + 1, np.int64)
    a_out = np.empty(len(ranks), np.int64)
    c_out = np.empty(len(ranks), np.int64)
    na = 0
    nc = 0
    for r in range(n):
        for b in range(offs[r + 1] - offs[r]):
            x = ranks[offs[r] + b]
            if (masks[r] >> b) & 1:
                a_out[na] = x
                na += 1
            else:
                c_out[nc] = x
                nc += 1
        a_offs[r + 1] = na
        c_offs[r + 1] = nc
    return a_offs, a_out[:na].copy(), c_offs, c_out[:nc].copy()


class ItemsetTree:
    """The frequent itemsets of a run as one tree of compact arrays (see the module docstring)."""

    def __init__(self, parent: np.ndarray, item: np.ndarray, count: np.ndarray, n_items: int):
        idx = np.int32 if len(parent) < 2**31 - 1 else np.int64
        self.parent = np.ascontiguousarray(parent, dtype=idx)
        self.item = np.ascontiguousarray(item, dtype=np.int32)
        self.count = np.ascontiguousarray(count, dtype=np.int64)
        self.n_items = int(n_items)
        key = (self.parent.astype(np.int64) + 1) * self.n_items + self.item
        self.order = np.argsort(key, kind="stable").astype(idx)
        key = key[self.order]  # the sorted keys: the unsorted ones are dropped here
        self.keys = key
        self.depth = _depths(self.parent) if len(self.parent) else np.zeros(0, np.int8)

    @classmethod
    def from_groups(cls, trees: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], n_items: int) -> "ItemsetTree":
        """One tree from the groups' (parent, item, count) trees, converted to compact dtypes as
        they arrive; returns the ItemsetTree."""
        parents, items, counts, base = [], [], [], 0
        for p, i, c in trees:
            parents.append(np.where(p >= 0, p + base, -1).astype(np.int64))
            items.append(i.astype(np.int32))
            counts.append(c.astype(np.int64))
            base += len(p)
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))  # noqa: E731
        return cls(cat(parents, np.int64), cat(items, np.int32), cat(counts, np.int64), n_items)

    def __len__(self) -> int:
        return len(self.item)

    def max_size(self) -> int:
        """The number of items of the largest itemset (0 when there is none)."""
        return int(self.depth.max()) if len(self.depth) else 0

    def find(self, ranks) -> int:
        """The node of the itemset with these ranks, or -1 when it is not frequent."""
        node = -1
        for x in sorted(ranks, reverse=True):
            node = int(_find(self.keys, self.order, self.n_items, node, int(x)))
            if node < 0:
                return -1
        return node

    def as_dict(self) -> dict[tuple, int]:
        """{sorted rank tuple: count} for every itemset: one Python tuple each (small data only)."""
        offs, ranks = _decode(self.parent, self.item, np.arange(len(self), dtype=np.int64))
        r = ranks.tolist()
        return {tuple(r[offs[v]:offs[v + 1]]): int(c) for v, c in enumerate(self.count.tolist())}

    def decode_itemsets(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The itemsets of ``nodes`` as CSR: (offsets, ranks ascending within each)."""
        return _decode(self.parent, self.item, np.ascontiguousarray(nodes, dtype=np.int64))

    def decode_rules(self, nodes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rules (node, antecedent mask) as CSR: (antecedent offsets, ranks, consequent offsets,
        ranks), ascending ranks within each."""
        offs, ranks = self.decode_itemsets(nodes)
        return _split(offs, ranks, np.ascontiguousarray(masks, dtype=np.int64))

    def rule_chunks(self, n_transactions: int, min_confidence: float, min_lift: float,
                    chunk_rules: int = 1_000_000, itemsets_per_call: int = 200_000
                    ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
        """Every rule A -> C (A, C non-empty, disjoint, A u C frequent) with confidence at least
        ``min_confidence`` and lift above ``min_lift``, a chunk at a time: yields (itemsets done
        so far, (nodes, antecedent masks, antecedent counts, consequent counts)), each chunk of
        at most about ``chunk_rules`` rules."""
        k = self.max_size()
        if k > MAX_RULE_ITEMS:
            from dlmine_ray.errors import DlmineError

            raise DlmineError(f"a frequent itemset has {k} items ({2**k - 2:,} rules of its own); set rules.max_len "
                              f"to at most {MAX_RULE_ITEMS}, or raise rules.min_support")
        cap = max(int(chunk_rules), 2**k - 2, 1)
        v, n = 0, len(self)
        while v < n:
            stop = min(n, v + itemsets_per_call)
            nxt, *rules = _rules(self.parent, self.item, self.count, self.depth, self.keys, self.order,
                                 self.n_items, float(n_transactions), float(min_confidence), float(min_lift), v,
                                 stop, cap, k)
            v = int(nxt)
            yield v, tuple(rules)


def compile_tree() -> None:
    """Run every compiled function of this module once on a tiny tree, so that numba compiles
    them (or loads them from its cache)."""
    tree = ItemsetTree(np.array([-1, -1, 0], np.int64), np.array([1, 0, 0], np.int64), np.array([3, 4, 2]), 2)
    for _, (nodes, masks, _a, _c) in tree.rule_chunks(5, 0.0, 0.0):
        tree.decode_rules(nodes, masks)
    tree.find((0, 1))


def best_rules(rules: dict[str, np.ndarray], keep: Optional[int]) -> dict[str, np.ndarray]:
    """The ``keep`` best rules by lift (then confidence, then count, then position) of compact
    rule arrays {"node", "mask", "a", "c", "count", "lift"}, all when ``keep`` is None or not
    smaller; returns them in no particular order. Linear time except for ties at the cut."""
    n = len(rules["lift"])
    if keep is None or n <= keep:
        return rules
    lift = rules["lift"]
    thr = np.partition(lift, n - keep)[n - keep]  # the keep-th largest lift
    sure = np.flatnonzero(lift > thr)
    tie = np.flatnonzero(lift == thr)
    need = keep - len(sure)
    if len(tie) > need:
        conf = rules["count"][tie] / rules["a"][tie]
        tie = tie[np.lexsort((rules["mask"][tie], rules["node"][tie], -rules["count"][tie], -conf))[:need]]
    pick = np.concatenate([sure, tie])
    return {k: v[pick] for k, v in rules.items()}


def sort_rules(rules: dict[str, np.ndarray]) -> np.ndarray:
    """The order of compact rules by lift, confidence, count (descending), then node and mask."""
    conf = rules["count"] / np.maximum(rules["a"], 1)
    return np.lexsort((rules["mask"], rules["node"], -rules["count"], -conf, -rules["lift"]))
