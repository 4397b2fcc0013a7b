"""Feature selection for a class target: which raw columns the model needs.

Two stages of the one training loop. "gates": the MLP learns behind stochastic gates on its
inputs (``models/gates.py``, STG), one gate per raw column (a one-hot group shares one), with an
expected-L0 penalty; the gates' open probabilities rank the columns. Between the stages the task
ranks the columns three classic ways as baselines (mutual information, an L1 logistic model,
HistGradientBoosting permutation importance) and once more with the gated model's own permutation
importance, scores each ranking's top k with HistGradientBoosting on validation rows (the
accuracy-vs-k curves), and chooses k: ``select.k``, or the smallest k whose validation accuracy
is within one standard error of the curve's best (the one-standard-error rule). "fit": the same
network, fresh, sees only the chosen columns; its test metrics are the deep model's on them.

The run writes ``features.parquet`` (each column's score and rank by every selector, and whether
it was chosen) and compares on the test split HistGradientBoosting on every selector's top k and
on all columns. Its in-run comparisons (``compare``, ``select.seeds``) retrain the same network on
the gates', mutual information's and all columns over seeds on the same sampled rows (paired test
accuracy), and the gates themselves with other seeds (their stability)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import Options, Results, StageSetup
from dlmine_ray.tasks.classify import ClassifyTask, _class_indices

#: the selectors, in the order tables show them: the deep ones first
SELECTORS = ("gates", "deep_permutation", "mutual_info", "l1_logistic", "hgb_permutation")
#: the gates' means move this many times faster than the other weights: the penalty must be able to
#: close a gate (mu from 0.5 to about -1) within a few hundred steps at the job's learning rate.
#: It and select.penalty's default were chosen on two seeded tables of make_informative_columns
#: (seeds 1 and 2; 9 settings): 10 of 10 informative columns in the top 10 on both, against
#: 8 with a 10x smaller penalty and 8-9 without the speed-up (the tests use seed 0's table)
GATE_SPEED = 10.0
#: a target of numbers only, with more distinct values than this (or any with a fraction), is taken
#: for a numeric target, which select does not support
MAX_NUMERIC_CLASSES = 50


class SelectOptions(Options):
    """Feature selection: stochastic gates on the MLP's inputs, classic selectors as baselines."""

    k: Optional[int] = Field(None, ge=1, description="how many raw columns to keep; default: the smallest k "
                                                     "within one standard error of the best validation accuracy")
    penalty: float = Field(0.01, ge=0.0, description="weight of the gates' expected-L0 penalty (the expected "
                                                     "number of open gates)")
    gate_epochs: Optional[int] = Field(None, ge=1, description="epochs of the gated stage; default train.epochs")
    sample_rows: int = Field(5000, ge=100, description="training rows the classic selectors and the "
                                                       "accuracy-vs-k curves use (and as many validation rows)")
    curve_points: int = Field(8, ge=2, description="values of k on each accuracy-vs-k curve")
    seeds: int = Field(3, ge=0, le=20, description="seeds of the in-run comparisons, on the same sampled rows: "
                                                   "the same network retrained on the gates', mutual "
                                                   "information's and all columns (paired test accuracy), and "
                                                   "the gates retrained for their stability; 0: none")


