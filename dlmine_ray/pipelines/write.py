"""The run folder, whose files appear complete or not at all, and the one output tail of every
pipeline (metrics.json, job.yaml, job_base.yaml, history.json, the result tables, report.html).

A run writes into a hidden staging folder beside DIR and renames it to DIR at the end, so a
failed run leaves nothing behind and a reader never sees a half-written file."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from dlmine_ray.errors import DlmineError

RUN_MARKERS = ("metrics.json", "model", "report.html", "predictions.parquet")


#: inside a staging folder: who writes it ({"pid", "host", "job", "run"}), so that a later run can
#: tell a dead run's leftovers (removed, or resumed with --resume) from a live run's (never touched)
OWNER = ".dlmine-owner.json"
#: inside a staging folder: the run's scratch (Ray Train/Tune storage, kept checkpoints); removed
#: before the folder is published
SCRATCH = ".scratch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunFolder:
    """Staging area for one run's outputs; ``commit()`` moves it to its final place."""

    def __init__(self, final: str, overwrite: bool = False):
        self.final = Path(final).expanduser().absolute()
        self.overwrite = overwrite
        self.check()
        self.run_id = uuid.uuid4().hex[:8]
        self.stage = self.final.parent / f".{self.final.name}.tmp-{self.run_id}"
        self.resumed = False

    def dead_stages(self, job: Optional[str] = None) -> list[Path]:
        """Staging folders of this output left by runs whose process is gone (on this host; with
        ``job``, only those of the same job), newest first. A folder without an owner file (an
        older version's, or one being created) is never counted."""
        out = []
        for d in self.final.parent.glob(f".{self.final.name}.tmp-*"):
            try:
                owner = json.loads((d / OWNER).read_text())
            except (OSError, ValueError):
                continue
            if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", 0))) \
                    and (job is None or owner.get("job") == job) and d != self.stage:
                out.append(d)
        return sorted(out, key=lambda d: d.stat().st_mtime, reverse=True)

    def remove_dead(self) -> int:
        """Remove the staging folders of dead runs of this output; return how many."""
        dead = self.dead_stages()
        for d in dead:
            shutil.rmtree(d, ignore_errors=True)
        return len(dead)

    def check(self) -> None:
        """Refuse an output folder that holds another run (unless overwrite) or other files."""
        f = self.final
        if f.exists() and not f.is_dir():
            raise DlmineError(f"output path {f} exists and is not a folder")
        if f.is_dir() and any(f.iterdir()):
            is_run = any((f / m).exists() for m in RUN_MARKERS)
            if not is_run:
                raise DlmineError(f"output folder {f} is not empty and holds no dlmine run; choose another folder")
            if not self.overwrite:
                raise DlmineError(f"output folder {f} already holds a run; pass --overwrite to replace it")

    def open(self, job: str = "", resume: bool = False) -> Path:
        """Create the staging folder, marked with this process and the job's digest ``job``. With
        ``resume``, take over the newest dead run's staging folder of the same job instead (its
        checkpoints are in its scratch), if there is one (``self.resumed`` says); it keeps that run's
        ``run_id``, which names its Ray Train runs in a storage outside the folder."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        dead = self.dead_stages(job) if resume else []
        if dead:
            self.run_id = json.loads((dead[0] / OWNER).read_text()).get("run") or self.run_id
            os.rename(dead[0], self.stage)
            self.resumed = True
            for left in self.stage.iterdir():  # what it had written of its outputs is written again
                if left.name not in (SCRATCH, OWNER):
                    shutil.rmtree(left) if left.is_dir() and not left.is_symlink() else left.unlink()
        else:
            self.stage.mkdir(parents=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "job": job, "run": self.run_id}
        (self.stage / OWNER).write_text(json.dumps(owner))
        return self.stage

    @property
    def scratch(self) -> Path:
        return self.stage / SCRATCH

    def path(self, name: str) -> Path:
        return self.stage / name

    def commit(self) -> Path:
        """Atomically put the staged run at its final path; return that path."""
        self.check()
        shutil.rmtree(self.scratch, ignore_errors=True)
        (self.stage / OWNER).unlink(missing_ok=True)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final, old)
        os.rename(self.stage, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp name, then rename); NaN becomes null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, default=str))
    os.replace(tmp, path)


def write_parquet_batches(path: Path, batches: Iterable[pa.Table]) -> int:
    """Stream Arrow tables into one Parquet file (temp name, then rename); return rows written."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    writer = None
    rows = 0
    try:
        for t in batches:
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
            elif t.schema != writer.schema:
                t = t.cast(writer.schema)
            writer.write_table(t)
            rows += t.num_rows
        if writer is None:
            raise DlmineError("no rows to write")
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return rows


def arrow(df):
    """A pandas frame as an Arrow table for Parquet (object columns as text)."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype(str)
    return pa.Table.from_pandas(df, preserve_index=False)


def write_outputs(ctx, metrics: dict, *, run_spec=None, history: Optional[list] = None,
                  tables: Optional[dict] = None, leaderboard=None, report: Optional[dict] = None) -> None:
    """The output tail of every run, into the staging folder: the result tables (file name ->
    DataFrame), metrics.json (with ``total_seconds``), job.yaml (the job of the saved model:
    ``run_spec``, default the job as given), job_base.yaml (the job as given, when they differ),
    history.json, leaderboard.parquet and report.html (``report``: write_report's keywords)."""
    import yaml

    from dlmine_ray.report.page import write_report

    folder, spec = ctx.folder, ctx.spec
    run_spec = run_spec or spec
    for name, df in (tables or {}).items():
        write_parquet_batches(folder.path(name), [arrow(df)])
    metrics["total_seconds"] = round(ctx.seconds(), 3)
    write_json(folder.path("metrics.json"), metrics)
    folder.path("job.yaml").write_text(yaml.safe_dump(run_spec.model_dump(), sort_keys=False))
    if run_spec is not spec:
        folder.path("job_base.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    if history is not None:
        write_json(folder.path("history.json"), history)
    if leaderboard is not None:
        write_parquet_batches(folder.path("leaderboard.parquet"), [arrow(leaderboard)])
    write_report(folder.path("report.html"), ctx.task, run_spec, metrics, leaderboard=leaderboard,
                 base_spec=spec if run_spec is not spec else None, **(report or {}))
