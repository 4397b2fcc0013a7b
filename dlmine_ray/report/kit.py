"""The page kit of report.html: plots as embedded PNG, tables, number formatting, the atomic
page write. A leaf (matplotlib, pandas, html only), so that every layer may use it: the pages in
``report/page.py`` and each task's own sections."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5} td.l,th.l{text-align:left} .muted{color:#777} pre{background:#f7f7f7;padding:.8rem;overflow:auto}
.better{color:#0a7d28;font-weight:600} .worse{color:#b3261e} img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1rem}
"""


def plt():
    """pyplot on the Agg backend (reports are written on headless drivers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def png(fig) -> str:
    """An <img> tag holding ``fig`` as an embedded PNG; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def colour(i: int, n: int):
    """The i-th of n categorical colours (tab10 up to 10, tab20 beyond; repeats past 20)."""
    cmap = plt().get_cmap("tab10" if n <= 10 else "tab20")
    return cmap(i % cmap.N)


def finite(v: Any) -> bool:
    """True for a real, finite number (not a bool)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any) -> str:
    """A table cell's text: 4 significant digits, counts with thousands separators, '–' for none."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"  # a count that a mixed table column turned into a float
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return html.escape(str(v))


def table(df: pd.DataFrame, left: tuple = ()) -> str:
    """An HTML table of ``df``; the ``left`` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{fmt(v)}</td>' for c, v in zip(df.columns, row))
        + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def class_balance(balance: dict) -> str:
    """An <img>: rows per class (all rows)."""
    keys = list(balance)[:50]
    fig, ax = plt().subplots(figsize=(min(10, 2 + 0.35 * len(keys)), 2.8))
    ax.bar(range(len(keys)), [balance[k] for k in keys])
    ax.set_xticks(range(len(keys)), keys, rotation=90 if len(keys) > 12 else 0)
    ax.set_title("class balance (all rows)")
    return png(fig)


def write_page(path, spec, parts: list[str]) -> None:
    """Append the job's YAML to ``parts`` and write the page to ``path`` atomically (a temporary
    name, then a rename): the report of every task ends this way."""
    parts = parts + ["<h2>Job</h2>",
                     f"<pre>{html.escape(yaml.safe_dump(spec.model_dump(), sort_keys=False))}</pre>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)} · dlmine_ray</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.write_text(page)
    os.replace(tmp, path)
