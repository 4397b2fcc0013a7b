#!/usr/bin/env python
"""dlmine_ray's pipeline versus the bare libraries, side by side in one run.

    python benchmarks/bench_pipeline.py [--rows N] [--features F] [--epochs E] [--json PATH]

On one synthetic classification dataset (sharded Parquet, made by
``dlmine_ray.data.synthetic.make_data``) and one Ray session (``ray_session(num_cpus=...)``):

(b) data: dlmine_ray's read + stats pass (``read_dataset`` + ``profile_dataset``) and its
    encode-and-materialize of the train/valid/test splits (as ``pipelines/tabular.py`` does:
    every row encoded once by ``_encode``, the splits cut out by ``_split``), against
    ``pyarrow.parquet.read_table`` + numpy standard scaling.
(a) training: both of the pipeline's training paths on the encoded splits, called as
    ``pipelines.fit.fit_stages`` calls them: ``fit_with_ray_train`` (a TorchTrainer running the generic loop)
    and ``fit_in_task`` (the same loop in one Ray task, used for small single-worker jobs),
    against a bare PyTorch loop over the same encoded tensors in memory: same MLP (256-256, no
    dropout), batch size, AdamW, the same shuffling (randperm + gather), the same per-epoch
    validation pass, same thread count. The bare loop runs before and after ours and the better
    run is the baseline (other load on a shared machine only slows a run down). ``--diagnostics``
    adds the bare loop inside a plain Ray task and inside a TorchTrainer, and dlmine_ray's loop
    in this process without Ray Train, to locate a gap.
(c) inference: ``score_dataset`` over the Parquet files read by Ray Data, consumed fully, against
    a bare torch forward pass over the same rows (same weights) as one in-memory float32 tensor
    in batches of 8192; plus a bare end-to-end variant (read_table + scale + forward + softmax).

It prints a table with ratios ours / bare, the cores used by this process tree and by other
processes in every measured window (a WARNING when other work overlapped a measurement), and
writes everything (per-epoch histories, stage timings, peak RSS) to ``--json PATH``. See
benchmarks/README.md for how to read it and for results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

# Before Ray is imported anywhere (quiet logs; no usage stats; no progress bars).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

# The working copy, not whatever else may be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
try:
    import psutil  # noqa: E402
except ImportError:  # Ray ships psutil in ray/thirdparty_files, put on sys.path by importing ray
    import ray  # noqa: E402,F401
    import psutil  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGET, ID = "label", "row_id"
TRAINER_LABEL = {"ray_train": "TorchTrainer", "task": "Ray task"}


# -- measuring helpers ---------------------------------------------------------------------

class TreeSampler:
    """Samples RSS and CPU time of this process and all its descendants (Ray's GCS, raylet and
    workers are children of a driver that started a local Ray) in a background thread.

    RSS is summed over processes, so pages shared between them (the plasma object store,
    shared libraries) are counted once per process that maps them: an upper bound."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.root = psutil.Process()
        self.peak_rss = 0
        self.phase_peaks: dict[str, int] = {}
        self._phase: Optional[str] = None
        # (monotonic time, {pid: (name, cpu seconds)}, busy cpu seconds of the whole machine)
        self.ticks: list[tuple[float, dict[int, tuple[str, float]], float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _name(self, p: psutil.Process) -> str:
        if p.pid == self.root.pid:
            return "driver (this script)"
        try:
            # Read every time: Ray renames a worker process (setproctitle) when it takes a task.
            cmd = p.cmdline()
            return (cmd[0] if cmd and cmd[0].startswith("ray::") else p.name()) or "?"
        except psutil.Error:
            return "?"

    def sample(self) -> None:
        """Take one sample now (also called at measurement boundaries, for exact windows)."""
        with self._lock:
            self._sample()

    def _sample(self) -> None:
        rss, cpu = 0, {}
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = (self._name(p), t.user + t.system)
            except psutil.Error:
                continue
        m = psutil.cpu_times()
        busy = m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0) + getattr(m, "steal", 0)
        self.ticks.append((time.monotonic(), cpu, busy))
        self.peak_rss = max(self.peak_rss, rss)
        if self._phase:
            self.phase_peaks[self._phase] = max(self.phase_peaks.get(self._phase, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def phase(self, name: Optional[str]) -> None:
        """Attribute following samples' peak RSS to ``name``."""
        self._phase = name
        if name:
            self.sample()

    def start(self) -> "TreeSampler":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, a: float, b: float, top: int = 8) -> dict[str, Any]:
        """Cores used per process name between monotonic times ``a`` and ``b``, and by
        processes outside this tree ("other": other users of a shared machine)."""
        if len(self.ticks) < 2:
            return {}
        ia = min(range(len(self.ticks)), key=lambda i: abs(self.ticks[i][0] - a))
        ib = min(range(len(self.ticks)), key=lambda i: abs(self.ticks[i][0] - b))
        if ib <= ia:
            return {}
        (ta, ca, ba), (tb, _, bb) = self.ticks[ia], self.ticks[ib]
        last: dict[int, tuple[str, float]] = {}
        for _, cpu, _ in self.ticks[ia:ib + 1]:  # a process that exits inside the window counts too
            for pid, (name, sec) in cpu.items():
                prev = last.get(pid)
                keep_prev = prev is not None and name in ("?", "ray::IDLE")  # the more telling name wins
                last[pid] = (prev[0] if keep_prev else name, sec)
        by_name: dict[str, float] = {}
        for pid, (name, sec) in last.items():
            used = sec - (ca[pid][1] if pid in ca else 0.0)
            if used > 0:
                by_name[name] = by_name.get(name, 0.0) + used
        span = tb - ta
        ours = sum(by_name.values())
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
        return {"window_s": round(span, 3), "tree_cpu_s": round(ours, 3), "tree_cores": round(ours / span, 3),
                "foreign_cores": round(max(bb - ba - ours, 0.0) / span, 3),
                "cores_by_process": {k: round(v / span, 3) for k, v in ranked[:top]}}


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until the machine's CPU is below ``threshold`` busy over 3 s;
    return the last busy fraction seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=3.0) / 100
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"[bench] machine busy ({busy:.0%} CPU from other processes); waiting ...", file=sys.stderr, flush=True)


