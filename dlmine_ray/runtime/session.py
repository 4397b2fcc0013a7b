"""Start a local Ray sized for the machine, or join a running cluster; or, for a small job that
runs in this process, no Ray at all."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator, Optional

# Defaults that keep a small job's fixed cost low and the console readable; a user's own
# setting wins. The health-check interval cut an empty TorchTrainer fit from ~10 s to ~6 s here.
RAY_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
}


def _quiet_logs(verbose: bool) -> None:
    if verbose:
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray.data  # noqa: F401  (configures Ray Data's loggers; override them after)

    # Ray's INFO lines and routine warnings (token auth on a private local Ray, progress bars
    # off, deprecations) are noise to a user watching a job; --verbose shows them.
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray Data logs a failed execution's whole traceback at ERROR before raising it; the run then
    # says the cause in one line (--verbose shows the traceback)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="ray")


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt in this process (from the main thread; elsewhere a no-op):
    `kill` or a scheduler's stop then lets a run remove its staging folder, as Ctrl-C does, instead
    of leaving half-written output. Ray's driver installs a handler of its own in ``ray.init``."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave the default
        pass


@contextlib.contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """Around ``ray.init``: put back the SIGTERM handler this process had (the command line's,
    ``interrupt_on_sigterm``), which ``ray.init`` replaces with one that exits the driver at once,
    leaving a run's staging folder behind (or, in the warm path, the job running elsewhere). A
    process without a handler of its own keeps Ray's; outside the main thread nothing changes."""
    import signal

    kept = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(kept):
            try:
                signal.signal(signal.SIGTERM, kept)
            except ValueError:  # not the main thread
                pass


def cluster_is_this_node() -> bool:
    """Whether the Ray cluster this process has joined is one alive node, this process's own (a
    laptop's local Ray or single-machine cluster): work spread by Ray there runs on the same cores."""
    import ray
    import ray.util.client

    try:
        if ray.util.client.ray.is_connected():  # Ray Client (ray://): this process is no node
            return False
        alive = [n for n in ray.nodes() if n.get("Alive")]
        return len(alive) == 1 and alive[0].get("NodeID") == ray.get_runtime_context().get_node_id()
    except Exception:  # not connected, or an answer of another shape: assume a cluster
        return False


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line, within ``timeout_s``, when nothing listens at a cluster address
    (``host:port``, ``ray://host:port``); Ray itself retries an unreachable GCS for minutes."""
    import socket

    from dlmine_ray.errors import DlmineError

    if address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1].rstrip("/")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise DlmineError(f"cluster address '{address}' is not HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise DlmineError(f"cannot reach a Ray cluster at {address}: {reason} (is `ray start --head` running "
                          "there, and the port right?)") from None


def _token_auth_when_available() -> None:
    """Before Ray is imported, to join a cluster: use token authentication when the user has not
    chosen a mode and a token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    `ray start --head` turns token authentication on while a client defaults to none, and the
    client then retries for a minute before failing with InvalidAuthToken; a token client joins a
    cluster without authentication as well (measured on Ray 2.60)."""
    import sys

    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:  # Ray reads the mode when imported
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"


#: Ray's own switch (ray._private.ray_constants) for "this node is part of no cluster": its node IP
#: is then loopback, and Ray binds its GCS, raylet, worker and agent servers (and the metrics
#: exporter) to loopback instead of every interface. It is how Ray runs on macOS and Windows.
_NO_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local Ray starts: its node IP is 127.0.0.1, so nothing it starts listens beyond this
    machine (a local run has no other node to talk to). Ray reads the switch when it is imported,
    and the started processes read it from their environment; both are restored afterwards, so
    that a later ``ray.init(address=...)`` in this process joins a cluster as usual."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(_NO_CLUSTER), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_NO_CLUSTER] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_NO_CLUSTER, None)
        else:
            os.environ[_NO_CLUSTER] = before_env


@contextlib.contextmanager
def driver_session(num_cpus: Optional[int] = None) -> Iterator[float]:
    """Yield the CPUs a job that runs in this process without Ray may use (``num_cpus``, default
    this machine's cores); torch's thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield float(num_cpus or os.cpu_count() or 1)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, verbose: bool = False, num_cpus: Optional[int] = None,
                object_store_mb: Optional[int] = None) -> Iterator[float]:
    """Yield the cluster's CPU count, with Ray initialised; shut down only a Ray we started.

    ``address`` (or RAY_ADDRESS) joins an existing cluster; otherwise a local Ray is started
    with ``num_cpus`` (default: this machine's cores)."""
    for k, v in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if address or os.environ.get("RAY_ADDRESS"):
        _token_auth_when_available()
    import ray

    _quiet_logs(verbose)

    started = False
    if not ray.is_initialized():
        env_vars = {k: os.environ[k] for k in RAY_ENV_DEFAULTS}
        kwargs = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR,
                      configure_logging=True)
        address = address or os.environ.get("RAY_ADDRESS")
        with sigterm_handler_kept():
            if address:
                check_reachable(address)
                # A submitted job already carries these in its runtime env; a plain driver passes them
                # so that the cluster's Train controller and workers see them too.
                in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
                ray.init(address=address, **({} if in_job else {"runtime_env": {"env_vars": env_vars}}), **kwargs)
            else:  # a local Ray's processes inherit this process's environment
                # "local": a Ray of its own even when `ray start` runs one on this machine, which a
                # plain ray.init() would join (and refuse num_cpus for)
                with _loopback_only():
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                             object_store_memory=object_store_mb * 2**20 if object_store_mb else None, **kwargs)
        started = True
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    # Ray Data 2.60's newer Parquet reader starts fresh footer-reader processes on every execution
    # and packs small files into one block (one core); the classic reader with a block count of
    # about twice the CPUs took a 500k-row data path from 15.1 s to 4.1 s here (see read.py).
    ctx.use_datasource_v2 = False
    # rows in file order after every map and filter: the training order, the sampled rows (the
    # baseline's, the fit references') and so the results do not depend on which block finished
    # first (they did: the same detect job gave another fit_consensus from one run to the next),
    # and a small job run in the driver gets exactly what the same job through Ray gets
    ctx.execution_options.preserve_order = True
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = verbose
    try:
        yield float(ray.cluster_resources().get("CPU", 1.0))
    finally:
        if started:
            ray.shutdown()
