#!/usr/bin/env python
"""Anomaly scoring throughput: dlmine_ray's ``detect`` model against scikit-learn's IsolationForest.

    python benchmarks/bench_detect_scoring.py [--rows 1000000] [--features 32] [--cpus 2]
                                              [--repeats 1] [--json PATH]

One synthetic dataset (``make_data("classification", rows, features, shards)``: ``row_id``,
``x0..x{F-1}`` standard-normal float32, ``label``; sharded Parquet in a temporary folder that is
removed at the end) and one Ray session (``ray_session(num_cpus=cpus)``). Untimed set-up: a
separate, smaller Parquet file (``--train-rows``, default 50k, other seed, same columns) trains a
``detect`` model with ``run_job`` (denoising autoencoder 64-32-8, 3 epochs, contamination 0.01,
``row_id`` as id, ``label`` ignored), and an ``IsolationForest()`` (sklearn defaults,
``n_jobs=cpus``, ``random_state=0``) is fitted on the raw ``x*`` columns of the same rows (raw:
IsolationForest splits on thresholds, so scaling changes nothing for it).

Then, on the SAME big-dataset rows, each measured ``--repeats`` times (best and median reported):

(a) ours end-to-end: ``score_dataset(read_dataset(folder), model_dir, keep=(row_id,))`` (what
    ``dlmine predict`` runs: Ray Data Parquet read, the saved preprocessing, model forward,
    score / flag / top-feature columns), consumed fully with ``iter_batches``.
(b) ours model only: ``LoadedModel(model_dir, threads=cpus).outputs(x)`` over the rows already
    encoded by the model's own preprocessing (``prep.transform_features``, untimed) as one
    in-memory float32 matrix, in chunks of ``--chunk`` rows.
(c) IsolationForest ``score_samples`` over the raw features as one in-memory float64 matrix;
    and "IF incl. read": ``pyarrow.parquet.read_table`` of the same shards into that numpy
    matrix (timed separately) plus the scoring: the bare end-to-end twin of (a).

How to read the ratios (rows/s over rows/s, higher is better for dlmine_ray, 1.00 = parity):
(a) / (IF incl. read) compares what a user waits for, file to scores, Ray Data's overhead
included; (b) / (c) compares the two models alone, both over an in-memory matrix with ``cpus``
threads. Repeat 1 of (a) also pays for Ray worker processes importing torch and loading the
model; with ``--repeats 3`` the best run is warm. A background sampler reports the cores used
by other processes during each measurement: on a shared machine a WARNING there means the
ratios are not trustworthy. See benchmarks/README.md.
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
import time
from pathlib import Path
from typing import Any

# Before Ray is imported anywhere (no usage stats; no progress bars).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

# The working copy, not whatever else may be installed; and this folder, for bench_pipeline.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_pipeline import TreeSampler, _json_default, psutil, wait_quiet  # noqa: E402

ID, LABEL = "row_id", "label"
MEASURES = ("ours_e2e", "ours_model", "if_read", "if_score")


def make_spec(train_folder: str, args) -> dict:
    """The detect job that trains the model (untimed)."""
    return {
        "name": "bench-detect", "task": "detect",
        "data": {"path": train_folder, "id": ID, "ignore": [LABEL]},
        "model": {"hidden": [64, 32], "latent": 8},
        "train": {"epochs": args.epochs, "batch_size": 512, "seed": args.seed},
        "detect": {"contamination": 0.01},
        "compare_baselines": False,
    }


def raw_matrix(folder: str, columns: list[str]) -> np.ndarray:
    """The raw feature columns of every shard in ``folder`` as one float64 numpy matrix, the
    dtype IsolationForest works in (it would convert float32 input itself)."""
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=columns)
    return np.column_stack([table.column(c).to_numpy() for c in columns]).astype(np.float64)


def time_ours_e2e(folder: str, model_dir: str) -> tuple[float, int]:
    """(seconds, rows) of score_dataset over a fresh Ray Data read, consumed fully."""
    from dlmine_ray.data.read import read_dataset
    from dlmine_ray.infer import score_dataset

    t0 = time.perf_counter()
    scored = score_dataset(read_dataset(folder), model_dir, keep=(ID,))
    rows = sum(b.num_rows for b in scored.iter_batches(batch_format="pyarrow", batch_size=None))
    return time.perf_counter() - t0, rows


def time_ours_model(lm, x: np.ndarray, chunk: int) -> float:
    """Seconds of LoadedModel.outputs over the encoded matrix ``x``, ``chunk`` rows at a time."""
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], chunk):
        lm.outputs(x[i:i + chunk])
    return time.perf_counter() - t0


def time_if_read(folder: str, features: list[str]) -> tuple[float, np.ndarray]:
    """(seconds, matrix) of reading the shards' raw features into numpy for IsolationForest."""
    t0 = time.perf_counter()
    x = raw_matrix(folder, features)
    return time.perf_counter() - t0, x