def _ratio(ours: Optional[float], bare: Optional[float]) -> Optional[float]:
    if ours is None or bare is None or bare == 0:
        return None
    return ours / bare


# -- (b) data ---------------------------------------------------------------------------------

def bench_data_bare(folder: str, features: list[str]) -> dict:
    """pyarrow read_table + numpy standard scaling; returns timings and the scaled matrix."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = pq.read_table(folder)
    t1 = time.perf_counter()
    x = np.column_stack([table.column(c).to_numpy() for c in features]).astype(np.float32, copy=False)
    y = table.column(TARGET).to_numpy().astype(np.int64)
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < 1e-12] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    t2 = time.perf_counter()
    return {"rows": int(table.num_rows), "read_s": t1 - t0, "scale_s": t2 - t1, "total_s": t2 - t0,
            "x": x, "y": y}


def bench_data_ours(folder: str, spec, driver: bool = False) -> dict:
    """dlmine_ray's data path, as pipelines/tabular.py's run does it: read, stats pass, fit,
    encode every row once + materialize, then cut out the train/valid/test splits. ``driver``:
    the small-input path (rows read and encoded in this process, ``data/local.py``)."""
    from types import SimpleNamespace

    from dlmine_ray.data.preprocess import TabularPreprocessor
    from dlmine_ray.data.profile import check_profile, profile_dataset
    from dlmine_ray.data.read import read_dataset
    from dlmine_ray.pipelines import tabular
    from dlmine_ray.tasks import get_task

    task = get_task(spec.task)
    d = spec.data
    t0 = time.perf_counter()
    if driver:
        from dlmine_ray.data.local import read_local

        ds = read_local(d.path, d.format, row_key=d.split_key is None, na_values=d.na_values)
    else:
        ds = read_dataset(d.path, d.format, row_key=d.split_key is None, na_values=d.na_values)
    truth = task.truth_column(spec)
    categorical = task.target_kind == "categorical" or (task.target_kind is None and truth is not None)
    profile = profile_dataset(ds, truth, categorical, d.split_key, d.split.valid, d.split.test, d.split.seed)
    t1 = time.perf_counter()
    drop = {truth, *d.ignore, *(c for c in (d.id, d.group) if c)}
    features = check_profile(profile, spec, task, [c for c in profile.order if c not in drop])
    prep = TabularPreprocessor.from_profile(profile, features, d.target, task.target_kind, d.id, d.max_categories)
    kept = tuple(c for c in (d.id, truth) if c)
    # _encode reads only .spec and .task of the run context
    encoded = tabular._encode(ds, SimpleNamespace(spec=spec, task=task), prep, kept)  # one encode pass
    split_s = {}
    splits = {"train": tabular._split(encoded, (0,), ["features", "target"])}
    if d.split.valid > 0:
        splits["valid"] = tabular._split(encoded, (1,), ["features", "target"])
    splits["test"] = tabular._split(encoded, (2,), None)  # what the pipeline scores
    del encoded
    t2 = time.perf_counter()
    info = task.initial_info(spec, prep.feature_names, prep.target_info_)
    # as fit_stages builds it for a one-stage task
    layout = {"n_features": prep.n_features, "info": info, "has_valid": "valid" in splits, "stage": "fit",
              "init_state": None, "train": task.stage_train(spec, "fit")}
    return {"rows": profile.n_rows, "rows_split": list(profile.rows), "read_profile_s": t1 - t0,
            "encode_materialize_s": t2 - t1, "encode_per_split_s": split_s, "total_s": t2 - t0,
            "train_bytes": int(splits["train"].size_bytes()),
            "splits": splits, "prep": prep, "layout": layout, "features": features}


def stack_split(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoded split as (features float32, target int64) tensors in memory."""
    xs, ys = [], []
    for b in ds.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(b["features"])
        ys.append(b["target"])
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)), \
        torch.from_numpy(np.concatenate(ys).astype(np.int64))


