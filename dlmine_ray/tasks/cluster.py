"""Deep clustering: an autoencoder, clusters found in its code space, then DEC refinement (Xie et
al. 2016): Student-t soft assignments q to the cluster centres, a sharpened target distribution
p = (q^2 / f) normalised per row (f: the soft cluster sizes over all training rows, summed over
workers before every epoch), and the KL(p || q) loss on the encoder and the centres.

Stages (each one run of the same training loop): "pretrain" the autoencoder on reconstruction
(denoising); then the initial clusters on a sample of codes (``cluster.init``: k-means on the
codes, or k-means on a UMAP embedding of the codes as in N2D, which separates the codes'
nearest-neighbour groups far better than k-means alone); with UMAP, a "distill" stage teaches
the encoder and centres the sample's initial clusters (cross-entropy on them), so that the
centres can express them; then "refine" (DEC). ``k`` is given or chosen over ``k_range`` by the silhouette of the sample's codes.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import Results, Options, StageSetup
from dlmine_ray.tasks.bootstrap import agreement, paired_intervals
from dlmine_ray.tasks.unsupervised import UnsupervisedTask, header_line

_EPS = 1e-10
#: sampled rows on which the label-free fit criterion (silhouette) is computed
FIT_ROWS = 3000


class ClusterOptions(Options):
    """Deep clustering: autoencoder pre-training (train.*), k-means on the codes, then DEC
    refinement (Xie et al. 2016) as a second stage of the same training loop."""

    k: Optional[int] = Field(None, ge=2, description="number of clusters; default: chosen over k_range")
    k_range: list[int] = Field(default_factory=lambda: [2, 12], description="[min, max] k tried by silhouette")
    init: Literal["kmeans", "umap"] = Field(
        "umap", description="initial clusters of the sampled codes: k-means on the codes, or k-means on a UMAP "
                            "embedding of them (then distilled into the centres)")
    init_on: Literal["codes", "features"] = Field(
        "features", description="what the initial clustering sees: the autoencoder's codes, or the preprocessed "
                             "features")
    noise: float = Field(0.2, ge=0.0, description="std of the denoising noise in pre-training")
    distill_epochs: int = Field(30, ge=0, description="umap init: epochs teaching the centres the sample's "
                                                      "clusters")
    refine_epochs: int = Field(30, ge=0, description="DEC epochs after pre-training; 0 = autoencoder + k-means")
    refine_lr: float = Field(1e-4, gt=0.0)
    alpha: float = Field(1.0, gt=0.0, description="degrees of freedom of DEC's Student-t kernel")
    sample_rows: int = Field(10_000, ge=100, description="rows sampled for silhouette and for choosing k")

    @field_validator("k_range")
    @classmethod
    def _k_range(cls, v):
        if len(v) != 2 or v[0] < 2 or v[1] < v[0]:
            raise ValueError("cluster.k_range must be [min, max] with 2 <= min <= max")
        return v


class ClusterTask(UnsupervisedTask):
    name = "cluster"
    options = ClusterOptions
    baseline_name = "k-means"
    result_columns = ("cluster", "confidence", "map_x", "map_y")
    metric_modes = {"nmi": "max", "ari": "max", "acc": "max", "silhouette": "max", "davies_bouldin": "min"}
    result_file = "clusters.parquet"
    headline = ("nmi", "silhouette")
    tunable = True
    augment_kind = "clusters"  # soft memberships / the anomaly score, as a supervised job's mined columns
    #: without labels, a fit is judged by the silhouette of its clusters on sampled rows of the
    #: model's inputs: the same space for every trial (codes differ in size and scale between
    #: models, and a collapsed code space scores a perfect silhouette), and the k-means baseline
    #: is scored on the same rows
    fit_metrics = {"silhouette": "max"}

    def default_space(self, spec):
        # the autoencoder's shape, latent size and denoising noise, the initial clustering and where
        # it runs, and the learning rate; k is chosen inside each trial over cluster.k_range
        return {"model.hidden": [[64], [128, 64], [256, 128]], "model.latent": [5, 10, 16],
                "cluster.noise": [0.0, 0.1, 0.2, 0.3], "cluster.init": ["kmeans", "umap"],
                "cluster.init_on": ["codes", "features"], "train.lr": {"loguniform": [3e-4, 3e-3]}}

    def fit_reference(self, samples, spec):
        x = samples["train"]
        rng = np.random.default_rng(spec.train.seed + 11)
        pick = rng.choice(len(x), FIT_ROWS, replace=False) if len(x) > FIT_ROWS else np.arange(len(x))
        return {"x": x[np.sort(pick)]}

    def fit_score(self, model, ref, info, spec):
        with torch.no_grad():
            q = model(torch.from_numpy(np.ascontiguousarray(ref["x"])), out="q").numpy()
        return {"silhouette": _silhouette(ref["x"], q.argmax(axis=1))}

    def baseline_fit_score(self, baseline, ref, info, spec):
        return {"silhouette": _silhouette(ref["x"], baseline.predict(ref["x"].astype(np.float32)))}

    def quick_overrides(self, spec):
        return super().quick_overrides(spec) + [("cluster.distill_epochs", 2), ("cluster.refine_epochs", 2)]

    def check_data(self, profile, spec, trainable):
        if spec.cluster.k is not None and spec.cluster.k > trainable:
            raise DlmineError(f"cluster.k = {spec.cluster.k} is larger than the number of training rows "
                              f"({trainable})")

    def stage_samples(self, spec):
        return {"train": spec.cluster.sample_rows}

    def stages(self, spec):
        c = spec.cluster
        return (["pretrain"] + (["distill"] if c.init == "umap" and c.distill_epochs > 0 else [])
                + (["refine"] if c.refine_epochs > 0 else []))

    def stage_train(self, spec, stage):
        tr = spec.train.model_dump()
        if stage == "distill":
            tr.update(epochs=spec.cluster.distill_epochs, early_stopping=0, keep="last")
        elif stage == "refine":
            # DEC's targets move with the model: run the stage's epochs, keep the last one
            tr.update(epochs=spec.cluster.refine_epochs, lr=spec.cluster.refine_lr, early_stopping=0, keep="last")
        return tr

    def initial_info(self, spec, feature_names, target_info):
        return {"feature_names": list(feature_names), "alpha": spec.cluster.alpha, "noise": spec.cluster.noise,
                "k": 0}

    def build_model(self, n_features, info, model_spec):
        from dlmine_ray.models.autoencoder import DeepClusterNet

        return DeepClusterNet(n_features, model_spec["hidden"], model_spec["latent"], int(info.get("k", 0)),
                              model_spec["dropout"], float(info.get("alpha", 1.0)))

    def target_torch_dtype(self):
        return torch.int64  # the distill stage's pseudo-labels; a dummy elsewhere

    def start_stage(self, model, stage):
        if stage in ("distill", "refine"):  # DEC drops the decoder
            for p in model.ae.decoder.parameters():
                p.requires_grad_(False)

    def epoch_stats(self, model, x, stage, info):
        if stage != "refine":
            return None
        return {"f": model(x, out="q").sum(dim=0)}

    def _dec_loss(self, q: torch.Tensor, f, reduction: str) -> torch.Tensor:
        f = torch.as_tensor(np.asarray(f), dtype=q.dtype, device=q.device).clamp_min(_EPS)
        p = q.detach().pow(2) / f
        p = p / p.sum(dim=1, keepdim=True)
        return F.kl_div(q.clamp_min(_EPS).log(), p, reduction=reduction)

    def step_loss(self, model, x, y, stage, ctx):
        if stage == "pretrain":
            noise = ctx["info"].get("noise", 0.0)
            noisy = x + noise * torch.randn_like(x) if noise > 0 else x
            return F.mse_loss(model(noisy, out="recon"), x)
        q = model(x, out="q")
        if stage == "distill":
            return F.nll_loss(q.clamp_min(_EPS).log(), y)
        return self._dec_loss(q, ctx["epoch"]["f"], "batchmean")

    def eval_sums(self, model, x, y, stage, ctx):
        if stage == "pretrain":
            loss = F.mse_loss(model(x, out="recon"), x, reduction="none").mean(dim=1).sum().item()
        elif stage == "distill":  # validation rows have no pseudo-labels: report the entropy of q
            q = model(x, out="q")
            loss = -(q * q.clamp_min(_EPS).log()).sum().item()
        else:
            loss = self._dec_loss(model(x, out="q"), ctx["epoch"]["f"], "sum").item()
        return {"loss_sum": loss, "n": float(x.shape[0])}

    # -- between stages ----------------------------------------------------------------------
    def after_stage(self, stage, model, samples, info, spec):
        c = spec.cluster
        setup = StageSetup()
        x = torch.from_numpy(samples["train"])
        with torch.no_grad():
            z = model(x, out="code").numpy().astype(np.float64)
        if stage == "pretrain":
            space = z if c.init_on == "codes" else samples["train"].astype(np.float64)
            k, scores, labels = choose_k(init_space(space, c.init, spec.train.seed), c.k, c.k_range, spec.train.seed)
            centres = np.stack([z[labels == j].mean(axis=0) if np.any(labels == j) else z[j] for j in range(k)])
            setup.info.update({"k": k, "k_scores": {str(kk): v for kk, v in scores.items()}, "init": c.init})
            setup.state["centroids"] = torch.from_numpy(centres.astype(np.float32))
            chosen = "given" if c.k else f"best silhouette over k={c.k_range[0]}..{c.k_range[1]}"
            how = "k-means on a UMAP embedding of" if c.init == "umap" else "k-means on"
            setup.notes.append(f"k = {k} ({chosen}); initial clusters by {how} {len(z):,} sampled "
                               f"{'codes' if c.init_on == 'codes' else 'rows'}")
            if "distill" in self.stages(spec):
                setup.train_on = (samples["train"], labels.astype(np.int64))
        if stage == self.stages(spec)[-1]:  # z: this stage's codes, computed above
            mean = z.mean(axis=0)
            # the 2-D map: the codes' two principal axes
            _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
            axes = np.zeros((2, z.shape[1]))
            axes[:min(2, len(vt))] = vt[:2]
            setup.state["proj_mean"] = torch.from_numpy(mean.astype(np.float32))
            setup.state["proj_axes"] = torch.from_numpy(axes.astype(np.float32))
        return setup

    def predict_columns(self, outputs, info):
        k = int(info["k"])
        q = outputs[:, :k]
        return {"cluster": q.argmax(axis=1).astype(np.int64), "confidence": q.max(axis=1).astype(np.float32),
                "map_x": outputs[:, k].astype(np.float32), "map_y": outputs[:, k + 1].astype(np.float32)}

    # -- mining ----------------------------------------------------------------------------
    def fit_baseline(self, x_train, y_train, info, spec):
        from sklearn.cluster import KMeans

        return KMeans(int(info["k"]), n_init=10, random_state=spec.train.seed).fit(x_train)

    def results(self, batches: Iterable[dict], info: dict, spec, baseline, n_rows: int) -> Results:
        k = int(info["k"])
        d = len(info["feature_names"])
        labels_col = spec.data.labels
        sums = np.zeros((k, d))
        frames, base_labels = [], []
        sample_x, sample_ours, sample_base = [], [], []
        rng = np.random.default_rng(spec.train.seed)
        # a uniform sample of about sample_rows rows for silhouette and Davies-Bouldin
        keep_p = min(1.0, spec.cluster.sample_rows / max(n_rows, 1))
        for b in batches:
            x = np.asarray(b["features"], dtype=np.float64)
            cl = np.asarray(b["cluster"])
            np.add.at(sums, cl, x)
            frames.append(pd.DataFrame({c: v for c, v in b.items() if c != "features"}))
            bl = baseline.predict(x.astype(np.float32)) if baseline is not None else np.full(len(x), -1)
            base_labels.append(bl)
            pick = rng.random(len(x)) < keep_p
            sample_x.append(x[pick]), sample_ours.append(cl[pick]), sample_base.append(bl[pick])
        limit = spec.cluster.sample_rows
        xs = np.concatenate(sample_x)[:limit]
        ours, base_s = np.concatenate(sample_ours)[:limit], np.concatenate(sample_base)[:limit]
        table = pd.concat(frames, ignore_index=True)
        sizes = np.bincount(table["cluster"].to_numpy(), minlength=k)
        metrics = {"n_clusters": int((sizes > 0).sum()), "k": k}
        metrics.update(_internal_metrics(xs, ours))
        if baseline is not None:
            metrics.update({f"baseline_{m}": v for m, v in _internal_metrics(xs, base_s).items()})
        if labels_col:
            known = table[labels_col].notna().to_numpy()
            truth = table[labels_col].to_numpy()[known]
            metrics.update(label_metrics(truth, table["cluster"].to_numpy()[known]))
            base = np.concatenate(base_labels)[known] if baseline is not None else None
            if base is not None:
                metrics.update({f"baseline_{m}": v for m, v in label_metrics(truth, base).items()})
            t_codes = pd.factorize(pd.Series(truth).astype(str))[0]
            assigned = {"deep": pd.factorize(pd.Series(table["cluster"].to_numpy()[known]))[0],
                        "baseline": None if base is None else pd.factorize(pd.Series(base))[0]}
            if len(t_codes) >= 3:
                metrics.update(paired_intervals(lambda w, which: agreement(w, t_codes, assigned[which]),
                                                len(t_codes), base is not None, spec.train.seed))
        means = sums / np.maximum(sizes, 1)[:, None]
        overall = sums.sum(axis=0) / max(sizes.sum(), 1)
        order = [c for c in (spec.data.id, *self.result_columns, labels_col) if c]
        table = table[[c for c in order if c in table.columns]]
        return Results(table, metrics, {"sizes": sizes, "means_encoded": means, "overall_encoded": overall,
                                             "map": table.sample(min(len(table), 5000), random_state=0)})

    # -- the report ----------------------------------------------------------------------------
    def header_html(self, spec, info, metrics, profile, trials=0):
        m, c = spec.model, spec.cluster
        k = info.get("k") or c.k
        extra = (f"k = {k}" if k else "k chosen") + f" · init {info.get('init', c.init)}" \
            + (f" · DEC refinement ({c.refine_epochs} epochs)" if c.refine_epochs else "")
        return header_line(spec, profile, f"autoencoder {m.hidden} → latent {m.latent}", extra)

    def report_sections(self, spec, metrics, material, info):
        from dlmine_ray.report.kit import table

        parts = []
        sample = material.get("map")
        if isinstance(sample, pd.DataFrame) and len(sample) and {"map_x", "map_y", "cluster"} <= set(sample.columns):
            parts.append("<h2>Cluster map</h2>")
            parts.append(f'<p class="muted">{len(sample):,} sampled rows placed by the two principal axes of '
                         'their autoencoder codes.</p>')
            parts.append(_cluster_map(sample, spec.data.labels))
        sizes = material.get("sizes")
        if sizes is not None and len(sizes):
            parts.append("<h2>Cluster sizes</h2>" + _cluster_sizes(np.asarray(sizes)))
        k_scores = info.get("k_scores") or {}
        if k_scores:
            parts.append("<h2>Choosing k</h2>" + _k_scores_plot(k_scores, info.get("k", metrics.get("k"))))
        if sizes is not None and "means_encoded" in material and "overall_encoded" in material:
            parts.append("<h2>Cluster profiles</h2>")
            parts.append("<p>Each row is one cluster. Its distinguishing features are those whose mean inside the "
                         "cluster lies farthest from the mean over all rows, measured on the model's inputs "
                         "(numeric columns standardised, so 1 is one standard deviation; categorical columns as "
                         "0/1 shares). Values are shown in original units: the cluster's mean for a numeric "
                         "column, or for <i>column=value</i> the share of the cluster's rows with that value; in "
                         "brackets the same over all rows.</p>")
            parts.append(table(cluster_profile(material, info.get("feature_names", [])),
                               left=("share", "distinguishing features")))
        return parts


def init_space(z: np.ndarray, init: str, seed: int) -> np.ndarray:
    """The space the initial k-means runs in: the codes themselves, or (``umap``) a 5-D UMAP
    embedding of them, which pulls the codes' nearest-neighbour groups apart (as in N2D,
    McConville et al. 2019)."""
    if init != "umap" or len(z) < 10:
        return z
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": the seed wins
        reducer = umap.UMAP(n_components=min(5, z.shape[1]), n_neighbors=int(min(15, len(z) - 1)), min_dist=0.0,
                            random_state=seed)
        return reducer.fit_transform(z)


def choose_k(e: np.ndarray, k, k_range, seed: int) -> tuple[int, dict[int, float], np.ndarray]:
    """k-means in the init space ``e``: with ``k`` given, or for each k in ``k_range``, keeping
    the best silhouette. Returns (k, {k: silhouette}, labels)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    def fit(kk):
        return KMeans(kk, n_init=10, random_state=seed).fit_predict(e)

    if k:
        return int(min(k, len(e))), {}, fit(int(min(k, len(e))))
    lo, hi = k_range[0], max(k_range[0], min(k_range[1], len(e) - 1))
    scores: dict[int, float] = {}
    best = None
    for kk in range(lo, hi + 1):
        labels = fit(kk)
        if len(np.unique(labels)) < 2:
            continue
        scores[kk] = float(silhouette_score(e, labels, random_state=seed))
        if best is None or scores[kk] > scores[best[0]]:
            best = (kk, labels)
    if best is None:
        return lo, scores, fit(lo)
    return best[0], scores, best[1]


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of ``labels`` on ``x``; -1 (the worst) when there are fewer than two clusters."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return -1.0
    return float(silhouette_score(x.astype(np.float64), labels))


