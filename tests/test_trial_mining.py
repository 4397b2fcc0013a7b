"""Mining the trial history: importance, rules "settings -> top quartile" found with the project's
own FP-Growth, settings that never mattered fixed in the next search, and `dlmine history --mine`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dlmine_ray.cli import main
from dlmine_ray.tune.knowledge import KnowledgeBase
from dlmine_ray.tune.lessons import fixed_settings, importances, infer_space, trial_rules

SPACE = {"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.hidden": [[64], [128, 64], [256, 256, 128]],
         "train.batch_size": [64, 128, 256, 512]}


def planted(n=80, seed=0, noise=0.05):
    """Trials whose validation loss is low exactly when lr >= 4e-3 and the net has 3 layers (either
    alone does nothing); the batch size does not matter at all."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        high = i % 2 == 0
        lr = float(np.exp(rng.uniform(np.log(4e-3), np.log(1e-2)))) if high else \
            float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-3))))
        hidden = [[64], [128, 64], [256, 256, 128]][(i // 2) % 3]
        good = high and len(hidden) == 3  # 1 trial in 6: all of them in the top quartile
        rows.append({"trial": f"t{i}", "status": "completed", "value": (0.3 if good else 1.0) + rng.normal(0, noise),
                     "params": {"train.lr": lr, "model.hidden": hidden,
                                "train.batch_size": int(rng.choice([64, 128, 256, 512]))}})
    return pd.DataFrame(rows)


def test_history_mining_returns_the_planted_rule():
    rules = trial_rules(planted(), SPACE, "min")
    top = rules.iloc[0]
    # the planted rule is the best one, both conditions in it, and it holds every time
    assert "model.hidden=[256, 256, 128]" in top["rule"] and "train.lr >= " in top["rule"], rules
    assert top["rule"].endswith("-> top quartile") and top["confidence"] == 1.0 and top["lift"] > 3
    assert not rules["rule"].str.contains("batch_size").any()  # noise gives no rule of confidence 0.5


def test_importance_and_fixing_what_never_mattered():
    t = planted(noise=0.01)
    imp = importances(t, SPACE, "min").set_index("setting")["importance"]
    assert imp["train.batch_size"] < 0.05 < imp["train.lr"]
    fixed, _ = fixed_settings(t, SPACE, "min")
    best = t.loc[t["value"].idxmin(), "params"]
    assert fixed == {"train.batch_size": best["train.batch_size"]}
    assert fixed_settings(t.head(5), SPACE, "min")[0] == {}  # too few trials to say


def test_history_mine_on_a_planted_knowledge_base(tmp_path, capsys):
    kb_path = tmp_path / "kb.db"
    kb = KnowledgeBase(f"sqlite:///{kb_path}")
    t = planted()
    kb.record({"task": "classify", "name": "tuned", "selection_metric": "val_loss", "selection_mode": "min",
               "selection_value": float(t["value"].min())},
              {"fingerprint": "abc123", "name": "planted", "n_rows": 100, "n_columns": 4, "meta_features": {}},
              t.to_dict("records"))
    assert set(infer_space(t)) == set(SPACE)
    assert main(["history", "--knowledge", str(kb_path), "--mine"]) == 0
    out = capsys.readouterr().out
    assert "classify on planted: 80 trials" in out and "what mattered" in out
    assert "top quartile" in out and "256, 256, 128" in out
