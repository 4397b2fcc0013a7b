"""A real local cluster (`ray start --head` on loopback), a job submitted through the Ray Jobs API
with `dlmine submit --wait`, its outputs checked, and the cluster stopped."""

import json
import os
import shutil
import signal
import tempfile
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spare_ports() -> list[str]:
    """A free port for every Ray port flag with a fixed default: the agents of another Ray on this
    machine (the test session's own) already hold the defaults, and the job agent would never come up."""
    out = []
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port",
                 "--ray-client-server-port"):
        out += [flag, str(_free_port())]
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Stop a `ray start --block` process (it stops the Ray it started)."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def head(tmp_path):
    """A one-node Ray cluster of its own (its own ports and temp dir), stopped at the end by the
    process that started it, so that no other Ray on the machine is touched."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    # token authentication on both sides: the head enables it when ~/.ray/auth_token exists,
    # and the Jobs client must then send the token (see jobs/README.md)
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    gcs, dash = _free_port(), _free_port()
    extra_ports = _spare_ports()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    log = open(os.path.join(temp, "head.log"), "w")
    proc = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true", "--temp-dir", str(temp), "--object-store-memory", str(300 * 2**20),
         *extra_ports],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 120
    probe = f"from ray.job_submission import JobSubmissionClient as C; C({address!r}).list_jobs()"
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("ray start --head exited: " + open(log.name).read()[-2000:])
        # a client process of its own: Ray reads RAY_AUTH_MODE once per process
        r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            break
        last = (r.stderr.strip().splitlines() or [""])[-1]
        time.sleep(1)
    else:
        proc.terminate()
        pytest.fail(f"the cluster's Jobs API did not come up: {last}")
    yield address, env
    _stop(proc)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def test_submit_wait_runs_the_job_on_the_cluster(tmp_path, head):
    address, env = head
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "submitted", "task": "regress",
        "data": {"path": "builtin:diabetes", "target": "target", "id": "row_id"},
        "model": {"hidden": [16]}, "train": {"epochs": 2, "batch_size": 64}, "compare_baselines": False}))
    out = tmp_path / "cluster-run"
    proc = subprocess.run(
        [sys.executable, "-m", "dlmine_ray.cli", "submit", str(job), "--address", address,
         "--output", str(out), "--wait"],
        env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "SUCCEEDED" in log and "epoch 2/2" in log  # the job's own progress came back
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "regress" and m["rows_test"] > 0 and "rmse" in m
    assert (out / "model" / "model.pt").is_file() and (out / "report.html").is_file()


def test_submit_to_nowhere_fails_cleanly(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\n")
    proc = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "submit", str(job),
                           "--address", f"http://127.0.0.1:{_free_port()}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr


def test_three_jobs_at_once_finish_with_their_own_outputs_and_records(tmp_path, head):
    """The same job submitted three times at once to one cluster: three jobs that all succeed, each
    in its own default output folder (complete), and three completed runs in the shared knowledge base."""
    import sqlite3

    address, env = head
    kb = tmp_path / "knowledge.db"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "same-job", "task": "classify",
        "data": {"path": "builtin:wine", "target": "label", "id": "row_id"},
        "model": {"hidden": [16]}, "train": {"epochs": 2, "batch_size": 32}, "compare_baselines": False,
        "knowledge": str(kb)}))
    procs = [subprocess.Popen([sys.executable, "-m", "dlmine_ray.cli", "submit", str(job), "--address", address,
                               "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(3)]
    outputs = []
    try:
        for p in procs:
            log = p.communicate(timeout=900)[0]
            assert p.returncode == 0 and "SUCCEEDED" in log, log[-3000:]
            outputs.append(log.split("output on the cluster: ", 1)[1].split()[0])
        assert len(set(outputs)) == 3, outputs
        for out in outputs:
            m = json.loads(open(os.path.join(out, "metrics.json")).read())
            assert m["task"] == "classify" and m["rows_test"] > 0 and "accuracy" in m
            assert os.path.isfile(os.path.join(out, "model", "model.pt"))
            assert os.path.isfile(os.path.join(out, "report.html"))
        with sqlite3.connect(kb) as db:
            runs = db.execute("SELECT status, output FROM runs").fetchall()
        assert sorted(runs) == sorted(("completed", o) for o in outputs), runs
    finally:
        for out in outputs:
            shutil.rmtree(out, ignore_errors=True)


def test_local_runs_beside_a_running_ray_start_and_joining_it_with_its_token(tmp_path):
    """`ray start --head` as a user runs it (default temp dir, token authentication): a `dlmine run`
    without --address still starts a Ray of its own (a plain ray.init() would join that cluster
    and refuse num_cpus), and `dlmine run --address` joins it without the user setting
    RAY_AUTH_MODE (a client without it retried for a minute and failed with InvalidAuthToken)."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    for k in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
        env.pop(k, None)
    subprocess.run(["ray", "get-auth-token", "--generate"], env={**env, "RAY_AUTH_MODE": "token"}, check=True,
                   capture_output=True)
    gcs = _free_port()
    log = open(tmp_path / "head.log", "w")
    # the loopback switch as dlmine's own local Ray uses it (tests/test_security.py)
    proc = subprocess.Popen(["ray", "start", "--head", "--block", "--num-cpus", "1", "--port", str(gcs),
                             "--include-dashboard", "false", "--object-store-memory", str(200 * 2**20), *_spare_ports()],
                            env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, stdout=log,
                            stderr=subprocess.STDOUT)
    bootstrap = "/tmp/ray/ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not (os.path.isfile(bootstrap) and open(bootstrap).read().strip().endswith(f":{gcs}")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start --head did not come up: " + open(tmp_path / "head.log").read()[-2000:])
            time.sleep(0.5)
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump({
            "name": "beside", "task": "classify",
            "data": {"path": "builtin:breast_cancer", "target": "label", "id": "row_id"},
            "model": {"hidden": [8]}, "train": {"epochs": 1, "batch_size": 64}, "compare_baselines": False,
            "knowledge": "off"}))
        for name, extra in (("own", []), ("joined", ["--address", f"127.0.0.1:{gcs}"])):
            r = subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "run", str(job), "--output",
                                str(tmp_path / name), *extra], env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
            assert json.loads((tmp_path / name / "metrics.json").read_text())["accuracy"] > 0.5
    finally:
        _stop(proc)
        log.close()
        if os.path.isfile(bootstrap) and open(bootstrap).read().strip().endswith(f":{gcs}"):
            os.remove(bootstrap)  # no later ray.init() on this machine should look for it