def _internal_metrics(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan")}
    return {"silhouette": float(skm.silhouette_score(x, labels)),
            "davies_bouldin": float(skm.davies_bouldin_score(x, labels))}


def label_metrics(truth: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI, ARI and accuracy under the best one-to-one matching of clusters to labels."""
    from scipy.optimize import linear_sum_assignment
    from sklearn import metrics as skm

    t, _ = pd.factorize(pd.Series(truth).astype(str))
    c, _ = pd.factorize(pd.Series(clusters))
    table = np.zeros((c.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (c, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return {"nmi": float(skm.normalized_mutual_info_score(t, c)),
            "ari": float(skm.adjusted_rand_score(t, c)),
            "acc": float(table[rows, cols].sum() / max(len(t), 1))}


# -- the report's pictures and tables ----------------------------------------------------------

def _cluster_map(sample: pd.DataFrame, labels_col: Optional[str]) -> str:
    """An <img>: the sampled rows on the 2-D map, by cluster and, if present, by ground-truth label."""
    from dlmine_ray.report.kit import colour, plt, png

    panels = [("cluster", "by cluster")]
    if labels_col and labels_col in sample:
        panels.append((labels_col, f"by label '{labels_col}'"))
    fig, axes = plt().subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], panels):
        values = sample[col].astype(object).where(sample[col].notna(), "missing")
        # numbers in order, then strings ("missing" among them)
        groups = sorted(values.unique(), key=lambda v: (isinstance(v, str), 0 if isinstance(v, str) else v, str(v)))
        for i, g in enumerate(groups):
            pick = (values == g).to_numpy()
            ax.scatter(sample["map_x"][pick], sample["map_y"][pick], s=5, alpha=0.6, color=colour(i, len(groups)),
                       label=str(g))
        if len(groups) <= 20:  # a longer legend hides the map
            ax.legend(fontsize=7, markerscale=2.5, loc="best", title=col)
        ax.set_title(f"2-D map of the codes, {title}")
        ax.set_xticks([]), ax.set_yticks([])
    return png(fig)


def _cluster_sizes(sizes: np.ndarray) -> str:
    """An <img>: a bar of rows per cluster."""
    from dlmine_ray.report.kit import colour, plt, png

    k = len(sizes)
    fig, ax = plt().subplots(figsize=(min(10.0, 2.5 + 0.4 * k), 2.8))
    ax.bar(range(k), sizes, color=[colour(i, k) for i in range(k)])
    ax.set_xticks(range(k), [str(i) for i in range(k)], rotation=90 if k > 20 else 0)
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    ax.set_title("cluster sizes (all rows)")
    return png(fig)


def _k_scores_plot(k_scores: dict, k: Any) -> str:
    """An <img>: silhouette of the initial clusters against k, the chosen k marked."""
    from dlmine_ray.report.kit import plt, png

    pairs = sorted((int(kk), float(v)) for kk, v in k_scores.items())
    ks, vals = [p[0] for p in pairs], [p[1] for p in pairs]
    fig, ax = plt().subplots(figsize=(5.5, 3.0))
    ax.plot(ks, vals, marker="o")
    if k is not None and int(k) in ks:
        ax.axvline(int(k), color="tab:red", lw=1, ls="--", label=f"chosen k = {int(k)}")
        ax.legend()
    ax.set_xlabel("k")
    ax.set_ylabel("silhouette")
    ax.set_title("choosing k (silhouette on sampled codes)")
    return png(fig)


def _describe(name: str, value: float, overall: float, units: dict) -> str:
    """One feature as text in original units: numeric mean, or one-hot share, with the overall value."""
    if name in units:
        mean, std = (float(u) for u in units[name])
        return f"{name} {value * std + mean:.4g} (overall {overall * std + mean:.4g})"
    if "=" in name:
        return f"{name} {value:.0%} (overall {overall:.0%})"
    return f"{name} {value:+.2f} sd (overall {overall:+.2f})"  # numeric without known units: standardised


def cluster_profile(material: dict, feature_names: list[str], n_top: int = 4) -> pd.DataFrame:
    """Rows of (cluster, rows, share, distinguishing features): the ``n_top`` features whose
    cluster mean lies farthest from the overall mean in the encoded (standardised / one-hot)
    space, described in original units."""
    sizes = np.asarray(material["sizes"], dtype=np.int64)
    means = np.atleast_2d(np.asarray(material["means_encoded"], dtype=np.float64))
    overall = np.asarray(material["overall_encoded"], dtype=np.float64)
    units = material.get("numeric_units") or {}
    names = list(feature_names)[:means.shape[1]] + [f"x{j}" for j in range(len(feature_names), means.shape[1])]
    total = max(int(sizes.sum()), 1)
    rows = []
    for c, size in enumerate(sizes):
        gap = np.abs(means[c] - overall)
        # an empty cluster's means are zeros, not data; tiny gaps distinguish nothing
        top = [j for j in np.argsort(-gap, kind="stable")[:n_top] if gap[j] > 1e-9] if size > 0 else []
        text = "; ".join(_describe(names[j], means[c, j], overall[j], units) for j in top)
        rows.append({"cluster": c, "rows": int(size), "share": f"{size / total:.1%}",
                     "distinguishing features": text or ("(empty)" if size == 0 else "(as overall)")})
    return pd.DataFrame(rows)
