"""Features learned by data mining (``augment: [clusters, anomaly, rules]`` of a classify or
regress job), fitted on a seeded sample of the training split's encoded rows and appended to the
encoded features by the preprocessor (``TabularPreprocessor.augment_``), so that training, a
run's scoring, ``dlmine predict`` and ``dlmine explain`` compute them the same way.

- clusters: soft memberships of each row in the clusters of the cluster task's own model (a
  denoising autoencoder, initial clusters, DEC refinement: tasks/cluster.py, with the job's
  ``cluster:`` settings), trained in this process by the same stage loop as a run
  (``train.stages.run_stages``). With ``augment_models: classic``: k-means (scikit-learn) on the
  encoded features, k from 2..8 by silhouette on a sample, memberships with DEC's Student-t
  kernel, q_ij ∝ (1 + ||x_i - mu_j||^2)^-1, normalised over j.
- anomaly: the anomaly score of the detect task's own model (tasks/detect.py, with the job's
  ``detect:`` settings), trained the same way. With ``augment_models: classic``: an
  IsolationForest (scikit-learn) score, 2^(-E[h(x)]/c(n)) (higher: more anomalous), its trees
  saved as plain arrays and scored here, so that a model folder holds no pickle.
- rules: numeric encoded columns cut into training-quantile tertiles, one-hot columns as items
  (value 1), frequent itemsets from the project's exact miner (``mining.local.mine_csr``), rules
  with ``mining.itemsets.association_rules``; the top ``RULES_K`` distinct itemsets of the rules
  by lift, each a 0/1 feature: the row holds every item of the rule (antecedent and consequent).

Every item is an interval ``lo < x[:, column] <= hi`` of one encoded column, so that a rule is
checked by the same comparison at fit and at scoring. The fitted state is ``augment.json``
(settings, names; a task model's info and shape) and ``augment.npz`` (arrays; a task model's
weights, one array a tensor) next to ``preprocess.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from dlmine_ray.tasks.base import AUGMENT_KINDS as KINDS
#: at most this many training rows fit the augmenters (a seeded sample)
SAMPLE_ROWS = 5000
SILHOUETTE_ROWS = 1000
K_RANGE = range(2, 9)
TREES, TREE_SAMPLES = 100, 256
RULES_K, RULES_MIN_SUPPORT, RULES_MIN_CONFIDENCE, RULES_MAX_LEN = 20, 0.1, 0.5, 3
JSON_FILE, NPZ_FILE = "augment.json", "augment.npz"
#: how the clusters and anomaly columns are mined: the project's own task models, or scikit-learn's
MODELS = ("tasks", "classic")
#: share of the sampled training rows a task model validates on (its early stopping)
TASK_VALID = 0.1


class Augmenter:
    """Appends mined features to an encoded matrix: ``extend(x)`` returns ``[x, added]``.

    Learned state (set by ``fit`` / ``load``): ``names_`` (one per added column), ``counts_``
    (kind -> columns added), ``settings_`` (what was fitted, for the report), ``arrays_``,
    ``task_models_`` (kind -> the task model's task, final info and shape)."""

    def __init__(self, kinds: list[str], seed: int = 0, models: str = "tasks", options: Optional[dict] = None):
        """``options``: the job's sections of the mining tasks (``{"cluster": {...}, "detect": {...}}``),
        the settings of the task models."""
        if models not in MODELS:
            raise ValueError(f"augment models must be one of {MODELS}, not {models!r}")
        self.kinds = [k for k in KINDS if k in kinds]
        self.seed = seed
        self.models = models
        self.options = dict(options or {})
        self._nets: dict = {}  # kind -> the task model, rebuilt from arrays_ on first use
        self._trainer = None
        self.names_: list[str] = []
        self.counts_: dict[str, int] = {}
        self.settings_: dict = {}
        self.arrays_: dict[str, np.ndarray] = {}
        self.task_models_: dict[str, dict] = {}  # kind -> task, final info, model shape (models: tasks)

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, x: np.ndarray, names: list[str], n_numeric: int,
            units: Optional[list[tuple[float, float]]] = None, trainer=None) -> "Augmenter":
        """Fit on encoded training rows ``x`` whose first ``n_numeric`` columns are standardised
        numeric ones (``units``: their (mean, std), to name rule items in original units) and
        the rest one-hot columns; returns self. ``trainer`` trains a task model on rows
        (``train.stages.fit_rows``; needed with models "tasks")."""
        x = np.asarray(x, dtype=np.float32)
        self._trainer = trainer
        for kind in self.kinds:
            added, self.settings_[kind] = getattr(self, f"_fit_{kind}")(x, names, n_numeric, units or [])
            self.names_ += added
            self.counts_[kind] = len(added)
        return self

    def _fit_clusters(self, x, names, n_numeric, units) -> list[str]:
        if self.models == "tasks":
            info = self._fit_task("clusters", x, names)
            settings = {"method": "the cluster task's model (autoencoder, initial clusters, DEC), memberships q",
                        "k": int(info["k"]), "init": info.get("init"), "rows": len(x),
                        "silhouette_by_k": info.get("k_scores", {})}
            return [f"cluster_{j}" for j in range(int(info["k"]))], settings
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        rng = np.random.default_rng(self.seed)
        sub = x[rng.permutation(len(x))[:SILHOUETTE_ROWS]]
        ks = [k for k in K_RANGE if k < len(sub)] or [1]
        scores, best = {}, None
        for k in ks:
            km = KMeans(k, n_init=4, random_state=self.seed).fit(x)
            labels = km.predict(sub)
            s = silhouette_score(sub, labels) if 1 < len(set(labels.tolist())) < len(sub) else -1.0
            scores[k] = round(float(s), 4)
            if best is None or s > best[0]:
                best = (s, km)
        centroids = best[1].cluster_centers_.astype(np.float64)
        self.arrays_["centroids"] = centroids
        settings = {"method": "k-means on the encoded features, Student-t memberships (DEC)",
                    "k": len(centroids), "silhouette_by_k": scores, "rows": len(x)}
        return [f"cluster_{j}" for j in range(len(centroids))], settings

    def _fit_anomaly(self, x, names, n_numeric, units) -> list[str]:
        if self.models == "tasks":
            info = self._fit_task("anomaly", x, names)
            settings = {"method": f"the detect task's model ({info.get('method')}), log(1 + its anomaly score)",
                        "rows": len(x)}
            return ["anomaly_score"], settings
        from sklearn.ensemble import IsolationForest
        from sklearn.ensemble._iforest import _average_path_length

        iso = IsolationForest(n_estimators=TREES, max_samples=min(TREE_SAMPLES, len(x)),
                              random_state=self.seed).fit(x)
        left, right, feat, thr, leaf, offs = [], [], [], [], [], [0]
        for tree, cols, depth, avg in zip(iso.estimators_, iso.estimators_features_, iso._decision_path_lengths,
                                          iso._average_path_length_per_tree):
            t = tree.tree_
            base = offs[-1]
            is_leaf = t.children_left < 0
            left.append(np.where(is_leaf, -1, t.children_left + base))
            right.append(np.where(is_leaf, -1, t.children_right + base))
            feat.append(np.where(is_leaf, 0, np.asarray(cols)[np.maximum(t.feature, 0)]))
            thr.append(t.threshold)
            leaf.append(depth + avg - 1.0)
            offs.append(base + t.node_count)
        self.arrays_.update({"iso_left": np.concatenate(left).astype(np.int64),
                             "iso_right": np.concatenate(right).astype(np.int64),
                             "iso_feature": np.concatenate(feat).astype(np.int64),
                             "iso_threshold": np.concatenate(thr).astype(np.float64),
                             "iso_leaf": np.concatenate(leaf).astype(np.float64),
                             "iso_roots": np.asarray(offs[:-1], dtype=np.int64),
                             "iso_norm": np.asarray([len(iso.estimators_)
                                                     * float(_average_path_length([iso.max_samples_])[0])])})
        settings = {"method": "IsolationForest (scikit-learn), score 2^(-E[h]/c(n))",
                    "trees": TREES, "max_samples": int(iso.max_samples_), "rows": len(x)}
        return ["anomaly_score"], settings

    def _task_spec(self, task):
        from dlmine_ray.spec import JobSpec

        return JobSpec.model_validate({"name": f"augment-{task.name}", "task": task.name, "knowledge": "off",
                                       "compare_baselines": False, "train": {"seed": self.seed},
                                       task.name: self.options.get(task.name) or {}})

    def _fit_task(self, kind: str, x: np.ndarray, names: list[str]) -> dict:
        """Train the task model of ``kind`` on rows ``x`` with ``fit``'s trainer (every stage, the
        run's own loop; a seeded tenth of the rows validates), keep its weights in ``arrays_``,
        and return its final info."""
        if self._trainer is None:
            raise ValueError("augment models 'tasks' need a trainer (train.stages.fit_rows) passed to fit")
        task = _task_of(kind)
        spec = self._task_spec(task)
        order = np.random.default_rng(self.seed + 9).permutation(len(x))
        n_valid = int(len(x) * TASK_VALID) if len(x) >= 50 else 0
        dummy = np.zeros(len(x), dtype=np.int64)
        valid = (x[order[:n_valid]], dummy[:n_valid]) if n_valid else None
        # after_stage reads every sampled row, the validating tenth too (fit_rows' default: the training part)
        _, out = self._trainer(task, spec, x[order[n_valid:]], dummy[n_valid:], valid,
                               samples={k: x for k in task.stage_samples(spec)}, names=names)
        for name, tensor in out.state.items():
            self.arrays_[f"{kind}_state:{name}"] = tensor.numpy()
        keep_info = {k: v for k, v in out.info.items() if k != "feature_names"}
        self.task_models_[kind] = {"task": task.name, "info": keep_info, "model": spec.model.model_dump(),
                                   "n_features": int(x.shape[1])}
        return out.info

    def _net(self, kind: str):
        """The task model of ``kind``, rebuilt from its saved weights (once)."""
        net = self._nets.get(kind)
        if net is None:
            import torch

            from dlmine_ray.tasks import get_task

            held = self.task_models_[kind]
            net = get_task(held["task"]).build_model(held["n_features"], held["info"], held["model"])
            prefix = f"{kind}_state:"
            state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in self.arrays_.items()
                     if k.startswith(prefix)}
            net.load_state_dict(state, strict=False)
            net.eval()
            self._nets[kind] = net
        return net

    def _fit_rules(self, x, names, n_numeric, units) -> list[str]:
        from dlmine_ray.mining.itemsets import association_rules, min_count_for
        from dlmine_ray.mining.local import itemset_tuples, mine_csr

        items = []  # (column, lo, hi, label)
        for j in range(x.shape[1]):
            if j < n_numeric:
                e1, e2 = (float(v) for v in np.quantile(x[:, j].astype(np.float64), [1 / 3, 2 / 3]))
                mean, std = units[j] if j < len(units) else (0.0, 1.0)
                a, b = e1 * std + mean, e2 * std + mean
                items += [(j, -np.inf, e1, f"{names[j]}<={a:.4g}"), (j, e1, e2, f"{a:.4g}<{names[j]}<={b:.4g}"),
                          (j, e2, np.inf, f"{names[j]}>{b:.4g}")]
            else:
                items.append((j, 0.5, np.inf, names[j]))
        cols = np.asarray([i[0] for i in items], dtype=np.int64)
        lo = np.asarray([i[1] for i in items], dtype=np.float64)
        hi = np.asarray([i[2] for i in items], dtype=np.float64)
        held = _holds(x, cols, lo, hi)  # (rows, items) bool
        # the miner wants items as ranks in the F-list (0: the most frequent)
        order = np.argsort(-held.sum(axis=0), kind="stable")
        ranked = held[:, order]
        indptr = np.concatenate([[0], np.cumsum(ranked.sum(axis=1))]).astype(np.int64)
        flat = np.nonzero(ranked)[1].astype(np.int32)  # ascending ranks within each row
        n = len(x)
        parent, item, count = mine_csr(indptr, flat, len(items), min_count_for(RULES_MIN_SUPPORT, n), RULES_MAX_LEN)
        found = itemset_tuples(parent, item, count)
        rules = association_rules(found, n, RULES_MIN_CONFIDENCE) if found else None
        chosen: list[tuple] = []
        if rules is not None and len(rules):
            rules = rules.assign(itemset=[tuple(sorted(a + c)) for a, c in zip(rules["antecedent"],
                                                                                   rules["consequent"])])
            rules = rules.sort_values(["lift", "support"], ascending=False, kind="stable")
            rules = rules.drop_duplicates("itemset").head(RULES_K)
            chosen = [(tuple(int(order[r]) for r in a), tuple(int(order[r]) for r in c), float(lift), float(s))
                      for a, c, lift, s in zip(rules["antecedent"], rules["consequent"], rules["lift"],
                                               rules["support"])]
        width = max((len(a) + len(c) for a, c, _, _ in chosen), default=1)
        members = np.full((len(chosen), width), -1, dtype=np.int64)
        for r, (a, c, _, _) in enumerate(chosen):
            members[r, :len(a) + len(c)] = a + c
        self.arrays_.update({"rule_members": members, "item_column": cols, "item_lo": lo, "item_hi": hi})
        labels = [i[3] for i in items]
        described = [{"rule": " & ".join(labels[i] for i in a) + " => " + " & ".join(labels[i] for i in c),
                      "lift": round(lift, 4), "support": round(s, 4)} for a, c, lift, s in chosen]
        settings = {"method": "exact frequent itemsets (mining.local) on tertile bins and one-hot items, rules "
                              "by lift; a feature: the row holds the rule's itemset",
                    "min_support": RULES_MIN_SUPPORT, "min_confidence": RULES_MIN_CONFIDENCE,
                    "max_len": RULES_MAX_LEN, "top_k": RULES_K, "items": len(items), "itemsets": len(found),
                    "chosen": described, "rows": n}
        return [f"rule_{r}: {d['rule']}" for r, d in enumerate(described)], settings

    # -- transforming ------------------------------------------------------------------------
    def transform(self, x: np.ndarray) -> np.ndarray:
        """The added (rows, len(names_)) float32 columns for encoded rows ``x``."""
        x = np.asarray(x, dtype=np.float32)
        parts = [getattr(self, f"_{kind}")(x) for kind in self.kinds]
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(x), 0), np.float32)

    def extend(self, x: np.ndarray) -> np.ndarray:
        """``x`` with the added columns after its own."""
        return np.concatenate([np.asarray(x, dtype=np.float32), self.transform(x)], axis=1)

    def _clusters(self, x):
        if self.models == "tasks":
            from dlmine_ray.tasks.unsupervised import model_outputs

            k = int(self.task_models_["clusters"]["info"]["k"])
            return model_outputs(self._net("clusters"), x)[:, :k]
        mu = self.arrays_["centroids"]
        d2 = (x.astype(np.float64) ** 2).sum(1)[:, None] - 2 * x.astype(np.float64) @ mu.T + (mu ** 2).sum(1)[None]
        q = 1.0 / (1.0 + np.maximum(d2, 0.0))
        return q / q.sum(axis=1, keepdims=True)

    def _anomaly(self, x):
        if self.models == "tasks":
            from dlmine_ray.tasks.unsupervised import model_outputs

            # the score is a ratio to the training rows' median (unbounded above): log1p tames its scale
            return np.log1p(np.maximum(model_outputs(self._net("anomaly"), x)[:, :1], 0.0))
        a = self.arrays_
        left, right, feat, thr, leaf = a["iso_left"], a["iso_right"], a["iso_feature"], a["iso_threshold"], a["iso_leaf"]
        rows = np.arange(len(x))
        depth = np.zeros(len(x), dtype=np.float64)
        for root in a["iso_roots"]:
            node = np.full(len(x), root, dtype=np.int64)
            inner = left[node] >= 0
            while inner.any():  # sklearn's trees: go left when x <= threshold (float32 inputs)
                i = node[inner]
                go_left = x[rows[inner], feat[i]] <= thr[i]
                node[inner] = np.where(go_left, left[i], right[i])
                inner = left[node] >= 0
            depth += leaf[node]
        return (2.0 ** (-depth / a["iso_norm"][0]))[:, None]

    def _rules(self, x):
        a = self.arrays_
        held = _holds(x, a["item_column"], a["item_lo"], a["item_hi"])
        members = a["rule_members"]
        out = np.ones((len(x), len(members)), dtype=bool)
        for r, m in enumerate(members):
            for i in m[m >= 0]:
                out[:, r] &= held[:, i]
        return out.astype(np.float32)

    def __getstate__(self):  # what travels to Ray workers: no trainer, no built models
        return {**self.__dict__, "_trainer": None, "_nets": {}}

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``augment.json`` and ``augment.npz`` into ``folder``."""
        folder = Path(folder)
        np.savez(folder / NPZ_FILE, **self.arrays_)
        (folder / JSON_FILE).write_text(json.dumps({"kinds": self.kinds, "seed": self.seed, "models": self.models,
                                                    "options": self.options, "task_models": self.task_models_,
                                                    "names": self.names_,
                                                    "counts": self.counts_, "settings": self.settings_}, indent=1,
                                                   default=_numpy_json))

    @classmethod
    def load(cls, folder: Path) -> "Augmenter":
        """The augmenter saved in ``folder``."""
        folder = Path(folder)
        d = json.loads((folder / JSON_FILE).read_text())
        self = cls(d["kinds"], d["seed"], d.get("models", "classic"), d.get("options"))
        self.names_, self.counts_, self.settings_ = list(d["names"]), dict(d["counts"]), d["settings"]
        self.task_models_ = d.get("task_models", {})
        with np.load(folder / NPZ_FILE, allow_pickle=False) as z:
            self.arrays_ = {k: z[k] for k in z.files}
        return self


def _holds(x: np.ndarray, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(rows, items) bool: whether each row's encoded column ``cols[i]`` lies in (lo[i], hi[i]]."""
    v = np.asarray(x, dtype=np.float32)[:, cols].astype(np.float64)
    return (v > lo[None]) & (v <= hi[None])


def _task_of(kind: str):
    """The registered task whose model mines ``kind`` (its ``augment_kind``)."""
    from dlmine_ray.tasks import TASKS

    for task in TASKS.values():
        if task.augment_kind == kind:
            return task
    raise ValueError(f"no task mines augment kind {kind!r}")


def _numpy_json(v):
    """JSON for the numpy scalars and arrays in a task model's info."""
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"not JSON-able: {type(v).__name__}")
