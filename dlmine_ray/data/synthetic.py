"""Synthetic sharded Parquet datasets for scale tests and demos (``dlmine make-data``)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dlmine_ray.errors import DlmineError

KINDS = ("classification", "regression", "baskets")


def _teacher(features: int, hidden: int, outputs: int, seed: int):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(features), (features, hidden))
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, outputs))
    return w1, w2


def make_shard(kind: str, rows: int, features: int, start: int, seed: int, shard: int, classes: int = 2,
               categorical: int = 0, noise: float = 0.1) -> pa.Table:
    """One shard: ``row_id``, ``x0..x{F-1}`` (float32), optional ``c0..`` strings, and
    ``label`` (int) or ``target`` (float) from a fixed random two-layer teacher network."""
    w1, w2 = _teacher(features, 32, classes if kind == "classification" else 1, seed)
    rng = np.random.default_rng([seed, shard])
    x = rng.normal(size=(rows, features)).astype(np.float32)
    h = np.tanh(x @ w1) @ w2
    cols = {"row_id": np.arange(start, start + rows, dtype=np.int64)}
    cols.update({f"x{j}": x[:, j] for j in range(features)})
    cat_effect = np.zeros(rows)
    for j in range(categorical):
        codes = rng.integers(0, 5, rows)
        cols[f"c{j}"] = np.array(["a", "b", "c", "d", "e"], dtype=object)[codes]
        cat_effect += (codes - 2) * 0.3
    if kind == "classification":
        logits = h * 3.0 + rng.normal(0, noise, h.shape)
        logits[:, 0] += cat_effect
        cols["label"] = logits.argmax(axis=1).astype(np.int64)
    else:
        cols["target"] = (h[:, 0] * 3.0 + cat_effect + rng.normal(0, noise, rows)).astype(np.float64)
    return pa.table(cols)


GROUP_SHARE = 0.4  # of the baskets hold one planted group (an equal share of them each)
MAX_GROUPS = 10


def planted_groups(items: int, seed: int) -> list[list[str]]:
    """The item groups ``make_baskets`` plants for ``items`` and ``seed``: up to ``MAX_GROUPS``
    disjoint groups of 2-4 item names, drawn from all but the most popular tenth of the items, so
    that a group's items are rarely together by chance and its rules have a high lift. Each group
    is in about ``GROUP_SHARE / len(groups)`` of the baskets (4% with 10 groups)."""
    fixed = np.random.default_rng([seed, 11])  # the same groups in every shard
    pool = fixed.permutation(np.arange(items // 10, items))
    sizes = fixed.integers(2, 5, MAX_GROUPS)
    out, at = [], 0
    for size in sizes:
        if at + size > len(pool):
            break
        out.append(sorted(f"item{k:04d}" for k in pool[at:at + size]))
        at += size
    return out


def planted_description(items: int, seed: int) -> str:
    """One line saying what ``make_baskets`` planted for ``items`` and ``seed``."""
    groups = planted_groups(items, seed)
    share = GROUP_SHARE / max(len(groups), 1)
    return (f"planted {len(groups)} item group(s), each in about {share:.1%} of the baskets (seed {seed}): "
            + "; ".join("{" + ", ".join(g) + "}" for g in groups))


def make_baskets(rows: int, items: int, avg_items: float, start: int, seed: int, shard: int) -> pa.Table:
    """One shard of market baskets: ``basket_id`` and ``items`` (a list of item names). Item
    popularity follows a Zipf law (the k-th item is drawn with weight 1/k); besides, 40% of the
    baskets hold one of up to 10 planted groups (``planted_groups``: 2-4 items outside the most
    popular tenth), so that each group is in about 4% of the baskets and its rules, well above
    a 1% support, have a lift far above 1. A basket has 1 + Poisson(avg_items - 1) draws (an item
    drawn twice appears twice). The table's schema metadata ``dlmine.planted`` says what was
    planted."""
    names = np.array([f"item{k:04d}" for k in range(items)], dtype=object)
    weights = 1.0 / np.arange(1, items + 1)
    p = weights / weights.sum()
    code = {name: k for k, name in enumerate(names)}
    groups = [np.asarray([code[g] for g in group]) for group in planted_groups(items, seed)]
    rng = np.random.default_rng([seed, shard, 7])
    sizes = 1 + rng.poisson(max(avg_items - 1.0, 0.0), rows)
    drawn = rng.choice(items, size=int(sizes.sum()), p=p)
    with_group = (rng.random(rows) < GROUP_SHARE) & (len(groups) > 0)
    which = rng.integers(0, max(len(groups), 1), rows)
    parts, offsets, pos, at = [], [0], 0, 0
    for i in range(rows):  # python loop over rows: fine for a data generator (~1M rows/s/5)
        basket = drawn[at:at + sizes[i]]
        at += sizes[i]
        if with_group[i]:
            basket = np.concatenate([basket, groups[which[i]]])
        parts.append(basket)
        pos += len(basket)
        offsets.append(pos)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    values = pa.array(names[flat], type=pa.string())
    lists = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)
    table = pa.table({"basket_id": np.arange(start, start + rows, dtype=np.int64), "items": lists})
    return table.replace_schema_metadata({"dlmine.planted": planted_description(items, seed)})


def make_data(kind: str, rows: int, features: int, shards: int, output: str, seed: int = 0, classes: int = 2,
              categorical: int = 0, overwrite: bool = False, items: int = 1000, avg_items: float = 10.0) -> Path:
    """Write ``shards`` Parquet files holding ``rows`` rows into the folder ``output``; return it.

    The folder appears complete or not at all."""
    if kind not in KINDS:
        raise DlmineError(f"unknown dataset kind '{kind}'; choose one of {', '.join(KINDS)}")
    if rows < 1 or features < 1 or shards < 1:
        raise DlmineError("--rows, --features and --shards must be at least 1")
    if classes < 2:
        raise DlmineError("--classes must be at least 2")
    if kind == "baskets" and (items < 5 or avg_items < 1):
        raise DlmineError("baskets need --items of at least 5 and --avg-items of at least 1")
    shards = min(shards, rows)
    out = Path(output).expanduser().absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DlmineError(f"output folder {out} is not empty; pass --overwrite to replace it")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        start = 0
        for s in range(shards):
            n = rows // shards + (1 if s < rows % shards else 0)
            table = make_baskets(n, items, avg_items, start, seed, s) if kind == "baskets" else \
                make_shard(kind, n, features, start, seed, s, classes, categorical)
            pq.write_table(table, tmp / f"part-{s:05d}.parquet")
            start += n
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def make_repeated_rows(rows: int = 40_000, seed: int = 0) -> pd.DataFrame:
    """A table shaped like a survey: 648 distinct feature rows (three 0-5 integers and a 3-level
    category), each repeated many times with both labels (``label`` ~ Bernoulli of a logistic
    function of the features). A split that sends copies of one (features, label) pair together
    scores models on the label they never saw: the case the default split must get right."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=(rows, 3))
    cat = rng.choice(["a", "b", "c"], rows)
    logit = 0.5 * (x[:, 0] - 2.5) - 0.4 * (x[:, 1] - 2.5) + 0.3 * (x[:, 2] - 2.5) * (cat == "a") + 0.5 * (cat == "b")
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "cat": cat, "label": label})


def make_informative_columns(rows: int = 2000, columns: int = 100, informative: int = 10,
                             seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A class table where only ``informative`` of ``columns`` numeric columns carry the label
    (scikit-learn's ``make_classification``: no redundant or repeated columns, the rest noise),
    with the columns in a seeded random order; returns the table (target ``label``) and the names
    of the informative columns. A feature selector should find them."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=columns, n_informative=informative, n_redundant=0,
                               n_repeated=0, n_classes=2, n_clusters_per_class=2, shuffle=False, random_state=seed)
    order = np.random.default_rng(seed).permutation(columns)  # column j of the table is x[:, order[j]]
    names = [f"f{j:03d}" for j in range(columns)]
    df = pd.DataFrame({names[j]: x[:, order[j]] for j in range(columns)})
    df["label"] = y
    return df, [names[j] for j in range(columns) if order[j] < informative]
