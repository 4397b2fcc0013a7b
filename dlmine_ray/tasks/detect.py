"""Anomaly detection: a score, a flag and the main contributing features per row.

Models: a denoising autoencoder scored by reconstruction error (default), or Deep SVDD (Ruff et
al. 2018): an autoencoder pre-training stage, then the encoder alone is trained to pull codes
towards a centre fixed from the pre-trained codes. The flag threshold is the (1 - contamination)
quantile of the scores, or without ``contamination`` a robust rule on the log scores."""

from __future__ import annotations

import html
from typing import Iterable, Literal, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import Results, Options, StageSetup
from dlmine_ray.tasks import bootstrap as bs
from dlmine_ray.tasks.bootstrap import paired_intervals
from dlmine_ray.tasks.unsupervised import UnsupervisedTask, header_line, model_outputs

#: without contamination, flag scores above exp(median + MADS * 1.4826 * MAD) of the log scores
MADS = 3.0


#: rows sampled from all the data for the flag threshold
THRESHOLD_SAMPLE = 100_000
#: sampled rows on which the label-free fit criterion (consensus) is computed, and rows its
#: reference detectors are fitted on
FIT_ROWS = 3000
#: neighbours of the k-nearest-neighbour distance detector in the consensus reference
KNN = 10


class DetectOptions(Options):
    """Deep anomaly detection: a denoising autoencoder (reconstruction error) or Deep SVDD
    (Ruff et al. 2018, distance to a centre in code space, after autoencoder pre-training)."""

    model: Literal["autoencoder", "deep_svdd"] = "autoencoder"
    contamination: Optional[float] = Field(
        None, gt=0.0, le=0.5, description="expected share of anomalies; sets the flag threshold. Default: a "
                                          "threshold from the score distribution (median + 3 MADs of log score)")
    noise: float = Field(0.1, ge=0.0, description="std of the Gaussian noise of the denoising autoencoder")
    svdd_epochs: int = Field(30, ge=1, description="deep_svdd: epochs of the SVDD stage after pre-training")
    top_features: int = Field(3, ge=1, description="features named per flagged row")


def normal_mask(df: pd.DataFrame, expr: str) -> np.ndarray:
    """Rows of ``df`` that the filter ``expr`` (data.normal_when; tasks/rowfilter.py) keeps."""
    from dlmine_ray.tasks.rowfilter import RowFilter

    try:
        return RowFilter("data.normal_when", expr).mask(df)
    except ValueError as err:
        raise DlmineError(str(err)) from None


