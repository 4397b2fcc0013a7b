"""The knowledge base: every run of every task, with the dataset it ran on, for choosing models
from what worked before.

Three tables (SQLAlchemy Core, so one code path serves an embedded SQLite file and a PostgreSQL
server that every node of a cluster reaches):

- ``datasets``: fingerprint, row and column counts, schema, content sketch, meta-features;
- ``runs``: one row per run: its dataset, task, the full job of the saved model, validation and
  test metrics, the selection metric and its value, seconds, status, versions, output folder;
- ``trials``: one row per tuning trial (or one for an untuned run): its settings (dotted job
  fields), status, epochs and value of the selection metric.

Where: the job's ``knowledge:`` (a path or a SQLAlchemy URL; ``off`` records nothing), else the
``DLMINE_KNOWLEDGE`` environment variable, else ``~/.dlmine/knowledge.db``. A run and its trials
are written in one transaction, so concurrent runs lose nothing and a failed write leaves no half
record; a store that cannot be opened is refused before the run starts, and nothing in it is
changed.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from dlmine_ray.errors import DlmineError, first_line

DEFAULT_PATH = "~/.dlmine/knowledge.db"
ENV = "DLMINE_KNOWLEDGE"
OFF = ("off", "none", "false", "no")
SCHEMA_VERSION = 1
_CREATE_TRIES = 5  # opens of a new store that race with other runs creating it


def resolve(where: Optional[str]) -> Optional[str]:
    """The SQLAlchemy URL of the knowledge base a job writes to, or None when recording is off."""
    where = where if where is not None else os.environ.get(ENV) or DEFAULT_PATH
    if str(where).strip().lower() in OFF:
        return None
    if "://" in str(where):
        return str(where)
    path = Path(where).expanduser().absolute()
    return f"sqlite:///{path}"


def _tables():
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

    md = MetaData()
    Table("info", md, Column("key", String(64), primary_key=True), Column("value", Text))
    Table("datasets", md, Column("fingerprint", String(64), primary_key=True), Column("name", Text),
          Column("n_rows", Integer), Column("n_columns", Integer), Column("schema", Text), Column("sketch", String(64)),
          Column("meta_features", Text), Column("first_seen", Float), Column("last_seen", Float))
    Table("runs", md, Column("run_id", String(40), primary_key=True), Column("fingerprint", String(64), index=True),
          Column("task", String(64), index=True), Column("name", Text), Column("status", String(32)),
          Column("job", Text), Column("metrics", Text), Column("selection_metric", String(64)),
          Column("selection_mode", String(8)), Column("selection_value", Float), Column("seconds", Float),
          Column("versions", Text), Column("output", Text), Column("error", Text), Column("created", Float))
    Table("trials", md, Column("run_id", String(40), index=True), Column("trial", String(128)),
          Column("status", String(32)), Column("params", Text), Column("value", Float), Column("epochs", Integer),
          Column("seconds", Float))
    return md


class KnowledgeBase:
    """An open knowledge base (see the module's docstring); ``url`` a SQLAlchemy URL."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine, event, select
        from sqlalchemy.exc import DBAPIError, IntegrityError

        self.url = url
        self.shown = shown = _safe(url)  # fit to print: no password
        self._md = _tables()
        try:
            if url.startswith("sqlite:///"):
                path = Path(url[len("sqlite:///"):])
                if path.exists() and path.is_dir():
                    raise DlmineError(f"knowledge base {path} is a folder, not a database file")
                path.parent.mkdir(parents=True, exist_ok=True)
                self.engine = create_engine(url, connect_args={"timeout": 60})

                @event.listens_for(self.engine, "connect")
                def _pragmas(conn, _):  # concurrent writers wait for each other instead of failing
                    cur = conn.cursor()
                    cur.execute("PRAGMA busy_timeout = 60000")
                    cur.execute("PRAGMA journal_mode = WAL")
                    cur.close()
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            for attempt in range(_CREATE_TRIES):
                try:
                    self._create(select)
                    break
                except DBAPIError as err:
                    # Runs that start together on a new store each check that a table is missing, then
                    # create it: all but the first fail with "already exists" (or on the version row's key).
                    # The tables are there now; another try finds them. Other errors are reported at once.
                    if attempt == _CREATE_TRIES - 1 or not (isinstance(err, IntegrityError)
                                                            or "already exists" in str(err)):
                        raise
                    time.sleep(0.1 * (attempt + 1))
        except DlmineError:
            raise
        except Exception as err:
            raise DlmineError(f"knowledge base {shown} cannot be opened: {first_line(err)}") from None

    def _create(self, select) -> None:
        """Create the tables that are missing and check the schema version."""
        self._md.create_all(self.engine)
        info = self._md.tables["info"]
        with self.engine.begin() as conn:
            row = conn.execute(select(info.c.value).where(info.c.key == "schema_version")).first()
            if row is None:
                conn.execute(info.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row[0]) > SCHEMA_VERSION:
                raise DlmineError(f"knowledge base {self.shown} was written by a newer dlmine_ray (schema "
                                  f"{row[0]}); upgrade dlmine_ray")

    @classmethod
    def open(cls, where: Optional[str]) -> Optional["KnowledgeBase"]:
        """The knowledge base ``where`` names (see ``resolve``), or None when recording is off."""
        url = resolve(where)
        return None if url is None else cls(url)

    # -- writing -----------------------------------------------------------------------------
    def record(self, run: dict[str, Any], dataset: Optional[dict[str, Any]] = None,
               trials: Iterable[dict[str, Any]] = ()) -> str:
        """Write one run (with its dataset and trials) in one transaction; returns its run_id."""
        t = self._md.tables
        now = time.time()
        run_id = run.get("run_id") or uuid.uuid4().hex
        with self.engine.begin() as conn:
            if dataset is not None:
                self._upsert_dataset(conn, dataset, now)
            conn.execute(t["runs"].insert().values(
                run_id=run_id, fingerprint=dataset["fingerprint"] if dataset else None, task=run["task"],
                name=run.get("name"), status=run.get("status", "completed"), job=_json(run.get("job")),
                metrics=_json(run.get("metrics")), selection_metric=run.get("selection_metric"),
                selection_mode=run.get("selection_mode"), selection_value=_num(run.get("selection_value")),
                seconds=_num(run.get("seconds")), versions=_json(run.get("versions") or versions()),
                output=run.get("output"), error=run.get("error"), created=now))
            rows = [{"run_id": run_id, "trial": str(tr.get("trial")), "status": tr.get("status"),
                     "params": _json(tr.get("params") or {}), "value": _num(tr.get("value")),
                     "epochs": tr.get("epochs"), "seconds": _num(tr.get("seconds"))} for tr in trials]
            if rows:
                conn.execute(t["trials"].insert(), rows)
        return run_id

    def _upsert_dataset(self, conn, dataset: dict, now: float) -> None:
        """Insert the dataset, or mark it seen again: one statement, so that two runs on a new
        dataset at once cannot both insert it."""
        from sqlalchemy import select, update
        from sqlalchemy.exc import IntegrityError

        ds = self._md.tables["datasets"]
        values = dict(fingerprint=dataset["fingerprint"], name=dataset.get("name"), n_rows=dataset.get("n_rows"),
                      n_columns=dataset.get("n_columns"), schema=_json(dataset.get("schema")),
                      sketch=dataset.get("sketch"), meta_features=_json(dataset.get("meta_features")),
                      first_seen=now, last_seen=now)
        name = self.engine.dialect.name
        if name in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            ins = (postgresql.insert if name == "postgresql" else sqlite.insert)(ds).values(**values)
            conn.execute(ins.on_conflict_do_update(index_elements=[ds.c.fingerprint], set_={"last_seen": now}))
            return
        seen = update(ds).where(ds.c.fingerprint == values["fingerprint"]).values(last_seen=now)
        if conn.execute(select(ds.c.fingerprint).where(ds.c.fingerprint == values["fingerprint"])).first():
            conn.execute(seen)
            return
        try:  # another database: insert, and on a concurrent insert of the same dataset, update
            with conn.begin_nested():
                conn.execute(ds.insert().values(**values))
        except IntegrityError:
            conn.execute(seen)

    # -- reading -----------------------------------------------------------------------------
    def _frame(self, query) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def datasets(self) -> pd.DataFrame:
        """Every dataset seen, with its meta-features (a dict per row)."""
        df = self._frame(self._md.tables["datasets"].select())
        if len(df):
            df["meta_features"] = df["meta_features"].map(_load)
            df["schema"] = df["schema"].map(_load)
        return df

    def runs(self, task: Optional[str] = None, dataset: Optional[str] = None) -> pd.DataFrame:
        """Runs, newest first, each with its number of recorded trials (``n_trials``; an untuned run
        has one) (``task``: only that task's; ``dataset``: a fingerprint or its prefix, or a dataset name)."""
        from sqlalchemy import func, or_, select

        r, d, tr = self._md.tables["runs"], self._md.tables["datasets"], self._md.tables["trials"]
        counts = select(tr.c.run_id, func.count().label("n_trials")).group_by(tr.c.run_id).subquery()
        q = (select(r, d.c.name.label("dataset"), d.c.n_rows, counts.c.n_trials)
             .select_from(r.outerjoin(d, r.c.fingerprint == d.c.fingerprint)
                          .outerjoin(counts, r.c.run_id == counts.c.run_id)))
        if task:
            q = q.where(r.c.task == task)
        if dataset:
            q = q.where(or_(r.c.fingerprint.like(f"{dataset}%"), d.c.name == dataset))
        df = self._frame(q.order_by(r.c.created.desc()))
        for c in ("job", "metrics", "versions"):
            if len(df):
                df[c] = df[c].map(_load)
        return df

    def trials(self, task: str, fingerprints: Optional[list[str]] = None) -> pd.DataFrame:
        """The trials of ``task``'s completed runs (on ``fingerprints`` only, if given), with each
        run's dataset, selection metric and direction; ``params`` as dicts."""
        from sqlalchemy import select

        r, tr = self._md.tables["runs"], self._md.tables["trials"]
        q = (select(tr, r.c.fingerprint, r.c.selection_metric, r.c.selection_mode, r.c.created)
             .select_from(tr.join(r, tr.c.run_id == r.c.run_id))
             .where(r.c.task == task).where(r.c.status == "completed"))
        if fingerprints is not None:
            q = q.where(r.c.fingerprint.in_(list(fingerprints)))
        df = self._frame(q)
        if len(df):
            df["params"] = df["params"].map(_load)
        return df


def versions() -> dict[str, str]:
    """The versions a run was made with."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("dlmine_ray", "ray", "torch", "scikit-learn", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _safe(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _json(v) -> Optional[str]:
    return None if v is None else json.dumps(_clean(v), default=str, sort_keys=True, separators=(",", ":"))


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _load(v):
    return json.loads(v) if isinstance(v, str) else v