def time_if_score(iforest, x: np.ndarray) -> tuple[float, int]:
    """(seconds, scores returned) of IsolationForest.score_samples over ``x``."""
    t0 = time.perf_counter()
    scores = iforest.score_samples(x)
    return time.perf_counter() - t0, int(scores.shape[0])


def run(args) -> dict:
    import pyarrow.parquet as pq
    import ray
    import sklearn
    from sklearn.ensemble import IsolationForest

    from dlmine_ray.app.run import run_job
    from dlmine_ray.data.synthetic import make_data
    from dlmine_ray.infer import LoadedModel
    from dlmine_ray.runtime.session import ray_session

    work = Path(tempfile.mkdtemp(prefix="dlmine_bench_detect_", dir=args.tmp))
    res: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "tmp")},
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "torch": torch.__version__, "ray": ray.__version__, "sklearn": sklearn.__version__},
        "runs": {k: [] for k in MEASURES},
    }
    if args.wait_quiet:
        t0 = time.perf_counter()
        res["busy_at_start"] = wait_quiet(args.wait_quiet)
        res["waited_s"] = round(time.perf_counter() - t0, 1)
    sampler = TreeSampler().start()
    windows: dict[str, list[tuple[float, float]]] = {k: [] for k in MEASURES}
    features = [f"x{j}" for j in range(args.features)]

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    def timed(key: str, fn):
        sampler.sample()
        w0 = time.monotonic()
        out = fn()
        sampler.sample()
        windows[key].append((w0, time.monotonic()))
        return out

    try:
        folder, train_folder = str(work / "data"), str(work / "train")
        log(f"make data: {args.rows:,} rows x {args.features} ({args.shards} shards) + "
            f"{args.train_rows:,} training rows ...")
        t0 = time.perf_counter()
        make_data("classification", args.rows, args.features, args.shards, folder, seed=args.seed)
        make_data("classification", args.train_rows, args.features, 1, train_folder, seed=args.seed + 1)
        res["make_data_s"] = time.perf_counter() - t0

        with ray_session(None, False, args.cpus) as cluster_cpus:
            res["cluster_cpus"] = cluster_cpus
            cpus = args.cpus

            log("training the detect model with run_job (untimed) ...")
            t0 = time.perf_counter()
            result = run_job(make_spec(train_folder, args), str(work / "run"), overwrite=True, quiet=True)
            res["train_job_s"] = time.perf_counter() - t0
            model_dir = str(Path(result.output) / "model")
            res["train_metrics"] = {k: v for k, v in (result.metrics or {}).items()
                                    if isinstance(v, (int, float, str, bool))}

            log("fitting IsolationForest on the same training rows (untimed) ...")
            t0 = time.perf_counter()
            iforest = IsolationForest(n_jobs=cpus, random_state=0).fit(raw_matrix(train_folder, features))
            res["if_fit_s"] = time.perf_counter() - t0

            log("encoding the rows for (b) with the model's preprocessing (untimed) ...")
            lm = LoadedModel(model_dir, threads=cpus)
            x_enc = lm.prep.transform_features(pq.read_table(folder).to_pandas())
            n = x_enc.shape[0]
            lm.outputs(x_enc[:args.chunk])  # warm-up: first-call allocations
            res["rows"] = n
            res["encoded_features"] = int(x_enc.shape[1])

            for r in range(1, args.repeats + 1):
                log(f"repeat {r}/{args.repeats}: (a) ours score_dataset end-to-end ...")
                sec, rows = timed("ours_e2e", lambda: time_ours_e2e(folder, model_dir))
                if rows != n:
                    raise RuntimeError(f"score_dataset returned {rows:,} rows for {n:,} input rows")
                res["runs"]["ours_e2e"].append(sec)

                log(f"repeat {r}/{args.repeats}: (b) ours LoadedModel.outputs ...")
                res["runs"]["ours_model"].append(timed("ours_model", lambda: time_ours_model(lm, x_enc, args.chunk)))

                log(f"repeat {r}/{args.repeats}: (c) IsolationForest read + score_samples ...")
                read_s, x_raw = timed("if_read", lambda: time_if_read(folder, features))
                res["runs"]["if_read"].append(read_s)
                score_s, n_scores = timed("if_score", lambda: time_if_score(iforest, x_raw))
                res["runs"]["if_score"].append(score_s)
                if n_scores != n:
                    raise RuntimeError(f"score_samples returned {n_scores:,} scores for {n:,} rows")
                x_raw = None
    finally:
        sampler.stop()
        res["peak_rss_gib"] = round(sampler.peak_rss / 2**30, 2)
        res["cpu_by_window"] = {f"{k} #{i + 1}": sampler.cpu_between(a, b)
                                for k, ws in windows.items() for i, (a, b) in enumerate(ws)}
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            res["work_dir"] = str(work)
    res["summary"] = summarize(res)
    return res