# -- (a) training -----------------------------------------------------------------------------

def bare_train(xtr, ytr, xva, yva, n_classes: int, epochs: int, batch: int, lr: float, seed: int,
               threads: int, on_epoch=None) -> dict:
    """The bare PyTorch twin of dlmine_ray/train/loop.py's epoch: randperm + gather batches,
    AdamW, cross-entropy, loss.item() per step, then a validation pass (untimed in samples/s,
    as in the loop). Returns per-epoch samples/s and the whole-fit wall time."""
    from dlmine_ray.models import MLP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    model = MLP(xtr.shape[1], n_classes, hidden=[256, 256], dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    n, history = ytr.shape[0], []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch))
        loss_sum = 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.shape[0]
        train_s = time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, yva.shape[0], max(batch, 1024)):
                correct += int((model(xva[i:i + max(batch, 1024)]).argmax(1) == yva[i:i + max(batch, 1024)]).sum())
        history.append({"epoch": epoch, "train_loss": loss_sum / n, "samples_per_s": n / train_s,
                        "train_seconds": train_s, "epoch_seconds": time.perf_counter() - t0,
                        "val_accuracy": correct / max(yva.shape[0], 1), "end_monotonic": time.monotonic()})
        if on_epoch is not None:
            on_epoch()
    return {"history": history, "wall_s": time.perf_counter() - t_start}


def ours_train(spec, data: dict, storage: str, trainer: str, on_event=None) -> dict:
    """dlmine_ray's training on the encoded train/valid splits, as pipelines.fit.fit_stages calls
    it: ``trainer`` "ray_train" (fit_with_ray_train: a TorchTrainer) or "task" (fit_in_task: the
    same loop in one Ray task, which the pipeline picks for small single-worker jobs)."""
    import ray

    from dlmine_ray.runtime.progress import BoardWatcher, make_board
    from dlmine_ray.train import trainer as tr

    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    train_sets = {k: data["splits"][k] for k in ("train", "valid") if k in data["splits"]}
    board = make_board()
    keep_in = os.path.join(storage, "best")
    start = time.monotonic()
    t0 = time.perf_counter()
    events: list[tuple[float, dict]] = []

    def sink(ev: dict) -> None:
        # stamp with time.monotonic(): the loop's own timestamps are relative to its start
        events.append((time.monotonic(), ev))
        if on_event is not None:
            on_event()

    with BoardWatcher(board, sink):
        if trainer == "ray_train":
            outcome = tr.fit_with_ray_train(spec, train_sets, data["layout"], storage, board, cluster_cpus, keep_in)
        else:
            outcome = tr.fit_in_task(spec, train_sets, data["layout"], board, cluster_cpus, keep_in)
    wall = time.perf_counter() - t0
    ray.kill(board.actor)
    return {"outcome": outcome, "wall_s": wall, "events": events, "start": start}


def product_trainer(spec, train_bytes: int) -> str:
    """The training path the pipeline picks for this job ("ray_train" or "task")."""
    from dlmine_ray.train import trainer as tr

    if not hasattr(tr, "use_ray_train"):
        return "ray_train"
    return "ray_train" if tr.use_ray_train(spec, train_bytes) else "task"


def bare_train_in_ray_task(xtr, ytr, xva, yva, n_classes, epochs, batch, lr, seed, threads) -> dict:
    """Diagnostic: the bare loop inside a plain Ray task holding ``threads`` CPUs (a Ray
    worker process, OMP_NUM_THREADS=1 env, torch.set_num_threads(threads)), no Ray Train."""
    import ray

    @ray.remote(num_cpus=threads)
    def run(xtr, ytr, xva, yva):
        return bare_train(xtr, ytr, xva, yva, n_classes, epochs, batch, lr, seed, threads)

    refs = [ray.put(t) for t in (xtr, ytr, xva, yva)]
    try:
        return ray.get(run.remote(*refs))
    finally:
        del refs


def bare_train_in_torchtrainer(xtr, ytr, xva, yva, n_classes, epochs, batch, lr, seed, threads, storage) -> dict:
    """Diagnostic: the bare loop as the train function of a TorchTrainer (1 worker, ``threads``
    CPUs, no datasets, no checkpoints): Ray Train's own cost, without dlmine_ray's loop or Ray
    Data's dataset shards."""
    import uuid

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from dlmine_ray.runtime.progress import make_board

    board = make_board()
    refs = [ray.put(t) for t in (xtr, ytr, xva, yva)]

    def fn(config):
        tensors = [ray.get(r) for r in config["refs"]]
        out = bare_train(*tensors, n_classes, epochs, batch, lr, seed, threads)
        ray.get(config["board"].put.remote(out))  # on the board before fit() returns
        ray.train.report({"done": 1})

    trainer = TorchTrainer(
        fn, train_loop_config={"refs": refs, "board": board},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(name=f"bench-bare-{uuid.uuid4().hex[:8]}", storage_path=storage),
    )
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    out = ray.get(board.drain.remote())[0]
    ray.kill(board.actor)
    out["fit_wall_s"] = wall
    return out


