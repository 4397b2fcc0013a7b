"""Fixed cost of small work, from command to results, side by side in one run.

  python benchmarks/bench_fixed_cost.py [--repeats 2] [--cases task ray_train tune1 tune3 predict predict_ray address]
  python benchmarks/bench_fixed_cost.py --smoke   # one run of the first case and of predict without Ray (CI)

Measures, each as a fresh `dlmine run` process (so Ray start-up is included, as a user sees it):
  0. a tiny job (300 rows, 1 epoch) as a user writes it: small input runs in the driver process
     without Ray (`scaling.driver_max_mb`, default 256 MiB),
  1. the same job through a fresh local Ray, trained in one Ray task (`scaling.trainer: task`),
  2. the same job with a TorchTrainer (`scaling.trainer: ray_train`),
  3. the same job tuned with 1 trial, and with 3 trials (the difference / 2 is the cost of one
     more trial),
  4. `dlmine predict` of 40 rows with the tiny job's model: in its own process without Ray (the
     default for small local data), and with `--ray` (Ray Data; Ray start-up included),
  5. the tiny job through an already running local cluster (`ray start --head`, started once by
     this script and stopped at the end; `--address`, `scaling.trainer: task`): the cost a warm
     Ray leaves; and the job as a user writes it with `--address`: the cluster's warm dlmine
     process on this node runs it (app/warm.py; the first command starts that process and is
     reported on its own), and with `--cold` the command runs it itself; and `dlmine predict`
     of the 40 rows with `--address` (scored in the command, the cluster not joined) and with
     `--address --ray` (Ray Data on the cluster),
and prints the per-stage times each run reports, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def _tiny_table(path: Path, rows: int = 300) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    df = pd.DataFrame({"row_id": np.arange(rows), **{f"x{i}": x[:, i] for i in range(4)}})
    df["label"] = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    df.to_parquet(path)


def _run(job: dict, workdir: Path, name: str, *extra: str) -> dict:
    jf = workdir / f"{name}.yaml"
    jf.write_text(yaml.safe_dump(job))
    out = workdir / f"out-{name}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "run", str(jf), "--output", str(out),
                           "--overwrite", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    stages = {}
    for line in proc.stderr.splitlines():
        line = line.strip()
        if line.endswith("s") and " took " in line:
            stage, secs = line.rsplit(" took ", 1)
            stages[stage] = float(secs[:-1])
    m = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, "train_seconds": m["train_seconds"], "stages": stages}


def _predict(model: Path, data: Path, workdir: Path, name: str, *extra: str) -> dict:
    out = workdir / f"pred-{name}.parquet"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "predict", "--model", str(model), "--data",
                           str(data), "--output", str(out), "--overwrite", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    return {"wall": wall, "train_seconds": 0.0, "stages": {}}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_head(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A local one-node cluster on loopback (`ray start --head --block`, its own ports and temp
    dir), as a user keeps one running between commands; returns the process and its address."""
    gcs = _free_port()
    ports = []
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port",
                 "--ray-client-server-port"):
        ports += [flag, str(_free_port())]
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    proc = subprocess.Popen(["ray", "start", "--head", "--block", "--port", str(gcs), "--num-cpus",
                             str(os.cpu_count() or 1), "--include-dashboard", "false", "--temp-dir", temp, *ports],
                            env=env, stdout=open(workdir / "head.log", "w"), stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{gcs}"
    probe = f"import ray; ray.init(address={address!r}); ray.shutdown()"
    for _ in range(120):
        if proc.poll() is not None:
            raise SystemExit("ray start --head exited: " + (workdir / "head.log").read_text()[-2000:])
        if subprocess.run([sys.executable, "-c", probe], capture_output=True,
                          env={**os.environ, "RAY_AUTH_MODE": "token"}).returncode == 0:
            return proc, address
        time.sleep(1)
    proc.terminate()
    raise SystemExit("ray start --head did not come up")


#: the cases, in the order they run (names for --cases)
CASES = ("driver", "task", "ray_train", "tune1", "tune3", "predict", "predict_ray", "address")
#: --smoke: one fresh process of the first case and of predict (~15 s; a TorchTrainer run adds ~35 s, tuning more)
SMOKE = {"repeats": 1, "cases": ["driver", "predict"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                    help="which cases to run (default all; the ratios need task+ray_train and tune1+tune3)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"a short run that only checks the script works (CI): defaults become {SMOKE}, "
                         "explicit options still win")
    if ap.parse_known_args()[0].smoke:
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _tiny_table(work / "tiny.parquet")
        base = {"name": "tiny", "task": "classify",
                "data": {"path": str(work / "tiny.parquet"), "target": "label", "id": "row_id"},
                "model": {"hidden": [16]}, "train": {"epochs": 1, "batch_size": 64}, "compare_baselines": False}
        space = {"train.lr": {"loguniform": [0.001, 0.01]}}
        cases = {
            "tiny job, in the driver": base,
            "tiny job, task trainer": {**base, "scaling": {"trainer": "task"}},
            "tiny job, TorchTrainer": {**base, "scaling": {"trainer": "ray_train"}},
            "tuned, 1 trial": {**base, "tune": {"num_samples": 1, "scheduler": "fifo", "space": space}},
            "tuned, 3 trials": {**base, "tune": {"num_samples": 3, "scheduler": "fifo", "space": space,
                                                 "max_concurrent": 1}},
        }
        cases = {name: job for key, (name, job) in zip(CASES, cases.items()) if key in args.cases}
        predicts = {name: extra for key, name, extra in (("predict", "predict 40 rows, no Ray", ()),
                                                          ("predict_ray", "predict 40 rows, --ray", ("--ray",)))
                    if key in args.cases}
        if "address" in args.cases:  # dlmine predict against the running cluster too
            predicts["predict 40 rows, --address"] = ("--address", None)
            predicts["predict 40 rows, --address --ray"] = ("--address", None, "--ray")
        if predicts:  # the tiny job's model, and 40 new rows
            _run({**base, "name": "model"}, work, "model")
            pd.read_parquet(work / "tiny.parquet").drop(columns="label").head(40).to_parquet(work / "new.parquet")
        head = _start_head(work) if "address" in args.cases else None
        warm = "tiny job, running cluster (--address)"
        warm_driver = "tiny job, --address (warm)"
        warm_first = "tiny job, --address, 1st"
        warm_cold = "tiny job, --address --cold"
        results = {k: [] for k in [*cases, *predicts, *([warm, warm_first, warm_driver, warm_cold] if head else [])]}
        try:
            if head:  # the first command starts the cluster's warm dlmine process on this node
                results[warm_first].append(_run(base, work, "warm_first", "--address", head[1]))
            for r in range(args.repeats):  # interleaved, so that drift hits every case alike
                for i, (name, job) in enumerate(cases.items()):
                    results[name].append(_run(job, work, f"c{i}"))
                if head:
                    results[warm].append(_run({**base, "scaling": {"trainer": "task"}}, work, "warm",
                                              "--address", head[1]))
                    results[warm_driver].append(_run(base, work, "warm_driver", "--address", head[1]))
                    results[warm_cold].append(_run(base, work, "warm_cold", "--address", head[1], "--cold"))
                for i, (name, extra) in enumerate(predicts.items()):
                    extra = tuple(head[1] if a is None else a for a in extra)  # the cluster's address
                    results[name].append(_predict(work / "out-model" / "model", work / "new.parquet", work, f"p{i}",
                                                  *extra))
        finally:
            if head:
                head[0].terminate()
                head[0].wait(timeout=60)
        print(f"\nfixed cost, median of {args.repeats} fresh processes (2-core machine):")
        print(f"{'case':28s} {'wall s':>8s} {'train/tune s':>13s}  stages")
        med = {}
        for name, rs in results.items():
            wall = statistics.median(r["wall"] for r in rs)
            train = statistics.median(r["train_seconds"] for r in rs)
            med[name] = (wall, train)
            st = rs[-1]["stages"]
            print(f"{name:28s} {wall:8.1f} {train:13.1f}  " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()))
        if "tiny job, task trainer" in med and "tiny job, TorchTrainer" in med:
            t_task, t_tt = med["tiny job, task trainer"][1], med["tiny job, TorchTrainer"][1]
            print(f"\ntraining time, task / TorchTrainer: {t_task / t_tt:.2f}  "
                  f"(whole command: {med['tiny job, task trainer'][0] / med['tiny job, TorchTrainer'][0]:.2f})")
        if "tiny job, in the driver" in med and "tiny job, task trainer" in med:
            here, ray_ = med["tiny job, in the driver"][0], med["tiny job, task trainer"][0]
            print(f"\ntiny job in the driver / through a fresh local Ray: {here:.1f} s / {ray_:.1f} s = "
                  f"{here / ray_:.2f}")
        if head and "tiny job, task trainer" in med:
            print(f"\ntiny job against a running cluster / with a fresh local Ray: {med[warm][0]:.1f} s / "
                  f"{med['tiny job, task trainer'][0]:.1f} s = {med[warm][0] / med['tiny job, task trainer'][0]:.2f}")
        if head:
            print(f"\ntiny job against a running cluster, in its warm process / in the command (--cold): "
                  f"{med[warm_driver][0]:.1f} s / {med[warm_cold][0]:.1f} s = {med[warm_driver][0] / med[warm_cold][0]:.2f} "
                  f"(the first command, which starts the warm process: {med[warm_first][0]:.1f} s)")
        if "predict 40 rows, no Ray" in med and "predict 40 rows, --ray" in med:
            here, ray_ = med["predict 40 rows, no Ray"][0], med["predict 40 rows, --ray"][0]
            print(f"\ndlmine predict of 40 rows, without Ray / through Ray Data: {here:.1f} s / {ray_:.1f} s "
                  f"= {here / ray_:.2f}")
        if "predict 40 rows, --address" in med:
            here, ray_ = med["predict 40 rows, --address"][0], med["predict 40 rows, --address --ray"][0]
            print(f"dlmine predict of 40 rows against a running cluster, in the command / through the cluster "
                  f"(--ray): {here:.1f} s / {ray_:.1f} s = {here / ray_:.2f}")
        if "tuned, 1 trial" in med and "tuned, 3 trials" in med:
            per_trial = (med["tuned, 3 trials"][1] - med["tuned, 1 trial"][1]) / 2
            print(f"one more tuning trial (1 epoch, run one at a time): {per_trial:.1f} s")


if __name__ == "__main__":
    main()