def summarize(res: dict) -> dict:
    """Best / median seconds and rows/s per measure, and the two ratios (from the best runs,
    and from the medians)."""
    n = res["rows"]
    runs = dict(res["runs"])
    # "IF incl. read" pairs the read and the scoring of the same repeat
    runs["if_e2e"] = [a + b for a, b in zip(runs["if_read"], runs["if_score"])]
    out: dict[str, Any] = {}
    for k, secs in runs.items():
        if secs:
            best, med = min(secs), statistics.median(secs)
            out[k] = {"best_s": best, "median_s": med, "rows_per_s_best": n / best, "rows_per_s_median": n / med}
    for name, (ours, bare) in {"e2e_ratio": ("ours_e2e", "if_e2e"), "model_ratio": ("ours_model", "if_score")}.items():
        out[name] = {"best": out[ours]["rows_per_s_best"] / out[bare]["rows_per_s_best"],
                     "median": out[ours]["rows_per_s_median"] / out[bare]["rows_per_s_median"]}
    return out


LABELS = {
    "ours_e2e": "(a) ours end-to-end: score_dataset (read+prep+fwd)",
    "ours_model": "(b) ours model only: LoadedModel.outputs",
    "if_e2e": "(c) IsolationForest incl. read",
    "if_read": "      pyarrow read_table -> numpy",
    "if_score": "(c) IsolationForest score_samples",
}