def our_loop_in_process(spec, data: dict, threads: int) -> dict:
    """Diagnostic: dlmine_ray's generic loop (run_loop) run right here, on the same materialized
    splits, with no Ray Train around it: separates the loop's own cost from Ray Train's."""
    from dlmine_ray.train.loop import LoopEnv, run_loop
    from dlmine_ray.train.trainer import loop_config

    history: list[dict] = []

    class LocalEnv(LoopEnv):
        def shard(self, name):
            return data["splits"].get(name)

        def report(self, metrics, checkpoint_dir):
            history.append(dict(metrics))

    t0 = time.perf_counter()
    run_loop(loop_config(spec, data["layout"], None, None, threads), LocalEnv())
    return {"history": history, "wall_s": time.perf_counter() - t0}


# -- (c) inference ----------------------------------------------------------------------------

def bench_infer(folder: str, model_dir: str, threads: int, windows: dict, batch: int = 8192,
                test=None) -> dict:
    """score_dataset over Ray Data vs a bare forward pass (same weights, same rows); with ``test``
    (the encoded test split in Ray's object store), also the run's own scoring of it
    (``score_encoded``, consumed as pipelines/tabular.py consumes it) vs a bare forward pass over
    the same encoded rows in memory."""
    import pyarrow.parquet as pq

    from dlmine_ray.data.read import read_dataset
    from dlmine_ray.infer import LoadedModel, score_dataset

    lm = LoadedModel(model_dir)
    model = lm.model.eval()
    table = pq.read_table(folder)
    x_all = torch.from_numpy(lm.prep.transform_features(table.to_pandas()))  # untimed
    n = x_all.shape[0]
    del table

    bare_forward_s = _bare_forward(model, x_all, batch, threads, windows, "infer: bare forward")
    del x_all

    # Bare end-to-end: the same work score_dataset does, without Ray: read the files, scale
    # with the fitted statistics, forward, softmax, class.
    cols = [c for c, _, _ in lm.prep.numeric_]
    mean = np.array([m for _, m, _ in lm.prep.numeric_], dtype=np.float32)
    std = np.array([s for _, _, s in lm.prep.numeric_], dtype=np.float32)
    w0 = time.monotonic()
    t0 = time.perf_counter()
    table = pq.read_table(folder, columns=[ID, TARGET] + cols)
    x = (np.column_stack([table.column(c).to_numpy() for c in cols]).astype(np.float32, copy=False) - mean) / std
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    preds = []
    with torch.inference_mode():
        for i in range(0, n, batch):
            p = torch.softmax(model(x[i:i + batch]), dim=1)
            preds.append(p.argmax(1))
    torch.cat(preds)
    bare_e2e_s = time.perf_counter() - t0
    windows["infer: bare read+scale+forward"] = (w0, time.monotonic())
    del x, table, preds

    w0 = time.monotonic()
    t0 = time.perf_counter()
    scored = score_dataset(read_dataset(folder), model_dir, keep=(ID, TARGET)).materialize()
    ours_s = time.perf_counter() - t0
    windows["infer: ours score_dataset"] = (w0, time.monotonic())
    rows = scored.count()
    del scored
    if rows != n:
        raise RuntimeError(f"score_dataset returned {rows} rows for {n} input rows")
    # in this process, as `dlmine predict` scores local input of at most 256 MiB and as
    # load_model(path).predict(df) does: read_table_here, then the saved preprocessing and forward
    from dlmine_ray.data.read import read_table_here

    w0 = time.monotonic()
    t0 = time.perf_counter()
    here = LoadedModel(model_dir, threads=threads).predict(read_table_here(folder).to_pandas())
    here_s = time.perf_counter() - t0
    windows["infer: ours in this process"] = (w0, time.monotonic())
    if len(here) != n:
        raise RuntimeError(f"load_model().predict returned {len(here)} rows for {n} input rows")
    out = {"rows": n, "ours_s": ours_s, "bare_forward_s": bare_forward_s, "bare_e2e_s": bare_e2e_s,
           "ours_here_s": here_s}
    if test is not None:
        out.update(_bench_infer_encoded(test, model, model_dir, threads, windows, batch))
    return out


