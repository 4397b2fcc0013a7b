"""The rules task: exact frequent itemsets (the same itemsets and counts as mlxtend's fpgrowth,
a test-only oracle), rules with their measures, the three input shapes, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from dlmine_ray.cli import main
from dlmine_ray.data.synthetic import make_baskets
from dlmine_ray.mining.itemsets import association_rules


def _oracle(transactions, min_support, max_len=None):
    """{frozenset: count} from mlxtend (None when no itemset is frequent)."""
    from mlxtend.frequent_patterns import fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(transactions).transform(transactions), columns=te.columns_)
    n = len(transactions)
    frac = min_support if isinstance(min_support, float) else min_support / n
    found = fpgrowth(onehot, min_support=frac - 1e-12, use_colnames=True, max_len=max_len)
    return {frozenset(s): int(round(v * n)) for s, v in zip(found["itemsets"], found["support"])}


def _ours(out):
    t = pd.read_parquet(out / "itemsets.parquet")
    return {frozenset(s): int(c) for s, c in zip(t["itemset"], t["count"])}


def _run(tmp_path, path, name="run", **rules):
    import yaml

    job = {"name": "r", "task": "rules", "data": {"path": str(path), "items": "items"},
           "rules": {"min_support": 0.1, "min_confidence": 0.5, "groups": 3, **rules}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / name
    assert main(["run", str(tmp_path / "job.yaml"), "--output", str(out)]) == 0
    return out


def _write_baskets(path, baskets):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"basket_id": np.arange(len(baskets)),
                             "items": pa.array(baskets, type=pa.list_(pa.string()))}), path)


EDGE_CASES = {
    # empty transactions count towards the total; an item twice in a basket counts once
    "empty_and_duplicates": [["a", "b", "a"], [], ["a", "c"], ["b", "b", "c"], [], ["a", "b", "c"]] * 5,
    "one_transaction": [["x", "y", "z"]],
    "in_every_transaction": [["m", "n", str(i % 4)] for i in range(20)],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_match_mlxtend(tmp_path, ray_local, case):
    baskets = EDGE_CASES[case]
    _write_baskets(tmp_path / "b.parquet", baskets)
    out = _run(tmp_path, tmp_path / "b.parquet", min_support=0.2)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_transactions"] == len(baskets)
    assert _ours(out) == _oracle([sorted(set(b)) for b in baskets], 0.2)


@pytest.mark.parametrize("min_support,max_len", [(0.05, None), (20, 2), (0.02, 3)])
def test_zipf_baskets_match_mlxtend(tmp_path, ray_local, min_support, max_len):
    table = make_baskets(600, items=40, avg_items=5, start=0, seed=1, shard=0)
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "b.parquet")
    out = _run(tmp_path, tmp_path / "b.parquet", min_support=min_support, max_len=max_len, min_confidence=0.3,
               min_lift=0.0, max_rules=None)  # every rule, as mlxtend gives them
    ours = _ours(out)
    baskets = [sorted(set(b)) for b in table.column("items").to_pylist()]
    assert ours == _oracle(baskets, min_support, max_len) and len(ours) > 20
    if max_len:
        assert max(len(s) for s in ours) <= max_len

    # the rules and their measures agree with mlxtend's association_rules
    from mlxtend.frequent_patterns import association_rules as mlx_rules

    n = len(baskets)
    fi = pd.DataFrame({"itemsets": list(ours), "support": [c / n for c in ours.values()]})
    theirs = mlx_rules(fi, num_itemsets=n, metric="confidence", min_threshold=0.3)
    rules = pd.read_parquet(out / "rules.parquet")
    key = lambda a, c: (frozenset(a), frozenset(c))  # noqa: E731
    mine = {key(a, c): row for a, c, row in zip(rules["antecedent"], rules["consequent"], rules.itertuples())}
    assert set(mine) == {key(a, c) for a, c in zip(theirs["antecedents"], theirs["consequents"])}
    for t in theirs.itertuples():
        r = mine[key(t.antecedents, t.consequents)]
        assert r.support == pytest.approx(t.support) and r.confidence == pytest.approx(t.confidence)
        assert r.lift == pytest.approx(t.lift) and r.leverage == pytest.approx(t.leverage, abs=1e-12)
        assert r.conviction == pytest.approx(t.conviction) or (np.isinf(r.conviction) and np.isinf(t.conviction))


def test_long_and_table_shapes(tmp_path, ray_local):
    baskets = EDGE_CASES["empty_and_duplicates"][:6]
    rows = [(i, item) for i, b in enumerate(baskets) for item in b]
    pd.DataFrame(rows, columns=["tid", "item"]).to_csv(tmp_path / "long.csv", index=False)
    import yaml

    job = {"name": "r", "task": "rules", "data": {"path": str(tmp_path / "long.csv"), "transaction": "tid",
                                                  "items": "item"}, "rules": {"min_support": 2}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "long.yaml"), "--output", str(tmp_path / "long")]) == 0
    # the long form has no row for an empty basket: 4 transactions
    assert _ours(tmp_path / "long") == _oracle([sorted(set(b)) for b in baskets if b], 2)

    table = pd.DataFrame({"id": range(8), "color": ["red", "red", "blue", "red", None, "blue", "red", "red"],
                          "size": ["S", "S", "L", "S", "S", "L", "M", "S"]})
    table.to_csv(tmp_path / "table.csv", index=False)
    job = {"name": "t", "task": "rules", "data": {"path": str(tmp_path / "table.csv"), "id": "id"},
           "rules": {"min_support": 0.25, "min_confidence": 0.8}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "t.yaml"), "--output", str(tmp_path / "t")]) == 0
    ours = _ours(tmp_path / "t")
    assert ours[frozenset({"color=red", "size=S"})] == 4 and ours[frozenset({"color=blue", "size=L"})] == 2
    rules = pd.read_parquet(tmp_path / "t" / "rules.parquet")
    blue = rules[rules["antecedent"].map(lambda a: list(a) == ["color=blue"])]
    assert [list(c) for c in blue["consequent"]] == [["size=L"]] and blue["confidence"].iloc[0] == 1.0


def test_no_frequent_item_is_an_empty_result_not_an_error(tmp_path, ray_local, capsys):
    _write_baskets(tmp_path / "b.parquet", [["a"], ["b"], ["c"], ["d"]])
    out = _run(tmp_path, tmp_path / "b.parquet", min_support=0.5)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_itemsets"] == 0 and m["n_rules"] == 0 and "no item reaches min_support" in m["message"]
    assert len(pd.read_parquet(out / "itemsets.parquet")) == 0 and len(pd.read_parquet(out / "rules.parquet")) == 0
    assert "no item reaches min_support" in capsys.readouterr().err + (out / "report.html").read_text()


@pytest.mark.parametrize("value", [0, 1.5, -0.2, "half"])
def test_min_support_outside_range(tmp_path, capsys, value):
    import yaml

    job = {"name": "r", "task": "rules", "data": {"path": "x.parquet", "items": "items"},
           "rules": {"min_support": value}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: invalid job field 'rules.min_support'") and "(0, 1]" in line
    assert not (tmp_path / "out").exists()


def test_item_column_that_is_not_a_list(tmp_path, ray_local, capsys):
    pd.DataFrame({"items": ["a,b", "b,c"]}).to_parquet(tmp_path / "b.parquet")
    import yaml

    job = {"name": "r", "task": "rules", "data": {"path": str(tmp_path / "b.parquet"), "items": "items"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "item column 'items' is not a list column" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_len", [None, 2, 3])
def test_local_miner_matches_oracle_in_every_mode(max_len):
    # the local step alone, no Ray: 1, 2 or 5 groups, the pair matrix or growth from the whole
    # database, conditional databases built all at once or item by item, weights or repeats
    from dlmine_ray.mining.local import group_prefixes_csr, itemset_tuples, mine_csr, sort_rows

    rng = np.random.default_rng(0)
    ts = [rng.integers(0, 12, rng.integers(0, 9)) for _ in range(300)]  # repeats within a row
    indptr, items = sort_rows(np.r_[0, np.cumsum([len(t) for t in ts])].astype(np.int64),
                              np.concatenate(ts).astype(np.int32))
    rows = [items[indptr[i]:indptr[i + 1]].tolist() for i in range(len(ts))]
    assert all(r == sorted(set(t.tolist())) for r, t in zip(rows, ts))
    expected = {tuple(sorted(k)): c for k, c in _oracle(rows, 8, max_len).items()}
    assert len(expected) > 70 and max(map(len, expected)) == (max_len or 4)
    for groups in (1, 2, 5):
        for pair_limit, batch_items, condense_min in ((10**9, 10**9, 64), (0, 10**9, 0), (10**9, 1, 0),
                                                      (0, 10**9, 10**9)):
            found = {}
            for g in range(groups):
                p, i = group_prefixes_csr(indptr, items, groups, g)
                found.update(itemset_tuples(*mine_csr(p, i, 12, 8, max_len, group=g if groups > 1 else -1,
                                                      groups=groups, pair_limit=pair_limit, batch_items=batch_items,
                                                      condense_min=condense_min)))
            assert found == expected, (groups, pair_limit, batch_items, condense_min)
    # a weight of w counts a transaction w times
    half = indptr[:151]
    weighted = itemset_tuples(*mine_csr(half, items[:half[-1]], 12, 16, max_len, weights=np.full(150, 2)))
    doubled = {tuple(sorted(k)): c for k, c in _oracle(rows[:150] * 2, 16, max_len).items()}
    assert weighted == doubled
    rules = association_rules(expected, 300, 0.0)
    assert (rules["confidence"] <= 1 + 1e-12).all() and (rules["support"] > 0).all()


@pytest.mark.parametrize("condense_min", [0, 64, 10**9])
def test_local_miner_on_a_dense_table_matches_oracle(condense_min):
    # a categorical table (each row one value per column, columns correlated through a hidden
    # group): long itemsets are frequent and deep conditional databases repeat, which is where
    # they are condensed (repeats merged into weights) before growing
    from dlmine_ray.mining.local import itemset_tuples, mine_csr

    rng = np.random.default_rng(1)
    group = rng.integers(0, 3, 400)
    table = np.stack([(rng.random(400) < np.array([0.15, 0.5, 0.85])[np.roll(group, j) % 3]).astype(int) + 2 * j
                      for j in range(7)], axis=1)  # column j holds item 2j or 2j + 1
    counts = np.bincount(table.ravel(), minlength=14)
    rank = np.argsort(np.argsort(-counts, kind="stable"), kind="stable")  # the F-list order
    rows = [sorted(rank[r].tolist()) for r in table]
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    items = np.concatenate(rows).astype(np.int32)
    expected = {tuple(sorted(k)): c for k, c in _oracle(rows, 20, None).items()}
    assert max(map(len, expected)) >= 5
    for pair_limit in (10**9, 0):
        found = itemset_tuples(*mine_csr(indptr, items, 14, 20, None, pair_limit=pair_limit,
                                         condense_min=condense_min))
        assert found == expected, pair_limit


def test_neural_miner_reports_only_exactly_recounted_rules(tmp_path, ray_local):
    import pyarrow.parquet as pq
    import yaml

    pq.write_table(make_baskets(1500, items=30, avg_items=4, start=0, seed=3, shard=0), tmp_path / "b.parquet")
    job = {"name": "n", "task": "rules", "data": {"path": str(tmp_path / "b.parquet"), "items": "items"},
           "model": {"hidden": [32], "latent": 8, "dropout": 0.0}, "train": {"epochs": 30, "batch_size": 64},
           "rules": {"min_support": 0.02, "min_confidence": 0.5, "miner": "both", "neural_threshold": 0.4, "top": 10,
                     "neural_sample": 1200}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "job.yaml"), "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_rules_neural"] > 0 and m["neural_top_recall"] >= 0.5, m
    # the recall is over real associations, and no miner's seconds hold the one-off compile
    assert "lift > 1" in m["neural_top_recall_definition"] and 0 < m["neural_top_recall_rules"] <= 10
    assert m["compile_seconds"] >= 0 and "compile" in (out / "report.html").read_text()
    assert 1000 < m["neural_training_transactions"] < 1400 and m["n_transactions"] == 1500  # a sample of ~1,200
    exact = pd.read_parquet(out / "rules.parquet")
    neural = pd.read_parquet(out / "neural_rules.parquet")
    key = lambda a, c: (tuple(sorted(a)), tuple(sorted(c)))  # noqa: E731
    by_key = {key(a, c): row for a, c, row in zip(exact["antecedent"], exact["consequent"], exact.itertuples())}
    assert (exact["lift"] > 1).all() and (neural["lift"] > 1).all()  # rules.min_lift 1: associations only
    for a, c, row in zip(neural["antecedent"], neural["consequent"], neural.itertuples()):
        assert len(c) == 1 and len(a) <= 2
        e = by_key[key(a, c)]  # every neural rule meets the thresholds, so the exact miner has it
        assert row.support == pytest.approx(e.support) and row.confidence == pytest.approx(e.confidence)
        assert row.lift == pytest.approx(e.lift)
    assert "Neural miner vs exact miner" in (out / "report.html").read_text()


def test_rule_recount_matches_brute_force(tmp_path, ray_local):
    # the neural miner's exact recount alone: antecedents of 1, 2 and 3 items, over several blocks,
    # against counting every candidate with Python sets
    import ray

    from dlmine_ray.mining.passes import count_items, count_rules

    rng = np.random.default_rng(5)
    baskets = [[f"i{j}" for j in rng.integers(0, 15, rng.integers(0, 8))] for _ in range(400)]
    tx = ray.data.from_items([{"items": b} for b in baskets], override_num_blocks=3).materialize()
    n, counts, encoded = count_items(tx)
    names = sorted(counts, key=lambda i: (-counts[i], i))
    ranks = {name: r for r, name in enumerate(names)}
    cands = [(tuple(sorted(rng.choice(len(names), k, replace=False).tolist())), int(c))
             for k in (1, 2, 3) for c in rng.integers(0, len(names), 60)]
    cands = [(a, c) for a, c in cands if c not in a]
    n_ant, both = count_rules(encoded, ranks, cands)
    sets = [set(b) for b in baskets]
    for (a, c), got_a, got_b in zip(cands, n_ant, both):
        holding = [s for s in sets if all(names[i] in s for i in a)]
        assert got_a == len(holding) and got_b == sum(names[c] in s for s in holding), (a, c)
    assert n == 400 and len(cands) > 150 and both.sum() > 0


def test_a_table_row_becomes_its_column_value_items():
    # every column=value in column order, no item for a missing value, values written as pandas
    # writes them (1.0 stays "1.0", an integer column with nulls stays integer, True is "True")
    import pyarrow as pa

    from dlmine_ray.data.baskets import table_items

    df = pd.DataFrame({"s": ["a", None, ""], "i": [1, 2, 3], "f": [1.0, np.nan, 2.5], "b": [True, False, True],
                       "cat": pd.Categorical(["x", "y", None]), "ni": pd.array([None, 4, 5], dtype="Int64")})
    got = table_items(pa.Table.from_pandas(df, preserve_index=False), list(df.columns)).column("items").to_pylist()
    assert got == [["s=a", "i=1", "f=1.0", "b=True", "cat=x"],
                   ["i=2", "b=False", "cat=y", "ni=4"],
                   ["s=", "i=3", "f=2.5", "b=True", "ni=5"]]
    empty = table_items(pa.Table.from_pandas(df.iloc[:0], preserve_index=False), list(df.columns))
    assert empty.num_rows == 0


@pytest.mark.parametrize("block_rows, groups", [(10**6, 1), (37, 1), (37, 3)])
def test_transactions_held_here_mine_the_same_in_slices_and_threads(monkeypatch, block_rows, groups):
    # the driver encodes its transactions a slice at a time and mines item groups in threads
    import pyarrow as pa

    from dlmine_ray.data.local import LocalRows
    from dlmine_ray.mining import passes

    rng = np.random.default_rng(2)
    baskets = [sorted(set(rng.choice([f"i{k}" for k in range(15)], rng.integers(0, 7)).tolist())) for _ in range(250)]
    monkeypatch.setattr(passes, "LOCAL_BLOCK_ROWS", block_rows)
    n, counts, encoded = passes.count_items(LocalRows(pa.table({"items": baskets})))
    assert n == 250 and len(encoded) == -(-250 // min(block_rows, 250))
    frequent = sorted((i for i, c in counts.items() if c >= 10), key=lambda i: (-counts[i], i))
    tree = passes.mine_tree(encoded, {i: r for r, i in enumerate(frequent)}, groups, 10, None, local=True)
    found = {frozenset(frequent[r] for r in k): c for k, c in tree.as_dict().items()}
    assert found == _oracle(baskets, 10)
