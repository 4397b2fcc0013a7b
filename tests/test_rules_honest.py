"""Rules a user can trust: planted associations that the demo finds, rules that are associations
(lift above min_lift), max_rules that says when it cuts, and rules generated from the compact
itemset tree exactly as mlxtend does (mlxtend is a test-only oracle)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dlmine_ray.cli import main


def _job(tmp_path, data, name="run", **rules):
    job = {"name": "r", "task": "rules", "data": data, "rules": {"min_confidence": 0.5, "groups": 3, **rules}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / name
    assert main(["run", str(tmp_path / f"{name}.yaml"), "--output", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def _dense(path):
    """200 transactions over 25 items, each item present with probability 0.6."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(42)
    baskets = [[f"i{j:02d}" for j in np.flatnonzero(rng.random(25) < 0.6)] for _ in range(200)]
    pq.write_table(pa.table({"items": pa.array(baskets, type=pa.list_(pa.string()))}), path)
    return baskets


def _key(a, c):
    return frozenset(a), frozenset(c)


def test_dense_rules_match_mlxtend_and_max_rules_keeps_the_best(tmp_path, ray_local, capsys):
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    baskets = _dense(tmp_path / "d.parquet")
    data = {"path": str(tmp_path / "d.parquet"), "items": "items"}
    out, m = _job(tmp_path, data, min_support=0.15)
    log = capsys.readouterr().err

    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(baskets).transform(baskets), columns=te.columns_)
    n = len(baskets)
    fi = fpgrowth(onehot, min_support=0.15 - 1e-12, use_colnames=True)
    theirs_sets = {frozenset(s): int(round(v * n)) for s, v in zip(fi["itemsets"], fi["support"])}
    items = pd.read_parquet(out / "itemsets.parquet")
    assert {frozenset(s): int(c) for s, c in zip(items["itemset"], items["count"])} == theirs_sets
    assert len(theirs_sets) > 2000 and m["n_itemsets"] == len(theirs_sets)
    assert f"{len(theirs_sets):,} frequent itemsets found" in log and "generating rules" in log
    assert "rules.max_len" in log and "rules.max_rules" in log

    # mlxtend's rules filtered the same way: confidence >= 0.5 and lift > 1 (from the counts, exactly)
    rules = association_rules(fi, num_itemsets=n, metric="confidence", min_threshold=0.5)
    count = theirs_sets
    real = [(a, c, t) for a, c, t in zip(rules["antecedents"], rules["consequents"], rules.itertuples())
            if count[a | c] * n > count[a] * count[c]]
    assert 0 < len(real) < len(rules)  # the lift filter drops some of them
    ours = pd.read_parquet(out / "rules.parquet")
    mine = {_key(a, c): row for a, c, row in zip(ours["antecedent"], ours["consequent"], ours.itertuples())}
    assert set(mine) == {_key(a, c) for a, c, _ in real} and m["n_rules"] == len(real) == m["n_rules_found"]
    for a, c, t in real:
        r = mine[_key(a, c)]
        assert r.support == pytest.approx(t.support) and r.confidence == pytest.approx(t.confidence)
        assert r.lift == pytest.approx(t.lift) and r.leverage == pytest.approx(t.leverage, abs=1e-12)
        assert r.conviction == pytest.approx(t.conviction) or (np.isinf(r.conviction) and np.isinf(t.conviction))
    assert (ours["lift"] > 1).all() and (np.diff(ours["lift"].to_numpy()) <= 0).all()  # sorted by lift
    assert m["rules_truncated"] is False

    # max_rules keeps the best 50 by lift and says that it cut
    out50, m50 = _job(tmp_path, data, name="cut", min_support=0.15, max_rules=50)
    log = capsys.readouterr().err
    cut = pd.read_parquet(out50 / "rules.parquet")
    assert len(cut) == 50 and m50["n_rules"] == 50 and m50["n_rules_found"] == len(real)
    assert m50["rules_truncated"] is True and "rules.max_rules cut the output" in m50["rules_message"]
    assert "rules.max_rules cut the output" in log and "rules.max_rules cut" in (out50 / "report.html").read_text()
    kept = {_key(a, c) for a, c in zip(cut["antecedent"], cut["consequent"])}
    assert kept <= set(mine)
    dropped = [row.lift for k, row in mine.items() if k not in kept]
    assert cut["lift"].min() >= max(dropped)
    assert cut["lift"].tolist() == sorted(ours["lift"].tolist(), reverse=True)[:50]