def _bare_forward(model, x: torch.Tensor, batch: int, threads: int, windows: dict, window: str) -> float:
    """Seconds of a bare forward pass over the in-memory rows ``x`` in batches (after a warm-up)."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        model(x[:batch])  # warm-up
        w0 = time.monotonic()
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], batch):
            model(x[i:i + batch])
        seconds = time.perf_counter() - t0
    windows[window] = (w0, time.monotonic())
    return seconds


def _bench_infer_encoded(test, model, model_dir: str, threads: int, windows: dict, batch: int) -> dict:
    """A run's scoring of its encoded test split (no re-read: the rows encoded once, in Ray's object
    store) against a bare forward pass over the same rows held in memory as one tensor."""
    from dlmine_ray.infer import score_encoded, score_here
    from dlmine_ray.spec import DRIVER_MAX_MB

    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(
        [b["features"] for b in test.iter_batches(batch_format="numpy", batch_size=None)]), dtype=np.float32))
    n = x.shape[0]
    bare_s = _bare_forward(model, x, batch, threads, windows, "infer: bare forward, test split")
    del x
    out = {"test_rows": n, "test_bare_forward_s": bare_s, "test_bytes": int(test.size_bytes()),
           "test_here_by_default": int(test.size_bytes()) <= DRIVER_MAX_MB * 2**20}
    ways = {  # as the pipeline consumes them (pipelines/tabular.py): numpy batches of 65,536 rows
        "here": lambda: score_here(test, model_dir, keep=("target",), threads=threads),
        "ray": lambda: score_encoded(test.select_columns(["features", "target"]), model_dir,
                                     keep=("target",)).iter_batches(batch_format="numpy", batch_size=65536)}
    for way, batches in ways.items():
        w0 = time.monotonic()
        t0 = time.perf_counter()
        rows = sum(len(b["target"]) for b in batches())
        out[f"test_{way}_s"] = time.perf_counter() - t0
        windows[f"infer: ours test split, {way}"] = (w0, time.monotonic())
        if rows != n:
            raise RuntimeError(f"scoring the test split ({way}) returned {rows} rows for {n}")
    return out


# -- the run ----------------------------------------------------------------------------------

def make_spec(folder: str, args) -> dict:
    return {
        "name": "bench", "task": "classify",
        "data": {"path": folder, "target": TARGET, "id": ID},
        "model": {"kind": "mlp", "hidden": [256, 256], "dropout": 0.0, "batch_norm": False},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "weight_decay": 0.0,
                  "early_stopping": 0, "seed": args.seed},
        "scaling": {"num_workers": 1},
        "compare_baselines": False,
    }


def _steady(history: list[dict]) -> Optional[float]:
    vals = [h["samples_per_s"] for h in history if h["epoch"] >= 2]
    return statistics.mean(vals) if vals else None


def run(args) -> dict:
    import ray

    from dlmine_ray.data.synthetic import make_data
    from dlmine_ray.infer import save_model_dir
    from dlmine_ray.runtime.session import ray_session
    from dlmine_ray.spec import spec_from_dict

    work = Path(tempfile.mkdtemp(prefix="dlmine_bench_", dir=args.tmp))
    res: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "torch": torch.__version__, "ray": None},
    }
    if args.wait_quiet:
        res["busy_at_start"] = wait_quiet(args.wait_quiet)
    sampler = TreeSampler().start() if not args.no_sampler else None
    windows: dict[str, tuple[float, float]] = {}
    current: list = [None, 0.0]

    def phase(name: Optional[str]) -> None:
        now = time.monotonic()
        if current[0]:
            windows[current[0]] = (current[1], now)
        current[0], current[1] = name, now
        if sampler:
            sampler.phase(name)
        if name:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)

    try:
        folder = str(work / "data")
        phase("make data")
        t0 = time.perf_counter()
        make_data("classification", args.rows, args.features, args.shards, folder, seed=args.seed)
        res["make_data_s"] = time.perf_counter() - t0
        spec = spec_from_dict(make_spec(folder, args))

        with ray_session(num_cpus=args.cpus) as cluster_cpus:
            res["machine"]["ray"] = ray.__version__
            res["cluster_cpus"] = cluster_cpus
            res["env"] = {k: v for k, v in os.environ.items() if k.startswith(("RAY_", "OMP_", "MKL_"))}
            threads = args.cpus

            # (b) data
            phase("data: bare pyarrow + numpy")
            bare_d = bench_data_bare(folder, [f"x{j}" for j in range(args.features)])
            del bare_d["x"], bare_d["y"]
            phase("data: ours read+stats, encode+materialize")
            ours_d = bench_data_ours(folder, spec)
            res["data"] = {"bare": bare_d, "ours": {k: v for k, v in ours_d.items()
                                                    if k not in ("splits", "prep", "layout", "features")}}
            phase("data: ours in the driver (small-input path)")
            here_d = bench_data_ours(folder, spec, driver=True)
            res["data"]["ours_driver"] = {k: v for k, v in here_d.items()
                                          if k not in ("splits", "prep", "layout", "features")}
            del here_d

            # (a) training
            phase("train: stacking the encoded splits for the bare loop")
            xtr, ytr = stack_split(ours_d["splits"]["train"])
            xva, yva = stack_split(ours_d["splits"]["valid"])
            n_classes = len(ours_d["layout"]["info"]["classes"])
            targs = (xtr, ytr, xva, yva, n_classes, args.epochs, args.batch_size, 1e-3, args.seed, threads)
            tick = sampler.sample if sampler else None
            phase("train: bare torch #1")
            bare1 = bare_train(*targs, on_epoch=tick)
            bare_task = None
            if args.diagnostics:
                phase("train: bare torch in a Ray task")
                bare_task = bare_train_in_ray_task(*targs)
            bare_tt = None
            if args.diagnostics:
                phase("train: bare torch in a TorchTrainer")
                bare_tt = bare_train_in_torchtrainer(*targs, str(work / "storage-bare"))
            our_loop = None
            if args.diagnostics:
                phase("train: our loop in this process")
                our_loop = our_loop_in_process(spec, ours_d, threads)
            product = product_trainer(spec, ours_d["train_bytes"])
            paths = ["ray_train", "task"] if args.trainer == "both" else \
                [product if args.trainer == "auto" else args.trainer]
            ours_runs = {}
            for path in paths:
                phase(f"train: ours {TRAINER_LABEL[path]}")
                ours_runs[path] = ours_train(spec, ours_d, str(work / f"storage-{path}"), path, on_event=tick)
            phase("train: bare torch #2")
            bare2 = bare_train(*targs, on_epoch=tick)
            phase("saving the model folder")
            outcome = ours_runs[product if product in ours_runs else paths[0]]["outcome"]
            model_dir = str(work / "model")
            state = torch.load(outcome.state_path, map_location="cpu", weights_only=True)
            save_model_dir(model_dir, state, ours_d["prep"], spec.task, spec.model.model_dump(),
                           {"job": spec.name, "best_epoch": outcome.best.get("epoch")}, info=ours_d["layout"]["info"])
            del xtr, ytr, xva, yva, targs
            test_split = ours_d["splits"]["test"]  # scored as a run scores it, in (c)
            ours_d["splits"].clear()
            res["train"] = {
                "rows_train": int(ours_d["rows_split"][0]), "rows_valid": int(ours_d["rows_split"][1]),
                "train_bytes": ours_d["train_bytes"], "product_trainer": product,
                "bare_1": bare1, "bare_2": bare2, "bare_in_ray_task": bare_task,
                "bare_in_torchtrainer": bare_tt, "our_loop_in_process": our_loop,
            }
            for k, b in (("bare #1", bare1), ("bare #2", bare2)):
                if len(b["history"]) >= 2:  # from the end of epoch 1 to the end of the last epoch
                    windows[f"train: {k} steady epochs (2..E)"] = (b["history"][0]["end_monotonic"],
                                                                  b["history"][-1]["end_monotonic"])
            for path, run in ours_runs.items():
                ev, hist = run["events"], run["outcome"].history
                if len(ev) >= 2:  # epoch events come after each epoch's validation, as for bare
                    windows[f"train: ours {TRAINER_LABEL[path]} steady epochs (2..E)"] = (ev[0][0], ev[-1][0])
                offsets = [t - run["start"] for t, _ in ev]
                phases = {}
                if ev:  # where the fit's wall time goes: before the loop's first line, in it, after it
                    loop_start = offsets[0] - hist[0]["elapsed_seconds"]
                    phases = {"startup_s": loop_start, "loop_s": hist[-1]["elapsed_seconds"],
                              "teardown_s": run["wall_s"] - loop_start - hist[-1]["elapsed_seconds"]}
                res["train"]["ours" if path == "ray_train" else "ours_task"] = {
                    "history": hist, "fit_wall_s": run["wall_s"], "fit_phases": phases,
                    "epoch_event_offsets_s": [round(o, 3) for o in offsets]}

            # (c) inference
            phase("inference")
            res["infer"] = bench_infer(folder, model_dir, threads, windows, test=test_split)
            del test_split
            phase(None)
    finally:
        phase(None)
        if sampler:
            sampler.stop()
            res["peak_rss_gib"] = round(sampler.peak_rss / 2**30, 2)
            res["peak_rss_gib_by_phase"] = {k: round(v / 2**30, 2) for k, v in sampler.phase_peaks.items()}
            res["cpu_by_window"] = {k: sampler.cpu_between(a, b) for k, (a, b) in windows.items()}
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            res["work_dir"] = str(work)
    res["table"] = summarize(res)
    return res


def summarize(res: dict) -> list[dict]:
    """Rows of (measure, ours, bare, ratio, unit)."""
    rows: list[dict] = []

    def add(measure, ours, bare, unit):
        rows.append({"measure": measure, "ours": ours, "bare": bare, "ratio": _ratio(ours, bare), "unit": unit})

    t = res["train"]
    b1, b2 = t["bare_1"]["history"], t["bare_2"]["history"]
    n_tr = t["rows_train"]
    # The bare loop runs before and after ours; the better of the two is used. Other load on a
    # shared machine only ever slows a run down, so this is the conservative choice for the ratio.
    steady_bare = [v for v in (_steady(b1), _steady(b2)) if v is not None]
    bare_wall = min(t["bare_1"]["wall_s"], t["bare_2"]["wall_s"])
    product = t.get("product_trainer", "ray_train")
    for key, path in (("ours", "ray_train"), ("ours_task", "task")):
        if not t.get(key):
            continue
        oh = t[key]["history"]
        tag = f" [{TRAINER_LABEL[path]}{'*' if path == product else ''}]"
        add("train samples/s, steady (epoch 2+)" + tag, _steady(oh), max(steady_bare) if steady_bare else None,
            "samples/s")
        add("train samples/s, epoch 1" + tag, oh[0]["samples_per_s"],
            max(b1[0]["samples_per_s"], b2[0]["samples_per_s"]), "samples/s")
        add("train whole fit wall (s)" + tag, t[key]["fit_wall_s"], bare_wall, "s")
        add("train fit samples/s (epochs*rows/wall)" + tag, len(oh) * n_tr / t[key]["fit_wall_s"],
            len(b1) * n_tr / bare_wall, "samples/s")
    if t.get("bare_in_ray_task") and steady_bare:
        add("  diag: bare loop in a Ray task (steady)", _steady(t["bare_in_ray_task"]["history"]), max(steady_bare),
            "samples/s")
    if t.get("bare_in_torchtrainer") and steady_bare:
        add("  diag: bare loop in a TorchTrainer (steady)", _steady(t["bare_in_torchtrainer"]["history"]),
            max(steady_bare), "samples/s")
    if t.get("our_loop_in_process") and steady_bare:
        add("  diag: our loop, no Ray Train (steady)", _steady(t["our_loop_in_process"]["history"]), max(steady_bare),
            "samples/s")
    d = res["data"]
    n = d["ours"]["rows"]
    add("data rows/s (read+prep, total)", n / d["ours"]["total_s"], n / d["bare"]["total_s"], "rows/s")
    add("  read + stats pass | read_table", n / d["ours"]["read_profile_s"], n / d["bare"]["read_s"], "rows/s")
    add("  encode+materialize | np scaling", n / d["ours"]["encode_materialize_s"], n / d["bare"]["scale_s"],
        "rows/s")
    h = d.get("ours_driver")
    if h:
        add("data rows/s, in the driver (small input)", n / h["total_s"], n / d["bare"]["total_s"], "rows/s")
        add("  read + stats pass | read_table", n / h["read_profile_s"], n / d["bare"]["read_s"], "rows/s")
        add("  encode + splits | np scaling", n / h["encode_materialize_s"], n / d["bare"]["scale_s"], "rows/s")
    i = res["infer"]
    add("inference rows/s (vs bare forward)", i["rows"] / i["ours_s"], i["rows"] / i["bare_forward_s"], "rows/s")
    if i.get("ours_here_s"):
        add("inference in process (vs bare read+fwd)", i["rows"] / i["ours_here_s"], i["rows"] / i["bare_e2e_s"],
            "rows/s")
    add("inference rows/s (vs bare read+fwd)", i["rows"] / i["ours_s"], i["rows"] / i["bare_e2e_s"], "rows/s")
    if "test_rows" in i:  # * = what a run does with a split of this size (scaling.driver_max_mb)
        for way, label in (("here", "in the driver"), ("ray", "Ray Data")):
            star = "*" if (way == "here") == i["test_here_by_default"] else ""
            add(f"inference, a run's encoded test split [{label}{star}] (vs bare fwd)",
                i["test_rows"] / i[f"test_{way}_s"], i["test_rows"] / i["test_bare_forward_s"], "rows/s")
    return rows


def _fmt(v, unit) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:,.2f}"
    return f"{v:,.0f}"


def print_report(res: dict) -> None:
    c = res["config"]
    t = res["train"]
    print()
    print(f"dlmine_ray pipeline vs bare libraries: {c['rows']:,} rows x {c['features']} features, "
          f"{c['shards']} Parquet shards, {c['epochs']} epochs, batch {c['batch_size']}, "
          f"ray.init(num_cpus={c['cpus']}), torch threads {c['cpus']}; "
          f"machine: {res['machine']['cpus']} cores, {res['machine']['memory_gib']} GiB")
    print(f"train split {t['rows_train']:,} rows, valid {t['rows_valid']:,} rows; MLP 256-256, AdamW lr 1e-3")
    print()
    w = max(len(r["measure"]) for r in res["table"]) + 2
    print(f"{'measure':<{w}}{'ours':>12}{'bare':>12}{'ratio (ours/bare)':>20}")
    for r in res["table"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['measure']:<{w}}{_fmt(r['ours'], r['unit']):>12}{_fmt(r['bare'], r['unit']):>12}{ratio:>20}")
    print("(throughput rows: higher ratio is better, 1.00 = parity; wall-time rows: lower is better;")
    print(" bare training = the better of two runs, one before and one after ours;")
    print(f" * = the training path run_job picks for this size: encoded train split "
          f"{t.get('train_bytes', 0) / 2**20:,.0f} MiB)")
    print()
    print("per epoch samples/s:")
    for k in ("ours", "ours_task", "bare_1", "bare_2", "bare_in_ray_task", "bare_in_torchtrainer",
              "our_loop_in_process"):
        if t.get(k):
            label = {"ours": "ours (TorchTrainer)", "ours_task": "ours (Ray task)"}.get(k, k)
            print(f"  {label:<22}" + ", ".join(f"{h['samples_per_s']:,.0f}" for h in t[k]["history"]))
    for k in ("ours", "ours_task"):
        ph = (t.get(k) or {}).get("fit_phases")
        if ph:
            label = {"ours": "TorchTrainer", "ours_task": "Ray task"}[k]
            print(f"ours [{label}] fit wall {t[k]['fit_wall_s']:.2f} s = before the loop's first epoch "
                  f"~{ph['startup_s']:.1f} s + loop {ph['loop_s']:.1f} s (epochs, validation, checkpoints) "
                  f"+ after it ~{max(ph['teardown_s'], 0.0):.1f} s")
    d = res["data"]
    per_split = ", ".join(f"{k} {v:.2f} s" for k, v in d["ours"].get("encode_per_split_s", {}).items())
    print(f"data ours: read+stats {d['ours']['read_profile_s']:.2f} s, encode+materialize "
          f"{d['ours']['encode_materialize_s']:.2f} s{f' ({per_split})' if per_split else ''}; "
          f"bare: read_table {d['bare']['read_s']:.2f} s, scaling {d['bare']['scale_s']:.2f} s")
    i = res["infer"]
    print(f"inference ours: {i['ours_s']:.2f} s; bare forward {i['bare_forward_s']:.2f} s; "
          f"bare read+scale+forward {i['bare_e2e_s']:.2f} s")
    cpu = res.get("cpu_by_window") or {}
    if cpu:
        print()
        print("cores used per window: this process tree | other processes on the machine (should be ~0)")
        for k, v in cpu.items():
            if not v:
                continue
            procs = ", ".join(f"{n} {c:.2f}" for n, c in list(v["cores_by_process"].items())[:4])
            print(f"  {k:<44}{v['window_s']:>7.1f} s  tree {v['tree_cores']:.2f} | other {v['foreign_cores']:.2f}"
                  f"   [{procs}]")
        busy = [k for k, v in cpu.items() if v and v["foreign_cores"] > 0.2 and v["window_s"] > 0.5]
        if busy:
            print("WARNING: other processes used > 0.2 cores during: " + "; ".join(busy)
                  + " -- the ratios are not trustworthy; rerun on a quiet machine (--wait-quiet 600)")
    if "peak_rss_gib" in res:
        print(f"peak RSS of the process tree (summed, shared pages counted per process): {res['peak_rss_gib']} GiB")


#: --smoke: tiny sizes, one CPU, the training path run_job picks (a Ray task)
SMOKE = {"rows": 2000, "features": 4, "epochs": 2, "shards": 2, "batch_size": 256, "cpus": 1, "trainer": "auto"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--cpus", type=int, default=2, help="ray.init(num_cpus=...) and bare torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all results as JSON to this path")
    p.add_argument("--tmp", default=None, help="folder for the temporary data and model (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data and model folder")
    p.add_argument("--trainer", choices=["both", "auto", "ray_train", "task"], default="both",
                   help="which of dlmine_ray's training paths to measure (auto: the one run_job picks)")
    p.add_argument("--diagnostics", action="store_true",
                   help="also run the bare loop in a Ray task and in a TorchTrainer, and dlmine_ray's loop "
                        "in this process without Ray Train (where does the training gap come from?)")
    p.add_argument("--no-sampler", action="store_true", help="do not sample RSS/CPU of the process tree")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for the machine's CPU to be < 15%% busy")
    p.add_argument("--from-json", metavar="PATH", help="only print the report of an earlier run's --json file")
    p.add_argument("--smoke", action="store_true",
                   help="a seconds-long run at tiny sizes that only checks the script works (CI); "
                        f"defaults become {SMOKE}, explicit options still win; its figures mean nothing")
    if p.parse_known_args(argv)[0].smoke:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        res["table"] = summarize(res)
        print_report(res)
        return 0
    if args.epochs < 1 or args.rows < 1000:
        p.error("--epochs must be >= 1 and --rows >= 1000")
    t0 = time.perf_counter()
    res = run(args)
    res["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    print_report(res)
    print(f"benchmark wall time {res['bench_wall_s']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=_json_default))
        print(f"results written to {args.json}")
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
