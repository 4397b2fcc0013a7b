"""``dlmine run --address``: a small job runs in a warm dlmine process that the cluster keeps on
this node, so that a command costs a connection instead of a fresh Python's imports.

A job that runs in the driver (small local input: ``pipelines.driver_reason``) spends most of a
fresh process's seconds importing torch, captum, scikit-learn and scipy (about 4 of 6.5 s for a
300-row job, measured with ``python -X importtime``). Against a running cluster, ``dlmine run``
therefore hands such a job to a detached actor on this node (``WarmRunner``), which imported all
that once and runs the same ``dlmine run`` code (the command line's main) in its own process: the same
working directory, environment and run folder as the command's, the command's output streamed
back as it is printed, and its exit status. Everything else (larger input, tuning, several
workers, an actor that cannot start or runs other code than this command) runs in this process
as before. This module imports only Ray and the standard library: the point is not to import the
rest here.

The actor is named for this node and for the installed code (``code_digest``), so that a changed
installation starts a new one; it serves one job at a time (a second command meanwhile runs in its
own process), exits after ``IDLE_S`` seconds without a job, and goes with the cluster (``ray
stop``). ``DLMINE_WARM=0`` turns it off; ``dlmine run --address ... --cold`` too, for one command.
Ctrl-C or SIGTERM in the command ends the actor, and the run with it; so does a command killed
outright, once its process is gone and it has not read the output for ``ORPHAN_S`` (the run's
staging folder is removed by the next run of that output, as for any killed run). A command that
is only suspended (Ctrl-Z) keeps its job."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

#: the cluster namespace the warm actors live in
NAMESPACE = "dlmine"
#: a warm process exits after this many seconds without a job (it holds ~0.6 GiB)
IDLE_S = 600.0
#: how long a command waits for a new warm process to start (imports included) before running itself
START_TIMEOUT_S = 120.0
#: seconds between two reads of a running job's output
POLL_S = 0.05
#: a running job whose command has not read its output for this long, and whose process is gone
#: (killed outright), has lost its command: the warm process exits, and the job with it, rather than
#: publish a run nobody waits for
ORPHAN_S = 10.0
#: set inside the warm process: its ``dlmine run`` never hands the job on again
IN_WARM = "DLMINE_IN_WARM"
#: modules a small job imports only when it reaches them (training's optimizer step imports torch._dynamo,
#: explaining captum, the meta-features and baselines scikit-learn): imported when the process starts
PRELOAD = ("dlmine_ray.app.run", "dlmine_ray.pipelines.tabular",
           "dlmine_ray.pipelines.transactions", "torch._dynamo", "captum.attr", "scipy.stats",
           "sklearn.linear_model", "sklearn.ensemble", "sklearn.feature_selection", "sklearn.model_selection",
           "sklearn.naive_bayes", "sklearn.neighbors", "sklearn.tree", "sqlalchemy", "rich.table")


def enabled() -> bool:
    """Whether this process may hand a job to a warm process: not inside one, not turned off, and
    not a job submitted to the cluster (`dlmine submit`), whose process the Jobs API stops."""
    return (os.environ.get(IN_WARM) != "1" and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ
            and os.environ.get("DLMINE_WARM", "1").strip().lower() not in ("0", "off", "false", "no"))


def code_digest() -> str:
    """The installed dlmine_ray's code and this Python: a warm process serves only commands of the
    same code (the sizes and times of its .py files, the interpreter and its version)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"{os.path.realpath(sys.executable)}|{sys.version}|{root}".encode())
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class _Stream:
    """A text stream that keeps what is written, in order, as (stream, text) pieces."""

    def __init__(self, name: str, sink: list, lock: threading.Lock, tty: bool):
        self.name, self._sink, self._lock, self._tty = name, sink, lock, tty
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        if text:
            with self._lock:
                self._sink.append((self.name, text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self._tty

    def fileno(self) -> int:  # no descriptor: callers that need one fall back as for a pipe
        raise OSError("a captured stream has no file descriptor")


class WarmRunner:
    """The warm process (a Ray actor): runs ``dlmine run`` commands in-process, one at a time."""

    def __init__(self, threads: int):
        os.environ[IN_WARM] = "1"
        import importlib

        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional extra that is not installed: the job imports what it needs
                pass
        import torch

        # Ray gives an actor without CPUs one thread; a job in the driver would have had the node's
        torch.set_num_threads(max(1, threads))
        self.code = code_digest()
        self._busy = threading.Lock()
        self._out_lock = threading.Lock()
        self._out: list = []
        self._status: Optional[int] = None
        self._client: Optional[int] = None
        self._last = self._seen = time.monotonic()
        threading.Thread(target=self._watch, daemon=True).start()

    def hello(self) -> dict:
        """What a command checks before handing a job over: the code this process runs, its user."""
        return {"digest": self.code, "uid": os.getuid() if hasattr(os, "getuid") else None, "pid": os.getpid()}

    def start(self, entry, argv: list, job: str, overrides: list, cwd: str, env: dict, tty: bool,
              pid: Optional[int] = None) -> str:
        """Run ``entry(argv)`` (the command line's main, which returns the exit status) as the command
        in ``cwd`` with ``env`` would, for the job file ``job`` with ``overrides`` (its --set
        pairs), its output a terminal's when ``tty``; ``pid``: the command's process, on this node.
        Returns "started", "busy" (another job is running) or "declined" (the job does not run in
        the driver)."""
        if not self._busy.acquire(blocking=False):
            return "busy"
        # a command whose process this one cannot see (another process namespace) is judged by its
        # reads alone
        self._client = pid if pid is not None and not _gone(pid) else None
        self._seen = time.monotonic()
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        started = False
        try:
            os.chdir(cwd)
            os.environ.update({k: v for k, v in env.items() if not (k.startswith("RAY_") and k in os.environ)})
            os.environ[IN_WARM] = "1"
            if not _runs_in_driver(job, overrides):
                return "declined"
            self._out, self._status, self._last = [], None, time.monotonic()
            self._seen = self._last
            threading.Thread(target=self._run, args=(entry, argv, tty, saved_env, saved_cwd), daemon=True).start()
            started = True
            return "started"
        finally:
            if not started:
                _restore(saved_env, saved_cwd)
                self._busy.release()

    def _run(self, entry, argv: list, tty: bool, saved_env: dict, saved_cwd: str) -> None:
        streams = sys.stdout, sys.stderr
        sys.stdout = _Stream("stdout", self._out, self._out_lock, tty)
        sys.stderr = _Stream("stderr", self._out, self._out_lock, tty)
        status = 1
        try:
            status = entry(argv)
        except SystemExit as err:  # argparse
            status = err.code if isinstance(err.code, int) else 2
        except BaseException as err:  # entry catches what a job raises; this is a failure of ours
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        finally:
            sys.stdout, sys.stderr = streams
            _restore(saved_env, saved_cwd)
            self._status, self._last = status, time.monotonic()
            self._busy.release()

    def read(self, offset: int) -> tuple:
        """The output pieces from ``offset`` on, and the exit status once the job has ended (else None)."""
        self._seen = time.monotonic()
        with self._out_lock:
            status = self._status  # read before the pieces: every piece is in once the status is set
            return self._out[offset:], status

    def _watch(self) -> None:
        """Exit after IDLE_S without a job, or when the running job's command is gone (ORPHAN_S
        without a read): its staging folder is then a dead run's, removed by the next run of it."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            if (self._status is None and self._busy.locked() and now - self._seen > ORPHAN_S
                    and (self._client is None or _gone(self._client))):
                os._exit(1)
            if now - self._last > IDLE_S and self._busy.acquire(blocking=False):
                os._exit(0)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie, killed but not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's: it exists
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc (macOS): it exists
        return False


def _runs_in_driver(job: str, overrides: list) -> bool:
    """Whether the job file ``job`` with the --set pairs ``overrides`` runs in the driver. A job that
    does not load is "yes": the command then says what is wrong, in one line, as it would here."""
    from dlmine_ray.app.jobfile import load_job, parse_overrides
    from dlmine_ray.errors import DlmineError
    from dlmine_ray.pipelines import driver_reason
    from dlmine_ray.tasks import get_task

    try:
        spec = load_job(job, parse_overrides(overrides))
        return bool(driver_reason(spec, get_task(spec.task)))
    except DlmineError:
        return True


def _restore(env: dict, cwd: str) -> None:
    os.chdir(cwd)
    for k in [k for k in os.environ if k not in env]:
        del os.environ[k]
    os.environ.update(env)


def run_warm(entry, argv: list, job: str, overrides: list, address: str, verbose: bool = False) -> Optional[int]:
    """Hand the command ``entry(argv)`` (the command line's main: `dlmine run` of the job file
    ``job`` with the --set pairs ``overrides``) to this node's warm process of the cluster at
    ``address``, print its output as it comes, and return its exit status; None when this process
    should run the command itself (the job does not run in the driver, the warm process is busy or
    cannot start)."""
    from dlmine_ray.runtime.session import (RAY_ENV_DEFAULTS, _token_auth_when_available, check_reachable,
                                            sigterm_handler_kept)

    check_reachable(address)
    for k, v in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    _token_auth_when_available()
    import logging

    import ray

    try:
        with sigterm_handler_kept():  # Ray's handler would leave the job running in the warm process
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=verbose,
                     logging_level=logging.INFO if verbose else logging.ERROR,
                     runtime_env={"env_vars": {k: os.environ[k] for k in RAY_ENV_DEFAULTS}})
    except Exception as err:  # the command in this process joins the cluster its own way, or says why not
        _note(f"could not join the cluster for its warm dlmine process ({type(err).__name__}); running here", verbose)
        return None
    actor = None
    try:
        digest = code_digest()
        node = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        threads = os.cpu_count() or 1
        actor = ray.remote(WarmRunner).options(
            name=f"warm-{node[:12]}-{digest}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_concurrency=4, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}}).remote(threads)
        try:
            hello = ray.get(actor.hello.remote(), timeout=START_TIMEOUT_S)
        except Exception as err:  # could not start (no dlmine_ray on the workers' Python, a timeout)
            _note(f"the warm dlmine process did not start ({type(err).__name__}); running here", verbose)
            ray.kill(actor)
            return None
        uid = os.getuid() if hasattr(os, "getuid") else None
        if hello["digest"] != digest or hello["uid"] != uid:
            _note("the cluster's warm dlmine process runs other code or as another user; running here", verbose)
            ray.kill(actor)
            return None
        env, tty = dict(os.environ), sys.stderr.isatty()
        if tty:  # the warm process's output is a pipe: colours and width are the terminal's
            import shutil

            env.setdefault("FORCE_COLOR", "1")
            env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
        answer = ray.get(actor.start.remote(entry, list(argv), job, list(overrides), os.getcwd(), env, tty,
                                            os.getpid()))
        if answer != "started":
            return None
        print(f"  the cluster's warm dlmine process on this node (pid {hello['pid']}) runs the job; --cold runs it "
              "in this command", file=sys.stderr, flush=True)
        offset, status = 0, None
        try:
            while status is None:
                time.sleep(POLL_S)
                pieces, status = ray.get(actor.read.remote(offset))
                offset += len(pieces)
                for stream, text in pieces:
                    (sys.stdout if stream == "stdout" else sys.stderr).write(text)
                sys.stdout.flush()
                sys.stderr.flush()
        except KeyboardInterrupt:  # the run goes with the process; the next run removes its staging folder
            ray.kill(actor)
            raise
        return int(status)
    finally:
        ray.shutdown()


def _note(text: str, verbose: bool) -> None:
    if verbose:
        print(text, file=sys.stderr)