@pytest.fixture
def plain_head(tmp_path):
    """A one-node cluster as `dlmine run --address` meets it: no dashboard, token authentication,
    its own ports and temp dir; stopped at the end (and with it the warm processes it holds)."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    gcs = _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    log = open(os.path.join(temp, "head.log"), "w")
    # this interpreter's Ray: the cluster's workers (and its warm process) then import the dlmine_ray
    # under test, also where a `ray` on PATH belongs to another Python environment
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus",
                             "2", "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--include-dashboard", "false",
                             "--temp-dir", temp,
                             "--object-store-memory", str(200 * 2**20), *_spare_ports()],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{gcs}"
    probe = f"import ray; ray.init(address={address!r}); ray.shutdown()"
    deadline = time.monotonic() + 120
    while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            pytest.fail("ray start --head did not come up: " + open(log.name).read()[-2000:])
        time.sleep(1)
    yield address, env, temp
    _stop(proc)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def test_run_against_a_cluster_hands_a_small_job_to_its_warm_process(tmp_path, plain_head):
    """`dlmine run --address` of a small job: the cluster's warm dlmine process on this node runs
    it (the same one for the next command), in the command's directory and environment (relative
    paths, DLMINE_KNOWLEDGE), with the command's output and exit status; the results are those of
    the same job run in the command itself (--cold); bad input fails in one line with nothing
    written; a job that does not run in the driver runs in the command, through the cluster."""
    import re
    import sqlite3

    import numpy as np
    import pandas as pd

    address, env, temp = plain_head
    env = {**env, "DLMINE_KNOWLEDGE": str(tmp_path / "kb.db")}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    df = pd.DataFrame({"row_id": np.arange(300), **{f"x{i}": x[:, i] for i in range(4)}})
    df["label"] = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    df.to_parquet(tmp_path / "tiny.parquet")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "name": "warm", "task": "classify", "data": {"path": "tiny.parquet", "target": "label", "id": "row_id"},
        "model": {"hidden": [8]}, "train": {"epochs": 2, "batch_size": 64}, "compare_baselines": False}))

    def dlmine(*args):
        return subprocess.run([sys.executable, "-m", "dlmine_ray.cli", "run", "job.yaml", *args, "--address", address],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    pids = []
    for out in ("first", "second"):
        r = dlmine("--output", out)
        assert r.returncode == 0, r.stderr[-3000:]
        served = re.search(r"warm dlmine process on this node \(pid (\d+)\)", r.stderr)
        assert served, r.stderr[-3000:]
        pids.append(int(served.group(1)))
        assert "epoch 2/2" in r.stderr and "publishing took" in r.stderr  # the job's progress came back
        assert f"results: {tmp_path / out}" in r.stdout  # relative to the command's directory
    assert pids[0] == pids[1]  # the second command found the first one's process
    cold = dlmine("--output", "cold", "--cold")
    assert cold.returncode == 0 and "warm dlmine process" not in cold.stderr, cold.stderr[-3000:]
    warm_m, cold_m = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("second", "cold"))
    for key in ("accuracy", "f1_macro", "roc_auc", "log_loss", "accuracy_ci", "rows_test"):
        assert warm_m[key] == cold_m[key], key
    with sqlite3.connect(tmp_path / "kb.db") as db:  # the command's DLMINE_KNOWLEDGE
        runs = sorted(db.execute("SELECT status, output FROM runs").fetchall())
    assert runs == sorted(("completed", str(tmp_path / o)) for o in ("first", "second", "cold")), runs

    bad = dlmine("--output", "bad", "--set", "data.target=colour")
    assert bad.returncode == 2, bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "colour" in errors[0], bad.stderr[-3000:]
    assert not (tmp_path / "bad").exists()

    through = dlmine("--output", "through", "--set", "scaling.driver_max_mb=0")
    assert through.returncode == 0 and "warm dlmine process" not in through.stderr, through.stderr[-3000:]
    assert json.loads((tmp_path / "through" / "metrics.json").read_text())["accuracy"] == warm_m["accuracy"]

    # `dlmine predict --address` of small local data scores it in the command, without joining the
    # cluster (no driver log of its process there); --ray joins it
    for extra in ([], ["--ray"]):
        pred = subprocess.Popen([sys.executable, "-m", "dlmine_ray.cli", "predict", "--model", "second/model", "--data",
                                 "tiny.parquet", "--output", f"pred{len(extra)}.parquet", "--address", address, *extra],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = pred.communicate(timeout=300)[1]
        assert pred.returncode == 0 and len(pd.read_parquet(tmp_path / f"pred{len(extra)}.parquet")) == 300, err
        joined = list(Path(temp).rglob(f"python-core-driver-*_{pred.pid}.log"))
        assert bool(joined) == bool(extra), (extra, joined)

    # a command stopped (SIGTERM) or killed outright (SIGKILL) while its job runs in the warm process:
    # the job goes with it (never published later), and the next run of that output removes its
    # staging folder; a command suspended (SIGSTOP, Ctrl-Z) for longer than ORPHAN_S keeps its job
    # (it is then stopped as SIGTERM stops it)
    import psutil

    from dlmine_ray.app.warm import ORPHAN_S

    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
        out = f"stopped-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-m", "dlmine_ray.cli", "run", "job.yaml", "--output", out,
                                 "--set", "train.epochs=20000", "--set", "train.early_stopping=0", "--address",
                                 address], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines, pid, resumed = [], None, False
        for line in proc.stdout:
            lines.append(line)
            served = re.search(r"warm dlmine process on this node \(pid (\d+)\)", line)
            pid = int(served.group(1)) if served else pid
            if sig == signal.SIGSTOP and line.strip().startswith("epoch 3/"):
                proc.send_signal(signal.SIGSTOP)
                time.sleep(ORPHAN_S + 5)
                assert psutil.pid_exists(pid), "the warm process gave up the job of a suspended command"
                proc.send_signal(signal.SIGCONT)
                resumed = True
            elif resumed or line.strip().startswith("epoch 3/"):
                proc.send_signal(signal.SIGTERM if sig == signal.SIGSTOP else sig)
                break
        proc.communicate(timeout=60)
        assert pid is not None, "".join(lines)
        if sig != signal.SIGKILL:
            assert proc.returncode == 130, "".join(lines)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not psutil.pid_exists(pid), f"the warm process of a {sig.name}ed command lives on"
        assert not (tmp_path / out).exists()
        assert len(list(tmp_path.glob(f".{out}.tmp-*"))) == 1
        again = dlmine("--output", out)
        assert again.returncode == 0 and "removed 1 staging folder(s)" in again.stderr, again.stderr[-3000:]
        assert not list(tmp_path.glob(f".{out}.tmp-*")) and (tmp_path / out / "metrics.json").is_file()