class DetectTask(UnsupervisedTask):
    name = "detect"
    options = DetectOptions
    data_fields = ("labels", "normal_when")
    baseline_name = "IsolationForest"
    result_columns = ("score", "flag", "rank", "top_features")
    metric_modes = {"roc_auc": "max", "average_precision": "max", "precision_at_n": "max"}
    result_file = "scores.parquet"
    headline = ("roc_auc", "average_precision")
    tunable = True
    augment_kind = "anomaly"  # soft memberships / the anomaly score, as a supervised job's mined columns
    #: without labels, a fit is judged by its agreement with a consensus of two classic detectors of
    #: different kinds (IsolationForest and the k-nearest-neighbour distance, rank-averaged) on
    #: sampled rows: the weighted Kendall tau, which weighs the top of the ranking most, where the
    #: anomalies are. Validation loss cannot judge: reconstruction error and SVDD distance are not
    #: on one scale, and a lower loss is no better ranking. Internal criteria of this kind are known
    #: to be weak (Ma et al. 2023 found none much better than a random choice, with
    #: consensus-based ones among the better); this one keeps the deep model from straying far
    #: from detectors that are robust on data nobody tuned them on.
    fit_metrics = {"consensus": "max"}

    def default_space(self, spec):
        # the model, its shape and latent size, the denoising noise, and the learning rate
        return {"detect.model": ["autoencoder", "deep_svdd"], "model.hidden": [[64], [128, 64], [256, 128]],
                "model.latent": [4, 8, 16], "detect.noise": [0.0, 0.05, 0.1, 0.2],
                "train.lr": {"loguniform": [3e-4, 3e-3]}}

    def fit_reference(self, samples, spec):
        from sklearn.ensemble import IsolationForest
        from sklearn.neighbors import NearestNeighbors

        rng = np.random.default_rng(spec.train.seed + 13)

        def cut(x):
            return x[np.sort(rng.choice(len(x), FIT_ROWS, replace=False))] if len(x) > FIT_ROWS else x

        train, rows = cut(samples["train"]), cut(samples.get("all", samples["train"]))
        forest = -IsolationForest(random_state=spec.train.seed).fit(train).score_samples(rows)
        k = max(1, min(KNN, len(train) - 1))
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(train).kneighbors(rows)
        # a row that is itself a training row finds itself at distance 0 first: skip that one
        own = dist[:, 0] <= 1e-12
        knn = np.where(own, dist[:, 1:k + 1].mean(axis=1), dist[:, :k].mean(axis=1))
        return {"x": rows.astype(np.float32), "reference": _rank01(forest) + _rank01(knn)}

    def fit_score(self, model, ref, info, spec):
        return {"consensus": _agreement(model_outputs(model, ref["x"])[:, 0], ref["reference"])}

    def check_data(self, profile, spec, trainable):
        d = spec.data
        if d.labels is None:
            return
        st = profile.columns[d.labels]
        values = {str(_plain_label(v)) for v in st.all_counts}
        if not values <= {"0", "1", "True", "False"} or st.nulls:
            shown = ", ".join(sorted(values)[:5]) + (" and nulls" if st.nulls else "")
            raise DlmineError(f"labels column '{d.labels}' must hold 0/1 or true/false (1 = anomaly) for task "
                              f"detect; found {shown}")

    def filters_rows(self, spec):
        return spec.data.normal_when is not None

    def train_mask(self, df, spec):
        return normal_mask(df, spec.data.normal_when) if spec.data.normal_when else None

    def stage_samples(self, spec):
        return {"train": 10_000, "all": THRESHOLD_SAMPLE}

    def stages(self, spec):
        return ["fit"] if spec.detect.model == "autoencoder" else ["pretrain", "svdd"]

    def stage_train(self, spec, stage):
        tr = spec.train.model_dump()
        if stage == "svdd":
            tr["epochs"] = spec.detect.svdd_epochs
        return tr

    def build_model(self, n_features, info, model_spec):
        from dlmine_ray.models.autoencoder import AnomalyNet

        return AnomalyNet(n_features, model_spec["hidden"], model_spec["latent"], info.get("method", "autoencoder"),
                          model_spec["dropout"])

    def start_stage(self, model, stage):
        if stage == "svdd":  # the SVDD loss uses the encoder only
            for p in model.ae.decoder.parameters():
                p.requires_grad_(False)

    def step_loss(self, model, x, y, stage, ctx):
        if stage == "svdd":
            return model(x, out="dist").mean()
        noise = ctx["info"].get("noise", 0.0)
        noisy = x + noise * torch.randn_like(x) if noise > 0 else x
        return F.mse_loss(model(noisy, out="recon"), x)

    def eval_sums(self, model, x, y, stage, ctx):
        if stage == "svdd":
            loss = model(x, out="dist").sum().item()
        else:
            loss = F.mse_loss(model(x, out="recon"), x, reduction="none").mean(dim=1).sum().item()
        return {"loss_sum": loss, "n": float(x.shape[0])}

    def initial_info(self, spec, feature_names, target_info):
        return {"feature_names": list(feature_names), "method": spec.detect.model, "noise": spec.detect.noise,
                "top_features": spec.detect.top_features, "threshold": float("inf")}

    def after_stage(self, stage, model, samples, info, spec):
        setup = StageSetup()
        x = torch.from_numpy(samples["train"])
        if stage == "pretrain":  # Deep SVDD's centre: the mean pre-trained code
            with torch.no_grad():
                c = model(x, out="code").mean(dim=0)
            # as in Ruff et al.: centre coordinates near 0 are pushed to +-eps, else a network
            # with all weights 0 would map every row onto the centre
            eps = 0.1
            c = torch.where(c.abs() < eps, torch.where(c < 0, -eps, eps), c)
            setup.state["center"] = c
        elif stage == "fit":  # the autoencoder's scales, from the training rows
            with torch.no_grad():
                z = model(x, out="code").double()
                recon = (x - model(x, out="recon")).pow(2).mean(dim=1)
            center = z.mean(dim=0)
            cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1]) if len(z) > 1 else torch.eye(z.shape[1])
            cov = cov + 1e-6 * torch.eye(z.shape[1], dtype=cov.dtype) * max(float(cov.diagonal().mean()), 1e-12)
            precision = torch.linalg.pinv(cov)
            d = z - center
            code = ((d @ precision) * d).sum(dim=1)
            setup.state.update({
                "center": center.float(), "code_precision": precision.float(),
                "recon_scale": torch.tensor(max(float(recon.median()), 1e-12)),
                "code_scale": torch.tensor(max(float(code.median()), 1e-12))})
        for k, v in setup.state.items():
            getattr(model, k).copy_(v)
        if stage == self.stages(spec)[-1]:
            scores = model_outputs(model, samples["all"])[:, 0]
            thr, rule = threshold_from(scores, spec.detect.contamination)
            setup.info.update({"threshold": thr, "threshold_rule": rule})
            setup.state["threshold"] = torch.tensor(thr)
            setup.notes.append(f"threshold {thr:.4g}: {rule}")
        return setup

    def predict_columns(self, outputs, info):
        score = outputs[:, 0].astype(np.float64)
        flag = score > info["threshold"]
        contrib = outputs[:, 1:]
        names = np.asarray(info["feature_names"], dtype=object)
        top = np.full(len(score), "", dtype=object)
        n_top = int(info.get("top_features", 3))
        for i in np.nonzero(flag)[0]:
            order = np.argsort(-contrib[i])[:n_top]
            top[i] = ", ".join(names[j] for j in order if contrib[i, j] > 0)
        return {"score": score, "flag": flag, "top_features": top}

    # -- mining ----------------------------------------------------------------------------
    def fit_baseline(self, x_train, y_train, info, spec):
        from sklearn.ensemble import IsolationForest

        return IsolationForest(random_state=spec.train.seed).fit(x_train)

    def results(self, batches: Iterable[dict], info: dict, spec, baseline, n_rows: int) -> Results:
        labels_col = spec.data.labels
        frames, base_scores = [], []
        for b in batches:
            cols = {k: v for k, v in b.items() if k != "features"}
            frames.append(pd.DataFrame(cols))
            if baseline is not None:
                base_scores.append(-baseline.score_samples(b["features"]))  # higher = more anomalous
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        table["rank"] = table["score"].rank(ascending=False, method="first").astype(np.int64)
        metrics = {"threshold": float(info["threshold"]), "n_flagged": int(table["flag"].sum()),
                   "share_flagged": float(table["flag"].mean()) if len(table) else 0.0,
                   "rows_scored": int(len(table))}
        base = np.concatenate(base_scores) if base_scores else None
        if labels_col:
            truth = anomaly_truth(table[labels_col])
            metrics.update(detection_metrics(truth, table["score"].to_numpy()))
            if base is not None:
                metrics.update({f"baseline_{k}": v for k, v in detection_metrics(truth, base).items()})
            scores = {"deep": table["score"].to_numpy(np.float64), "baseline": base}
            if 0 < truth.sum() < len(truth):
                ranked = {k: bs.Ranking(v, descending=True) for k, v in scores.items() if v is not None}
                metrics.update(paired_intervals(lambda w, which: weighted_detection(w, truth, ranked[which]),
                                                len(truth), base is not None, spec.train.seed))
        order = [c for c in (spec.data.id, *self.result_columns, labels_col) if c]
        table = table[[c for c in order if c in table.columns]].sort_values("rank", kind="stable")
        top = table.head(20)
        return Results(table, metrics, {"scores": table["score"].to_numpy(), "top": top,
                                             "threshold": float(info["threshold"]),
                                             "threshold_rule": info["threshold_rule"]})

    # -- the report ----------------------------------------------------------------------------
    def header_html(self, spec, info, metrics, profile, trials=0):
        m, d = spec.model, spec.detect
        extra = f"method {info.get('method', d.model)}" + (f" · contamination {d.contamination}"
                                                            if d.contamination else "")
        return header_line(spec, profile, f"autoencoder {m.hidden} → latent {m.latent}", extra)

    def report_sections(self, spec, metrics, material, info):
        from dlmine_ray.report.kit import finite, fmt, table

        parts = ["<h2>Anomaly scores</h2>"]
        threshold = material.get("threshold", info.get("threshold", metrics.get("threshold")))
        rule = material.get("threshold_rule") or info.get("threshold_rule")
        flagged = metrics.get("n_flagged")
        parts.append(f"<p>Threshold <b>{fmt(threshold)}</b>" + (f": {html.escape(str(rule))}" if rule else "")
                     + (f". {fmt(flagged)} rows flagged" if flagged is not None else "")
                     + (f" ({metrics['share_flagged']:.2%})" if finite(metrics.get("share_flagged")) else "")
                     + ".</p>")
        scores = material.get("scores")
        if scores is not None and len(scores):
            parts.append(_score_histogram(np.asarray(scores), threshold))
        top = material.get("top")
        if isinstance(top, pd.DataFrame) and len(top):
            parts.append("<h2>Top anomalies</h2>")
            parts.append('<p class="muted">The highest-scoring rows; <i>top_features</i> names the inputs that '
                         'contribute most to a flagged row\'s score (empty for rows under the threshold).</p>')
            top = top.copy()
            if "score" in top:
                top["score"] = top["score"].astype(np.float64)
            if "flag" in top:  # fmt would print a bool as 1/0
                top["flag"] = np.where(top["flag"].astype(bool), "yes", "no")
            parts.append(table(top, left=tuple(c for c in top.columns if c not in ("score", "rank"))))
        return parts