def test_builtin_baskets_top_rules_are_the_planted_groups(tmp_path, ray_local):
    from dlmine_ray.data.synthetic import planted_description, planted_groups

    groups = [frozenset(g) for g in planted_groups(200, 0)]  # what builtin:baskets plants
    assert len(groups) == 10 and "planted 10 item group(s)" in planted_description(200, 0)
    out, m = _job(tmp_path, {"path": "builtin:baskets", "items": "items"}, min_support=0.01, min_confidence=0.6,
                  max_len=4)
    rules = pd.read_parquet(out / "rules.parquet")
    assert (rules["lift"] > 1).all()
    planted = [any(frozenset(a) | frozenset(c) <= g for g in groups)
               for a, c in zip(rules["antecedent"], rules["consequent"])]
    assert all(planted[:10]) and (rules["lift"].head(10) > 10).all(), rules.head(10)
    # every planted group is found whole, with a rule over all of it well above independence
    whole = {frozenset(a) | frozenset(c): lift for a, c, lift in zip(rules["antecedent"], rules["consequent"],
                                                                      rules["lift"])}
    for g in groups:
        assert whole.get(g, 0) > 2, sorted(g)


def test_make_data_says_what_it_planted(tmp_path, capsys):
    import pyarrow.parquet as pq

    assert main(["make-data", "baskets", "--rows", "200", "--items", "60", "--output", str(tmp_path / "b")]) == 0
    said = capsys.readouterr().out
    assert "planted" in said and "item group(s)" in said
    meta = pq.read_schema(next((tmp_path / "b").glob("*.parquet"))).metadata
    assert meta[b"dlmine.planted"].decode() in said


@pytest.mark.parametrize("field,value,says", [("min_lift", -0.5, "greater than or equal to 0"),
                                              ("max_rules", 0, "greater than or equal to 1"),
                                              ("max_rules", "many", "integer")])
def test_min_lift_and_max_rules_are_checked(tmp_path, capsys, field, value, says):
    job = {"name": "r", "task": "rules", "data": {"path": "x.parquet", "items": "items"}, "rules": {field: value}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: invalid job field 'rules.{field}'") and says in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("groups", [1, 4])
def test_tree_rules_match_the_tuple_rules_across_chunks(groups):
    # the compact tree alone, no Ray: rules in small chunks across groups equal the plain
    # itertools rules of the same itemsets, with the lift filter applied exactly
    from dlmine_ray.mining.itemsets import association_rules
    from dlmine_ray.mining.local import group_prefixes_csr, itemset_tuples, mine_csr, sort_rows
    from dlmine_ray.mining.tree import ItemsetTree

    rng = np.random.default_rng(7)
    ts = [np.flatnonzero(rng.random(14) < 0.45) for _ in range(250)]
    indptr, items = sort_rows(np.r_[0, np.cumsum([len(t) for t in ts])].astype(np.int64),
                              np.concatenate(ts).astype(np.int32))
    trees, expected = [], {}
    for g in range(groups):
        p, i = group_prefixes_csr(indptr, items, groups, g)
        tree = mine_csr(p, i, 14, 20, group=g if groups > 1 else -1, groups=groups)
        trees.append(tree)
        expected.update(itemset_tuples(*tree))
    tree = ItemsetTree.from_groups(iter(trees), 14)
    assert tree.as_dict() == expected and len(tree) > 300 and tree.max_size() >= 4
    assert tree.find((0, 1)) >= 0 and tree.count[tree.find((0, 1))] == expected[(0, 1)]
    ref = association_rules(expected, 250, 0.4)
    ref = {(a, c) for a, c, cnt, lift in zip(ref["antecedent"], ref["consequent"], ref["count"], ref["lift"])
           if cnt * 250 > expected[a] * expected[c]}
    got, last = set(), 0
    for done, (nodes, masks, a, c) in tree.rule_chunks(250, 0.4, 1.0, chunk_rules=40, itemsets_per_call=97):
        assert len(nodes) <= 40 and done > last
        last = done
        a_offs, a_r, c_offs, c_r = tree.decode_rules(nodes, masks)
        for r in range(len(nodes)):
            ant, con = tuple(a_r[a_offs[r]:a_offs[r + 1]]), tuple(c_r[c_offs[r]:c_offs[r + 1]])
            assert a[r] == expected[ant] and c[r] == expected[con]
            got.add((ant, con))
    assert got == ref and len(ref) > 100
