"""report.html: one self-contained page per run, the same layout for every task.

Title and the task's header line; the metrics table (deep model against its baseline, with
intervals and verdicts); the task's own sections; the learning curves; the tuning leaderboard;
the data profile; the job. Each part appears when the run has it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from dlmine_ray.report.kit import class_balance, finite, fmt, plt, png, table, write_page


def metrics_table(metrics: dict, task=None) -> pd.DataFrame:
    """One row per test metric the task reports: the deep model's value and 95% interval, the
    baseline's, the paired interval of their difference, and the verdict ('better', 'worse' or
    'tie': better or worse only when that interval excludes zero; a metric without an interval is
    'tie' on equal values, else 'no interval'). Counts, seconds and settings are not metrics and
    are left out. ``task``: the task object (default: the registered task of ``metrics['task']``)."""
    from dlmine_ray.tasks import get_task
    from dlmine_ray.tasks.bootstrap import verdict

    rows = []
    for k, mode in (task or get_task(metrics["task"])).metric_modes.items():
        deep, base = metrics.get(k), metrics.get(f"baseline_{k}")
        if deep is None and base is None:
            continue
        diff = metrics.get(f"diff_{k}_ci")
        if not finite(deep) or not finite(base):
            call = ""
        elif diff:
            call = verdict(diff, mode == "max")
        else:  # no interval (a sample-based metric): equal values tie, and a gap is not called
            call = "tie" if deep == base else "no interval"
        rows.append({"metric": k, "deep model": deep, "deep CI": metrics.get(f"{k}_ci"), "baseline": base,
                     "baseline CI": metrics.get(f"baseline_{k}_ci"), "difference CI": diff, "verdict": call})
    return pd.DataFrame(rows, columns=["metric", "deep model", "deep CI", "baseline", "baseline CI",
                                       "difference CI", "verdict"])


def ci_text(ci) -> str:
    """'[low, high]' for an interval, '' for none."""
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def value_text(value, ci, digits: str = ".4g") -> str:
    """A metric and its interval for a summary table ('0.9717 [0.95, 0.99]'); '–' when missing."""
    return f"{value:{digits}} {ci_text(ci)}".strip() if finite(value) else "–"


def metrics_html(metrics: dict, baseline_name: str, task=None) -> str:
    """The metrics table as HTML: the deep model's cell green when the paired interval says it
    is better, red when worse, and the word 'tie' otherwise."""
    mt = metrics_table(metrics, task)
    if mt.empty:
        return ""
    rows = []
    for r in mt.itertuples(index=False):
        cls = r.verdict if r.verdict in ("better", "worse") else ""
        rows.append(f'<tr><td class="l">{r.metric}</td><td class="{cls}">{fmt(r[1])}</td>'
                    f'<td class="muted">{ci_text(r[2])}</td><td>{fmt(r.baseline)}</td>'
                    f'<td class="muted">{ci_text(r[4])}</td><td class="muted">{ci_text(r[5])}</td>'
                    f'<td class="l {cls}">{r.verdict}</td></tr>')
    return (f'<table><tr><th class="l">metric</th><th>deep model</th><th>95% CI</th>'
            f'<th>baseline ({html.escape(baseline_name)})</th><th>95% CI</th><th>difference, paired 95% CI</th>'
            f'<th class="l">verdict</th></tr>{"".join(rows)}</table>'
            '<p class="muted">Intervals: percentile bootstrap over the scored rows, 1,000 draws; the difference '
            '(deep model minus baseline) is computed on the same draws. "tie": the difference interval contains 0.'
            '</p>')


def _other_numbers(task, metrics: dict) -> str:
    """Every scalar of metrics.json that the metrics table does not show."""
    shown = {key for m in task.metric_modes
             for key in (m, f"baseline_{m}", f"{m}_ci", f"baseline_{m}_ci", f"diff_{m}_ci")}
    other = [(k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in metrics.items()
             if k not in shown and (isinstance(v, (int, float, str, list, tuple, np.number)))]
    if not other:
        return ""
    return "<h3>Other numbers</h3>" + table(pd.DataFrame(other, columns=["name", "value"]), left=("name", "value"))


def learning_curves(history: list[dict]) -> str:
    """An <img>: train and validation loss per epoch, and the other validation metrics beside."""
    h = pd.DataFrame(history)
    extra = [c for c in h.columns if c.startswith("val_") and c != "val_loss"]
    fig, axes = plt().subplots(1, 1 + bool(extra), figsize=(10 if extra else 5.5, 3.4))
    axes = np.atleast_1d(axes)
    axes[0].plot(h["epoch"], h["train_loss"], label="train loss")
    if "val_loss" in h:
        axes[0].plot(h["epoch"], h["val_loss"], label="validation loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    axes[0].set_title("loss")
    if extra:
        for c in extra:
            axes[1].plot(h["epoch"], h[c], label=c)
        axes[1].set_xlabel("epoch")
        axes[1].legend()
        axes[1].set_title("validation metric")
    return png(fig)


def stage_curves(history: list[dict]) -> str:
    """An <img>: one small loss subplot per training stage (their losses have different scales)."""
    from matplotlib.ticker import MaxNLocator

    h = pd.DataFrame(history)
    stages = list(dict.fromkeys(h["stage"]))
    fig, axes = plt().subplots(1, len(stages), figsize=(min(14.0, 1.0 + 3.4 * len(stages)), 3.0), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        s = h[h["stage"] == stage]
        ax.plot(s["epoch"], s["train_loss"], marker=".", label="train")
        if "val_loss" in s and s["val_loss"].notna().any():
            ax.plot(s["epoch"], s["val_loss"], marker=".", label="validation")
        ax.set_title(f"stage '{stage}'")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    return png(fig)


def dropped_note(profile: dict) -> str:
    """A line naming the constant columns the run dropped (empty when none was)."""
    dropped = profile.get("dropped_constant") or []
    if not dropped:
        return ""
    return (f'<p>Dropped {len(dropped)} constant column(s), which cannot tell rows apart: '
            f'{html.escape(", ".join(dropped))}.</p>')


def _lessons_part(lessons: dict) -> list[str]:
    """What mattered in the search, and the settings that go with its best trials."""
    past = lessons.get("past_trials", 0)
    over = f"{lessons['trials']} trials" + (f" ({past} of them from past runs on this dataset)" if past else "")
    parts = ["<h3>What mattered</h3>",
             f'<p class="muted">fANOVA (Optuna) over {over}: each setting\'s share of the variance of the '
             'tuned metric.</p>']
    if len(lessons["importance"]):
        parts.append(table(lessons["importance"], left=("setting",)))
    parts.append("<h3>Rules over the trials</h3>")
    if len(lessons["trial_rules"]):
        parts += ['<p class="muted">Each trial is a basket of its settings (ranges in terciles of the values '
                  'tried) and "top quartile" when it is among the best quarter; the rules are mined with this '
                  'project\'s FP-Growth.</p>', table(lessons["trial_rules"], left=("rule",))]
    else:
        parts.append('<p class="muted">No rule reaches support 0.1 and confidence 0.5 (8 trials or more are '
                     'needed).</p>')
    return parts


def _metrics_part(task, spec, metrics: dict) -> list[str]:
    if not task.metric_modes:
        return []
    if not task.scores_every_row:
        return ["<h2>Metrics on the test split</h2>", metrics_html(metrics, task.baseline_name, task),
                f'<p class="muted">train {metrics.get("rows_train", 0):,} rows · test '
                f'{metrics.get("rows_test", 0):,} rows · training {metrics.get("train_seconds", 0):.1f}s · '
                f'{metrics.get("epochs_run", "?")} epochs, best at epoch {metrics.get("best_epoch", "?")}</p>']
    truth = task.truth_column(spec)
    return ["<h2>Metrics</h2>", metrics_html(metrics, task.baseline_name, task), _other_numbers(task, metrics)] + (
        [f'<p class="muted">Label-based metrics compare with the column <b>{html.escape(truth)}</b>, which the '
         'model never saw.</p>'] if truth else [])


def _profile_part(task, profile: dict, n_inputs: int) -> list[str]:
    split = "" if task.scores_every_row else (f'; split train/valid/test = {profile["rows_train"]:,} / '
                                              f'{profile["rows_valid"]:,} / {profile["rows_test"]:,}')
    parts = ["<h2>Data profile</h2>",
             f'<p>{profile.get("rows", 0):,} rows × {profile.get("n_columns", 0)} columns{split}; '
             f'{n_inputs} encoded model inputs.</p>', dropped_note(profile)]
    if profile.get("class_balance"):
        parts.append(class_balance(profile["class_balance"]))
    if profile.get("columns"):
        parts.append(table(pd.DataFrame(profile["columns"]), left=("column", "type")))
    return parts


def augment_section(augment: dict) -> list[str]:
    """The "Augmented features" part: which mined columns the model's inputs gained, how many,
    and the fitted settings (the rules themselves, with lift and support)."""
    counts, settings = augment["counts"], augment["settings"]
    rows = []
    for kind, n in counts.items():
        s = settings.get(kind, {})
        shown = {k: v for k, v in s.items() if k not in ("method", "chosen")}
        rows.append({"kind": kind, "columns added": n, "how": s.get("method", ""),
                     "settings": ", ".join(f"{k}={v}" for k, v in shown.items())})
    parts = ["<h2>Augmented features</h2>",
             f'<p class="muted">{sum(counts.values())} column(s) mined from a sample of the training split and '
             'appended to the encoded inputs; saved with the model (augment.json, augment.npz) and computed the '
             'same way when any row is scored. The baseline is trained on the same inputs.</p>',
             table(pd.DataFrame(rows), left=("kind", "how", "settings"))]
    gain = augment.get("gain")
    if gain:
        parts += gain_part(gain)
    for s in settings.values():  # the rules chosen as features, with their lift and support
        if s.get("chosen"):
            parts += ["<h3>Rule features</h3>", table(pd.DataFrame(s["chosen"]), left=("rule",))]
    return parts


def gain_part(gain: dict) -> list[str]:
    """What the mined columns gained: the model with and without them, per training seed."""
    m, ci = gain["metric"], gain.get("diff_ci")
    shown = f"95% interval [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "no interval (too few test rows)"
    verdict = ("the interval excludes 0: a gain" if ci and ci[0] > 0 else
               "the interval excludes 0: a loss" if ci and ci[1] < 0 else "the interval holds 0: no clear gain")
    rows = pd.DataFrame({"seed": gain["seeds"], f"{m} with": gain["with"], f"{m} without": gain["without"],
                         "difference": gain["diff"]})
    return ["<h3>Gain from the mined columns</h3>",
            f'<p>Test {html.escape(m)}, with minus without the mined columns: <b>{gain["mean_diff"]:+.4f}</b> '
            f'(mean over {len(gain["seeds"])} training seed(s); range {gain["diff_range"][0]:+.4f} to '
            f'{gain["diff_range"][1]:+.4f}); {shown}: {verdict}.</p>',
            f'<p class="muted">The saved model\'s settings, trained twice per seed in one process on the same '
            f'{gain["rows_train"]:,} sampled training rows, with and without the mined columns (the run\'s '
            f'fitted ones), scored on the same {gain["rows_test"]:,} test rows. The interval is a paired bootstrap '
            'over the test rows of the mean over seeds; the range shows how much the seeds disagree.</p>',
            table(rows)]


def write_report(path: Path, task, spec, metrics: dict, *, profile: Optional[dict] = None,
                 history: Optional[list[dict]] = None, material: Optional[dict] = None,
                 info: Optional[dict] = None, leaderboard: Optional[pd.DataFrame] = None, base_spec=None,
                 n_inputs: Optional[int] = None, lessons: Optional[dict] = None) -> None:
    """Write the run's report page (atomically) to ``path``; returns None.

    ``spec`` is the job of the saved model (after tuning, the best trial's); ``base_spec`` the
    tuned job as given, whose search space the leaderboard section shows; ``material`` what the
    task's ``mine`` handed to its report sections; ``n_inputs`` the model's encoded inputs (default:
    the task's ``info['feature_names']``); ``lessons`` what the tuning trials teach (tune/lessons.py)."""
    info = info or {}
    trials = len(leaderboard) if leaderboard is not None else 0
    parts = [f"<h1>{html.escape(spec.name)}</h1>", task.header_html(spec, info, metrics, profile, trials)]
    parts += _metrics_part(task, spec, metrics)
    parts += task.report_sections(spec, metrics, material or {}, info)
    if (material or {}).get("explanations"):  # a task that explains (explain.py)
        from dlmine_ray.report.explain import explanation_section

        parts += explanation_section(material["explanations"])
    if (material or {}).get("augment"):
        parts += augment_section(material["augment"])
    if history:
        parts.append("<h2>Learning curves</h2>")
        if len({h.get("stage") for h in history}) > 1:
            parts.append('<p class="muted">One panel per training stage; their losses differ in kind and '
                         'scale.</p>' + stage_curves(history))
        else:
            parts.append(learning_curves(history))
    if leaderboard is not None:
        parts.append("<h2>Tuning leaderboard</h2>")
        parts.append(table(leaderboard, left=("trial", "status")))
        parts.append('<p class="muted">status: <b>completed</b> (the trial ran its epochs or stopped early by '
                     'itself), <b>stopped by scheduler</b> (the scheduler ended it), <b>error</b>. The saved model is '
                     'the rank 1 trial; the Job below is its job (job.yaml); the job as given is job_base.yaml.</p>')
        if lessons:
            parts += _lessons_part(lessons)
        if base_spec is not None and base_spec.tune is not None:
            shown = {**base_spec.tune.model_dump(), "space": base_spec.search_space()}
            parts.append("<h3>Search space</h3>" + ("" if base_spec.tune.space is not None else
                                                    '<p class="muted">the task\'s default space</p>')
                         + f"<pre>{html.escape(yaml.safe_dump(shown, sort_keys=False))}</pre>")
    if profile:
        parts += _profile_part(task, profile, n_inputs if n_inputs is not None else len(info.get("feature_names", [])))
    write_page(path, spec, parts)