class SelectTask(ClassifyTask):
    name = "select"
    options = SelectOptions
    tunable = False
    uses_feature_columns = True
    augments = False  # it ranks the data's own columns
    result_file = "features.parquet"
    baseline_name = "HGB on the chosen columns"
    headline = ("accuracy", "k")

    def check_data(self, profile, spec, trainable):
        d = spec.data
        st = profile.columns[d.target]
        if st.non_numeric == 0 and (len(st.all_counts) > MAX_NUMERIC_CLASSES or any(
                not float(v).is_integer() for v in st.all_counts)):
            raise DlmineError(f"target column '{d.target}' looks like a numeric target ({len(st.all_counts)} distinct "
                              "numbers): select needs a class target; numeric targets are not supported yet")
        super().check_data(profile, spec, trainable)
        drop = {d.target, *d.ignore, *(c for c in (d.id, d.group) if c)}
        columns = [c for c in profile.order if c not in drop and c not in profile.dropped_constant]
        k = spec.select.k
        if k is not None and k > len(columns):
            raise DlmineError(f"select.k ({k}) is larger than the number of feature columns ({len(columns)})")

    def stages(self, spec):
        return ["gates", "fit"]

    def stage_train(self, spec, stage):
        tr = spec.train.model_dump()
        if stage == "gates" and spec.select.gate_epochs:
            tr["epochs"] = spec.select.gate_epochs
        return tr

    def comparison_seeds(self, spec):
        return spec.select.seeds

    def stage_samples(self, spec):
        n = spec.select.sample_rows
        return {"train_xy": n, "valid_xy": n}

    # -- the model ---------------------------------------------------------------------------------
    def build_model(self, n_features, info, model_spec):
        from dlmine_ray.models.gates import FeatureGates, GatedNet, MaskedNet

        backbone = super().build_model(n_features, info, model_spec)
        if "mask" in info:
            return MaskedNet(info["mask"], backbone)
        names, group_of = _groups(info["feature_columns"])
        return GatedNet(FeatureGates(group_of, len(names), speed=GATE_SPEED), backbone)

    def step_loss(self, model, x, y, stage, ctx):
        loss = self.loss(model(x), y)
        if stage == "gates":
            loss = loss + ctx["info"]["penalty"] * _gates(model).open_probability().sum()
        return loss

    def eval_sums(self, model, x, y, stage, ctx):
        sums = self.batch_sums(model(x), y)
        if stage == "gates":  # the kept epoch is judged with the penalty: the gates must close
            sums["penalty_sum"] = float(ctx["info"]["penalty"] * _gates(model).open_probability().sum()) * sums["n"]
        return sums

    def epoch_metrics(self, sums, info):
        out = super().epoch_metrics(sums, info)
        if "penalty_sum" in sums:
            out["val_loss"] += sums["penalty_sum"] / max(sums["n"], 1.0)
        return out

    def initial_info(self, spec, feature_names, target_info):
        return {**target_info, "penalty": spec.select.penalty}

    # -- between the stages: rank, curve, choose --------------------------------------------------
    def after_stage(self, stage, model, samples, info, spec):
        if stage != "gates":
            return StageSetup()
        from threadpoolctl import threadpool_limits

        # one thread for scikit-learn's OpenMP: beside Ray's processes, HistGradientBoosting with a
        # thread per core ran 8x slower (23 s against 2.9 s for one fit on digits, 2 busy cores)
        with threadpool_limits(1):
            return self._rank_and_choose(model, samples, info, spec)

    def _rank_and_choose(self, model, samples, info, spec) -> StageSetup:
        opts = spec.select
        seed = spec.train.seed
        names, group_of = _groups(info["feature_columns"])
        x_tr, y_tr = samples["train_xy"]
        if "valid_xy" in samples:
            x_va, y_va = samples["valid_xy"]
        else:  # no validation split: a quarter of the sampled training rows
            cut = max(1, len(x_tr) // 4)
            x_va, y_va, x_tr, y_tr = x_tr[:cut], y_tr[:cut], x_tr[cut:], y_tr[cut:]
        y_tr, y_va = np.asarray(y_tr).astype(np.int64), np.asarray(y_va).astype(np.int64)
        with torch.no_grad():
            gate_p = _gates(model).open_probability().numpy().astype(np.float64)
        scores = {"gates": gate_p,
                  "deep_permutation": _deep_permutation(model, x_va, y_va, group_of, len(names), seed),
                  "mutual_info": _mutual_info(x_tr, y_tr, group_of, len(names), seed),
                  "l1_logistic": _l1_logistic(x_tr, y_tr, group_of, len(names), seed),
                  "hgb_permutation": _hgb_permutation(x_tr, y_tr, x_va, y_va, group_of, len(names), seed)}
        ks = _k_grid(len(names), opts.curve_points, opts.k)
        curves = {s: [_hgb_accuracy(x_tr, y_tr, x_va, y_va, _columns(_top(v, k), group_of), seed) for k in ks]
                  for s, v in scores.items()}
        k = opts.k if opts.k is not None else _one_se_k(ks, curves["gates"], len(y_va))
        chosen = _top(scores["gates"], k)
        # how much the classic selectors' top k move between bootstrap draws of the sampled rows (the
        # gates' stability needs several trainings: benchmarks/bench_select.py measures it over seeds)
        rankers = {"mutual_info": _mutual_info, "l1_logistic": _l1_logistic}
        stability = {s: _bootstrap_stability(f, x_tr, y_tr, group_of, len(names), k, seed)
                     for s, f in rankers.items()}
        mask = np.isin(group_of, chosen).astype(np.float32)
        sel = {"columns": names, "scores": {s: [float(v) for v in a] for s, a in scores.items()},
               "k_grid": ks, "curves": curves, "k": int(k), "chosen": [names[i] for i in chosen],
               "k_rule": "select.k" if opts.k is not None else "one standard error",
               "valid_rows": int(len(y_va)), "train_rows": int(len(y_tr)), "stability": stability}
        shown = ", ".join(sel["chosen"][:8]) + (", ..." if k > 8 else "")
        notes = [f"kept {k} of {len(names)} columns ({sel['k_rule']}): {shown}"]
        return StageSetup(info={"selection": sel, "mask": mask.tolist()}, notes=notes)

    # -- in-run comparisons ------------------------------------------------------------------------
    def compare(self, spec, info, rows, retrain, seeds):
        """The same network (fresh weights, the "fit" stage) on the gates' k columns, on mutual
        information's k and on all columns, per seed on the same rows, with paired differences;
        and the gates stage retrained with the other seeds: the mean Jaccard similarity of the k
        columns they rank first, the run's own choice included."""
        from dlmine_ray.tasks.bootstrap import seeded_difference
        from dlmine_ray.tasks.unsupervised import model_outputs

        sel = info["selection"]
        k = sel["k"]
        names, group_of = _groups(info["feature_columns"])
        masks = {"gates": np.asarray(info["mask"], dtype=np.float32),
                 "mutual_info": np.isin(group_of, _top(np.asarray(sel["scores"]["mutual_info"]), k)).astype(np.float32),
                 "all": np.ones(len(group_of), dtype=np.float32)}
        x_te, y_te = rows["test"]
        y_te = np.asarray(y_te).astype(np.int64)
        outputs: dict[str, list] = {v: [] for v in masks}
        for s in seeds:
            for variant, m in masks.items():
                model = retrain({**info, "mask": m.tolist()}, ["fit"], s)
                outputs[variant].append(model_outputs(model, x_te))
        metric = self.headline[0]
        paired = {f"gates_vs_{other}": seeded_difference(self.weighted_score, outputs["gates"], outputs[other], y_te,
                                                         seeds[0] + 24)
                  for other in ("mutual_info", "all")}
        # each setting's per-seed scores, as the paired comparisons computed them
        per_seed = {"gates": paired["gates_vs_all"]["a"], "mutual_info": paired["gates_vs_mutual_info"]["b"],
                    "all": paired["gates_vs_all"]["b"]}
        deep = {v: {"scores": scores, "mean": float(np.mean(scores))} for v, scores in per_seed.items()}
        # the gates' own stability: the run's choice and the gates retrained with the other seeds
        plain = {key: v for key, v in info.items() if key not in ("mask", "selection")}
        chosen = [sel["chosen"]]
        for s in seeds[1:]:
            gated = retrain(plain, ["gates"], s)
            with torch.no_grad():
                p = _gates(gated).open_probability().numpy().astype(np.float64)
            chosen.append([names[i] for i in _top(p, k)])
        stability = _mean_jaccard([set(c) for c in chosen]) if len(chosen) > 1 else None
        flat = {f"mlp_{v}_{metric}": d["mean"] for v, d in deep.items()}
        if stability is not None:
            flat["stability_gates"] = stability
        return {"metric": metric, "seeds": list(seeds), "k": int(k), "deep": deep, **paired,
                "gates_chosen_by_seed": chosen, "stability_gates": stability, "metrics": flat}

    # -- the baselines and the results ------------------------------------------------------------
    def fit_baseline(self, x_train, y_train, info, spec):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # see after_stage
            return self._fit_baselines(x_train, y_train, info, spec)

    def _fit_baselines(self, x_train, y_train, info, spec):
        from sklearn.ensemble import HistGradientBoostingClassifier

        sel = info["selection"]
        _, group_of = _groups(info["feature_columns"])
        y = np.asarray(y_train).astype(np.int64)
        out = {}
        for s in SELECTORS:
            cols = _columns(_top(np.asarray(sel["scores"][s]), sel["k"]), group_of)
            out[s] = (cols, HistGradientBoostingClassifier(random_state=spec.train.seed).fit(x_train[:, cols], y))
        every = np.arange(x_train.shape[1])
        out["all"] = (every, HistGradientBoostingClassifier(random_state=spec.train.seed).fit(x_train, y))
        return out

    def baseline_predict(self, baseline, x, info):
        cols, model = baseline["gates"]
        return super().baseline_predict(model, x[:, cols], info)

    def baseline_outputs(self, baseline, x, info):
        cols, model = baseline["gates"]
        return super().baseline_outputs(model, x[:, cols], info)

    def results(self, batches, info, spec, baseline, n_rows):
        from sklearn.metrics import accuracy_score

        xs: list = []

        def keep_features(bs):
            for b in bs:
                xs.append(b["features"])
                yield b

        res = super().results(keep_features(batches), info, spec, baseline, n_rows)
        sel = info["selection"]
        metrics = dict(res.metrics)
        metrics.update({"k": sel["k"], "columns": len(sel["columns"]), "k_rule": sel["k_rule"],
                        "chosen": sel["chosen"]})
        metrics.update({f"stability_{s}": v for s, v in sel.get("stability", {}).items()})
        test_acc = {}
        if baseline is not None:
            x = np.concatenate(xs)
            truth = _class_indices(res.table[spec.data.target].to_numpy(), info["classes"])
            for name, (cols, model) in baseline.items():
                test_acc[name] = float(accuracy_score(truth, model.predict(x[:, cols])))
                metrics[f"hgb_{name}_accuracy"] = test_acc[name]
        table = _features_table(sel)
        return Results(table, metrics, {**res.report, "selection": sel, "hgb_test_accuracy": test_acc})

    # -- what the user sees -----------------------------------------------------------------------
    def summary_text(self, metrics):
        return (f"kept {metrics['k']} of {metrics['columns']} columns; deep model on them: accuracy "
                f"{metrics['accuracy']:.4g}" + (f", HGB on them {metrics['hgb_gates_accuracy']:.4g}, HGB on all "
                                                f"{metrics['hgb_all_accuracy']:.4g}"
                                                if "hgb_all_accuracy" in metrics else "")
                + (f"; retrained network on mutual information's k {metrics['mlp_mutual_info_accuracy']:.4g}, "
                   f"on all {metrics['mlp_all_accuracy']:.4g}" if "mlp_all_accuracy" in metrics else ""))

    def report_sections(self, spec, metrics, material, info):
        from dlmine_ray.report.kit import table

        sel = material.get("selection")
        if not sel:
            return super().report_sections(spec, metrics, material, info)
        out = ["<h2>Feature selection</h2>",
               f"<p>kept <b>{sel['k']}</b> of {len(sel['columns'])} columns ({sel['k_rule']}): "
               + ", ".join(sel["chosen"]) + "</p>"]
        acc = material.get("hgb_test_accuracy") or {}
        if acc:
            rows = [{"features": f"top {sel['k']} by {s}" if s != "all" else f"all {len(sel['columns'])}",
                     "HGB test accuracy": acc[s]} for s in [*SELECTORS, "all"] if s in acc]
            rows.insert(0, {"features": f"top {sel['k']} by gates, the deep model itself",
                            "HGB test accuracy": metrics.get("accuracy")})
            out.append("<h3>Test accuracy on each selector's columns</h3>" + table(pd.DataFrame(rows)))
        comp = material.get("comparison")
        if comp:
            out.append(_comparison_html(comp, len(sel["columns"])))
        if sel.get("stability"):
            out.append("<p>stability of the top k over 5 bootstrap draws of the rows (mean Jaccard): "
                       + ", ".join(f"{s} {v:.2f}" for s, v in sel["stability"].items())
                       + (f"; the gates over {len(comp['seeds'])} training seeds: {comp['stability_gates']:.2f}"
                          if comp and comp.get("stability_gates") is not None else "") + "</p>")
        out.append("<h3>Validation accuracy against k (HistGradientBoosting on each ranking's top k)</h3>"
                   + _curve_plot(sel))
        top = _features_table(sel).head(30)
        out.append("<h3>The columns by each selector (top 30 by gates)</h3>" + table(top, left=("feature",)))
        return out


def _comparison_html(comp: dict, n_columns: int) -> str:
    """The deep model retrained on each selector's columns: its test metric per seed, and the
    gates' paired differences with their intervals."""
    from dlmine_ray.report.kit import table

    metric, k = comp["metric"], comp["k"]
    label = {"gates": f"top {k} by gates", "mutual_info": f"top {k} by mutual_info", "all": f"all {n_columns}"}
    rows = []
    for v, d in comp["deep"].items():
        row = {"columns": label[v], f"mean test {metric}": d["mean"],
               "per seed": ", ".join(f"{x:.4f}" for x in d["scores"])}
        pair = comp.get(f"gates_vs_{v}")
        if pair:
            ci = pair["diff_ci"]
            row["gates minus this (95% interval)"] = (f"{pair['mean_diff']:+.4f}"
                                                      + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
        rows.append(row)
    return (f"<h3>The same network retrained on each selector's columns ({len(comp['seeds'])} seed(s), "
            f"{comp['rows_train']:,} sampled training rows, {comp['rows_test']:,} test rows)</h3>"
            "<p>Not the saved model: the run's network with fresh weights, trained in the driver on the same "
            "sampled rows for each set of columns. The interval is a paired bootstrap over the test rows of the "
            "mean difference over seeds.</p>" + table(pd.DataFrame(rows), left=("columns", "per seed")))


def _gates(model):
    return getattr(model, "module", model).gates


def _groups(feature_columns: list[str]) -> tuple[list[str], np.ndarray]:
    """The raw columns in order of first appearance, and the group (raw column) of each feature."""
    names: list[str] = []
    index: dict[str, int] = {}
    group_of = np.empty(len(feature_columns), dtype=np.int64)
    for j, c in enumerate(feature_columns):
        if c not in index:
            index[c] = len(names)
            names.append(c)
        group_of[j] = index[c]
    return names, group_of


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The groups of the k highest scores (ties broken by position, stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def _columns(groups: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    return np.nonzero(np.isin(group_of, groups))[0]


def _k_grid(n_groups: int, points: int, k: Optional[int]) -> list[int]:
    """About ``points`` values of k from 1 to ``n_groups``, spaced geometrically, with ``k``."""
    grid = set(np.unique(np.round(np.geomspace(1, n_groups, points)).astype(int)).tolist())
    if k is not None:
        grid.add(int(k))
    return sorted(g for g in grid if 1 <= g <= n_groups)


def _one_se_k(ks: list[int], accuracy: list[float], n_valid: int) -> int:
    """The smallest k whose accuracy is within one standard error (of the best, on ``n_valid``
    rows) of the best."""
    best = max(accuracy)
    se = np.sqrt(max(best * (1 - best), 1e-12) / max(n_valid, 1))
    return next(k for k, a in zip(ks, accuracy) if a >= best - se)


def _hgb_accuracy(x_tr, y_tr, x_va, y_va, cols: np.ndarray, seed: int) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed, max_iter=100).fit(x_tr[:, cols], y_tr)
    return float((model.predict(x_va[:, cols]) == y_va).mean())


def _per_group(values: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(group_of, weights=np.asarray(values, dtype=np.float64), minlength=n_groups)


def _mutual_info(x, y, group_of, n_groups, seed) -> np.ndarray:
    """Mutual information of each raw column with the class: a numeric column as it is (nearest
    neighbours estimate), a one-hot group as one discrete column of category codes."""
    from sklearn.feature_selection import mutual_info_classif

    cols, discrete = [], []
    for g in range(n_groups):
        members = np.nonzero(group_of == g)[0]
        if len(members) == 1 and not _is_one_hot(x[:, members[0]]):
            cols.append(x[:, members[0]])
            discrete.append(False)
        else:  # the category's code; no category (all zero) is its own code
            block = x[:, members]
            cols.append(np.where(block.max(axis=1) > 0, block.argmax(axis=1), -1).astype(np.float64))
            discrete.append(True)
    return mutual_info_classif(np.column_stack(cols), y, discrete_features=np.array(discrete), random_state=seed)


def _bootstrap_stability(rank, x, y, group_of, n_groups, k, seed, draws: int = 5) -> float:
    """The mean Jaccard similarity, over pairs of ``draws`` bootstrap samples of the rows, of the k
    columns ``rank`` (a selector's scoring function) puts first."""
    rng = np.random.default_rng(seed + 11)
    tops = []
    for _ in range(draws):
        i = rng.integers(0, len(x), len(x))
        tops.append(set(_top(rank(x[i], y[i], group_of, n_groups, seed), k).tolist()))
    return _mean_jaccard(tops)


def _mean_jaccard(sets: list[set]) -> float:
    """The mean Jaccard similarity over every pair of ``sets`` (at least two, none empty)."""
    return float(np.mean([len(a & b) / len(a | b) for j, a in enumerate(sets) for b in sets[j + 1:]]))


def _is_one_hot(v: np.ndarray) -> bool:
    return bool(np.isin(v, (0.0, 1.0)).all())


def _l1_logistic(x, y, group_of, n_groups, seed) -> np.ndarray:
    """The size of an L1-regularised logistic model's weights on each raw column (summed over the
    classes and a one-hot group's columns)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(l1_ratio=1.0, penalty="elasticnet", C=0.1, solver="saga", max_iter=300,
                               random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's convergence warning: the ranking is what is used
        model.fit(x, y)
    return _per_group(np.abs(model.coef_).sum(axis=0), group_of, n_groups)


def _permutation_drop(predict, x, y, group_of, n_groups, seed, repeats: int = 3) -> np.ndarray:
    """The mean drop in accuracy when one raw column's values (all a one-hot group's columns
    together) are shuffled across rows."""
    rng = np.random.default_rng(seed)
    base = (predict(x) == y).mean()
    out = np.zeros(n_groups)
    for g in range(n_groups):
        members = np.nonzero(group_of == g)[0]
        drops = []
        for _ in range(repeats):
            xp = x.copy()
            xp[:, members] = x[rng.permutation(len(x))][:, members]
            drops.append(base - (predict(xp) == y).mean())
        out[g] = float(np.mean(drops))
    return out


def _deep_permutation(model, x, y, group_of, n_groups, seed) -> np.ndarray:
    def predict(a):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))).argmax(dim=1).numpy()

    return _permutation_drop(predict, x, y, group_of, n_groups, seed)


def _hgb_permutation(x_tr, y_tr, x_va, y_va, group_of, n_groups, seed) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed, max_iter=100).fit(x_tr, y_tr)
    return _permutation_drop(model.predict, x_va, y_va, group_of, n_groups, seed)


def _features_table(sel: dict) -> pd.DataFrame:
    """One row per raw column: each selector's score and rank (1 = best), and whether it was chosen."""
    table = pd.DataFrame({"feature": sel["columns"]})
    for s in SELECTORS:
        v = np.asarray(sel["scores"][s], dtype=np.float64)
        table[f"{s}_score"] = v
        rank = np.empty(len(v), dtype=np.int64)
        rank[np.argsort(-v, kind="stable")] = np.arange(1, len(v) + 1)
        table[f"{s}_rank"] = rank
    table["chosen"] = table["feature"].isin(sel["chosen"])
    return table.sort_values("gates_rank", kind="stable").reset_index(drop=True)


def _curve_plot(sel: dict) -> str:
    from dlmine_ray.report.kit import colour, plt, png

    fig, ax = plt().subplots(figsize=(7, 4))
    for i, s in enumerate(SELECTORS):
        ax.plot(sel["k_grid"], sel["curves"][s], marker="o", label=s, color=colour(i, len(SELECTORS)))
    ax.axvline(sel["k"], color="grey", linestyle="--", label=f"chosen k = {sel['k']}")
    ax.set_xscale("log")
    ax.set_xlabel("k (raw columns kept)")
    ax.set_ylabel(f"validation accuracy ({sel['valid_rows']:,} rows)")
    ax.legend(fontsize=8)
    return png(fig)
