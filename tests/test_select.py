"""task: select: stochastic gates rank the raw columns, classic selectors run beside them as
baselines, k is chosen (or given), and the same network is refitted on the chosen columns; the
run writes features.parquet, the downstream test accuracies, and a model that predict uses."""

import json

import numpy as np
import pandas as pd

from conftest import write_job
from dlmine_ray.cli import main
from dlmine_ray.data.synthetic import make_informative_columns

SELECTORS = ("gates", "deep_permutation", "mutual_info", "l1_logistic", "hgb_permutation")


def test_gates_find_the_informative_columns_among_noise(tmp_path, ray_local):
    df, informative = make_informative_columns(2000, columns=100, informative=10, seed=0)
    df.to_parquet(tmp_path / "syn.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="syn", task="select",
                    data={"path": str(tmp_path / "syn.parquet"), "target": "label", "id": None},
                    model={"hidden": [256, 128]}, train={"epochs": 30, "batch_size": 256},
                    select={"seeds": 2}, compare_baselines=True, knowledge="off")
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    table = pd.read_parquet(tmp_path / "out" / "features.parquet")
    assert len(table) == 100 and table["feature"].is_unique
    for s in SELECTORS:
        assert sorted(table[f"{s}_rank"]) == list(range(1, 101))
    top10 = set(table.sort_values("gates_rank")["feature"][:10])
    assert len(top10 & set(informative)) >= 9, sorted(top10)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 1 <= m["k"] <= 100 and m["columns"] == 100 and table["chosen"].sum() == m["k"]
    assert set(m["chosen"]) == set(table.loc[table["chosen"], "feature"])
    for s in (*SELECTORS, "all"):
        assert 0.0 <= m[f"hgb_{s}_accuracy"] <= 1.0
    # the deep model on the chosen columns is a real classifier of this table
    assert m["accuracy"] > 0.75
    # the same network retrained on each selector's k columns and on all: mutual information put
    # fewer informative columns first, and the network on its columns is worse on every seed
    comp = m["comparison"]
    assert comp["seeds"] == [0, 1] and comp["k"] == m["k"] and comp["rows_test"] == m["rows_test"]
    for v in ("gates", "mutual_info", "all"):
        assert len(comp["deep"][v]["scores"]) == 2
        assert m[f"mlp_{v}_accuracy"] == comp["deep"][v]["mean"]
    vs_mi = comp["gates_vs_mutual_info"]
    assert vs_mi["a"] == comp["deep"]["gates"]["scores"] and vs_mi["b"] == comp["deep"]["mutual_info"]["scores"]
    assert min(vs_mi["diff"]) > 0 and vs_mi["diff_ci"][0] <= vs_mi["mean_diff"] <= vs_mi["diff_ci"][1]
    # the gates' stability over the two seeds is the Jaccard similarity of their two choices
    a, b = (set(c) for c in comp["gates_chosen_by_seed"])
    assert comp["gates_chosen_by_seed"][0] == m["chosen"] and len(b) == m["k"]
    assert m["stability_gates"] == len(a & b) / len(a | b)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Feature selection" in page and "Validation accuracy against k" in page
    assert "retrained on each selector" in page


def test_a_one_hot_group_is_one_column_and_predict_uses_only_the_chosen(tmp_path, ray_local):
    rng = np.random.default_rng(1)
    n = 1200
    colour = rng.choice(["red", "green", "blue", "grey"], n)
    df = pd.DataFrame({"colour": colour, **{f"n{j}": rng.normal(size=n) for j in range(5)}})
    df["label"] = np.where(np.isin(colour, ["red", "blue"]), "a", "b")
    df.to_parquet(tmp_path / "d.parquet", index=False)
    job = write_job(tmp_path / "job.yaml", name="onehot", task="select",
                    data={"path": str(tmp_path / "d.parquet"), "target": "label", "id": None},
                    model={"hidden": [32]}, train={"epochs": 15, "batch_size": 64}, select={"k": 1, "seeds": 3},
                    knowledge="off")
    assert main(["run", job, "--output", str(tmp_path / "out")]) == 0
    table = pd.read_parquet(tmp_path / "out" / "features.parquet")
    assert sorted(table["feature"]) == ["colour", "n0", "n1", "n2", "n3", "n4"]  # one row for the group
    assert table.loc[table["chosen"], "feature"].tolist() == ["colour"]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["k"] == 1 and m["k_rule"] == "select.k" and m["accuracy"] > 0.95
    # every bootstrap draw puts the one column that decides the label first
    assert m["stability_mutual_info"] == 1.0 and m["stability_l1_logistic"] == 1.0
    # and the gates retrained with two other seeds put it first too
    assert m["comparison"]["gates_chosen_by_seed"] == [["colour"]] * 3 and m["stability_gates"] == 1.0
    # the saved model sees only 'colour': changing the other columns changes no prediction
    new = df.drop(columns="label").head(200)
    new.to_parquet(tmp_path / "new.parquet", index=False)
    noisy = new.assign(**{f"n{j}": rng.normal(size=len(new)) * 10 for j in range(5)})
    noisy.to_parquet(tmp_path / "noisy.parquet", index=False)
    for name in ("new", "noisy"):
        assert main(["predict", "--model", str(tmp_path / "out" / "model"), "--data", str(tmp_path / f"{name}.parquet"),
                     "--output", str(tmp_path / f"pred_{name}")]) == 0
    a = pd.read_parquet(tmp_path / "pred_new").filter(like="proba_").to_numpy()
    b = pd.read_parquet(tmp_path / "pred_noisy").filter(like="proba_").to_numpy()
    assert a.shape == (200, 2) and np.allclose(a, b, atol=1e-6)


def test_a_later_job_trains_on_the_chosen_columns(tmp_path, ray_local):
    df, informative = make_informative_columns(600, columns=12, informative=3, seed=3)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    data = {"path": str(tmp_path / "d.parquet"), "target": "label", "id": None}
    sel = write_job(tmp_path / "sel.yaml", name="sel", task="select", data=data, select={"k": 3, "seeds": 0},
                    knowledge="off")
    assert main(["run", sel, "--output", str(tmp_path / "sel")]) == 0
    chosen = json.loads((tmp_path / "sel" / "metrics.json").read_text())["chosen"]
    job = write_job(tmp_path / "job.yaml", name="later", task="classify",
                    data={**data, "features_from": str(tmp_path / "sel")}, knowledge="off")
    assert main(["run", job, "--output", str(tmp_path / "later")]) == 0
    meta = json.loads((tmp_path / "later" / "model" / "model.json").read_text())
    assert sorted(meta["input_columns"]) == sorted(chosen)