def threshold_from(scores: np.ndarray, contamination) -> tuple[float, str]:
    """The flag threshold and a sentence saying how it was set."""
    scores = np.asarray(scores, dtype=np.float64)
    if contamination:
        thr = float(np.quantile(scores, 1.0 - contamination))
        return thr, f"the {1 - contamination:.1%} quantile of the scores (contamination {contamination})"
    ls = np.log(np.maximum(scores, 1e-12))
    med = float(np.median(ls))
    mad = float(np.median(np.abs(ls - med))) * 1.4826
    thr = float(np.exp(med + MADS * mad))
    return thr, (f"no contamination given: exp(median + {MADS:g} x 1.4826 x MAD) of the log scores "
                 "(a robust 3-sigma rule)")


def anomaly_truth(labels: pd.Series) -> np.ndarray:
    """Ground truth as booleans (1/True = anomaly)."""
    v = labels.to_numpy()
    if v.dtype == object:
        v = pd.to_numeric(labels, errors="coerce").to_numpy()
    return np.asarray(v, dtype=np.float64) > 0.5


def weighted_detection(w: np.ndarray, truth: np.ndarray, scores) -> dict[str, np.ndarray]:
    """``detection_metrics`` of each weighted draw of the rows (see tasks/bootstrap.py); ``scores``
    (higher = more anomalous) may be given as their descending ``bootstrap.Ranking``, built once
    for every chunk of draws."""
    rank = scores if isinstance(scores, bs.Ranking) else bs.Ranking(scores, descending=True)
    return {"roc_auc": bs.roc_auc(w, truth, rank), "average_precision": bs.average_precision(w, truth, rank),
            "precision_at_n": bs.precision_at_n(w, truth, rank)}