def print_report(res: dict) -> None:
    c, s = res["config"], res["summary"]
    print()
    print(f"anomaly scoring: dlmine_ray detect (autoencoder 64-32-8, {res['encoded_features']} encoded features) "
          f"vs sklearn IsolationForest (defaults, n_jobs={c['cpus']}); {res['rows']:,} rows x {c['features']} "
          f"features, {c['shards']} Parquet shards; ray_session(num_cpus={c['cpus']}); "
          f"{c['repeats']} repeat(s); machine: {res['machine']['cpus']} cores")
    print(f"both models trained on the same {c['train_rows']:,} separate rows (untimed: run_job "
          f"{res['train_job_s']:.1f} s, IsolationForest fit {res['if_fit_s']:.2f} s)")
    print()
    w = max(len(v) for v in LABELS.values()) + 2
    print(f"{'measure':<{w}}{'best s':>9}{'rows/s best':>14}{'rows/s median':>15}")
    for k in ("ours_e2e", "ours_model", "if_e2e", "if_read", "if_score"):
        v = s[k]
        print(f"{LABELS[k]:<{w}}{v['best_s']:>9.2f}{v['rows_per_s_best']:>14,.0f}{v['rows_per_s_median']:>15,.0f}")
    print()
    print("ratios, rows/s ours / rows/s IsolationForest (higher is better for dlmine_ray, 1.00 = parity):")
    print(f"  (a) / (c incl. read)  end-to-end, file to scores   best {s['e2e_ratio']['best']:.2f}"
          f"   median {s['e2e_ratio']['median']:.2f}")
    print(f"  (b) / (c)             model only, in-memory matrix best {s['model_ratio']['best']:.2f}"
          f"   median {s['model_ratio']['median']:.2f}")
    cpu = res.get("cpu_by_window") or {}
    if cpu:
        print()
        print("cores used per window: this process tree | other processes on the machine (should be ~0)")
        for k, v in cpu.items():
            if v:
                procs = ", ".join(f"{p} {x:.2f}" for p, x in list(v["cores_by_process"].items())[:3])
                print(f"  {k:<16}{v['window_s']:>7.1f} s  tree {v['tree_cores']:.2f} | other "
                      f"{v['foreign_cores']:.2f}   [{procs}]")
        busy = [k for k, v in cpu.items() if v and v["foreign_cores"] > 0.2 and v["window_s"] > 0.5]
        if busy:
            print("WARNING: other processes used > 0.2 cores during: " + "; ".join(busy)
                  + " -- the ratios are not trustworthy; rerun on a quiet machine (--wait-quiet 600)")
    print(f"peak RSS of the process tree (summed, shared pages counted per process): {res['peak_rss_gib']} GiB")


#: --smoke: tiny sizes and one CPU
SMOKE = {"rows": 2000, "train_rows": 1000, "features": 4, "epochs": 1, "shards": 2, "cpus": 1, "chunk": 512}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows scored (default 1,000,000)")
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--cpus", type=int, default=2, help="ray_session(num_cpus=...), torch threads, IF n_jobs")
    p.add_argument("--repeats", type=int, default=1, help="measure each side this many times; best and median")
    p.add_argument("--train-rows", type=int, default=50_000, help="rows of the separate training file")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the detect model")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--chunk", type=int, default=65536, help="rows per LoadedModel.outputs call in (b)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all results as JSON to this path")
    p.add_argument("--tmp", default=None, help="folder for the temporary data and model (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data and model folder")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for the machine's CPU to be < 15%% busy")
    p.add_argument("--smoke", action="store_true",
                   help="a seconds-long run at tiny sizes that only checks the script works (CI); "
                        f"defaults become {SMOKE}, explicit options still win; its figures mean nothing")
    if p.parse_known_args(argv)[0].smoke:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if args.rows < 1000 or args.train_rows < 1000 or args.repeats < 1 or args.chunk < 1:
        p.error("--rows and --train-rows must be >= 1000, --repeats and --chunk >= 1")
    t0 = time.perf_counter()
    res = run(args)
    res["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    print_report(res)
    waited = f" (of which waiting for a quiet machine {res['waited_s']} s)" if res.get("waited_s") else ""
    print(f"benchmark wall time {res['bench_wall_s']} s{waited}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=_json_default))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