def detection_metrics(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and precision at n (n = the number of true anomalies)."""
    from sklearn import metrics as skm

    n_true = int(truth.sum())
    if n_true == 0 or n_true == len(truth):
        return {"roc_auc": float("nan"), "average_precision": float("nan"), "precision_at_n": float("nan")}
    top = np.argsort(-scores, kind="stable")[:n_true]
    return {"roc_auc": float(skm.roc_auc_score(truth, scores)),
            "average_precision": float(skm.average_precision_score(truth, scores)),
            "precision_at_n": float(truth[top].mean())}




def _rank01(v: np.ndarray) -> np.ndarray:
    """Ranks of ``v`` scaled to [0, 1]."""
    r = pd.Series(np.asarray(v, dtype=np.float64)).rank(method="average").to_numpy()
    return (r - 1) / max(len(r) - 1, 1)


def _agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Weighted Kendall tau of two score vectors (top ranks weigh most); -1 for a constant or
    non-finite score."""
    from scipy.stats import weightedtau

    s = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.ptp(s) == 0:
        return -1.0
    return float(weightedtau(s, reference).statistic)


def _plain_label(v):
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _score_histogram(scores: np.ndarray, threshold: Optional[float]) -> str:
    """An <img>: histogram of every row's score (log x when they span > 2 decades), threshold marked."""
    from dlmine_ray.report.kit import finite, plt, png

    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    fig, ax = plt().subplots(figsize=(8, 3.2))
    pos = s[s > 0]
    log_x = len(pos) > 1 and pos.max() / pos.min() > 100
    if log_x:
        # zeros (and negatives) have no place on a log axis: count them in the lowest bin
        lo = pos.min()
        ax.hist(np.maximum(s, lo), bins=np.geomspace(lo, pos.max() * 1.0001, 60))
        ax.set_xscale("log")
    else:
        ax.hist(s, bins=60)
    ax.set_yscale("log")  # the anomalous tail is a handful of rows against many normal ones
    if threshold is not None and finite(threshold) and (threshold > 0 or not log_x):
        ax.axvline(threshold, color="tab:red", lw=1.2, ls="--", label=f"threshold {threshold:.4g}")
        ax.legend()
    zeros = int((s <= 0).sum()) if log_x else 0
    ax.set_xlabel("anomaly score" + (" (log scale)" if log_x else "")
                  + (f"; {zeros:,} scores ≤ 0 counted in the lowest bin" if zeros else ""))
    ax.set_ylabel("rows")
    ax.set_title(f"scores of all {len(s):,} rows")
    return png(fig)
