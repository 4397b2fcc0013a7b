"""Progress a user can follow: the stage, each epoch's metrics, each trial's end and the best so far.

Workers and trials push small events to a ``ProgressBoard`` actor (no CPU); a thread on the
driver drains it and prints. Ray's own logs stay hidden unless ``--verbose``.

What is printed is in the order it happened: a run's last event is on the board before its
training function returns (``Board.put`` waits for it), and the Reporter prints every pending
event before it prints a stage header or a note from the driver."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

from rich.console import Console

#: how a tuning trial ended, as the leaderboard and the console say it
COMPLETED, STOPPED, ERROR = "completed", "stopped by scheduler", "error"


def trial_value(result: dict, metric: str) -> Optional[float]:
    """A tuning trial's value of ``metric``: its best epoch's (``best_<metric>``, the epoch the
    run keeps), else the last reported; returns None when the result has neither. The one
    definition of "best" that the console, the leaderboard and the choice of the best trial use."""
    value = result.get(f"best_{metric}", result.get(metric))
    return None if value is None or (isinstance(value, float) and value != value) else float(value)


class Reporter:
    """Prints stages and events to the terminal (stderr), or nothing when ``quiet``.

    Thread-safe: the board's watcher thread and the driver print through one lock, so lines never
    interleave; a stage header or a note first prints every event still pending on the boards
    being watched, so that it never overtakes the epochs of the work before it."""

    def __init__(self, quiet: bool = False, console: Optional[Console] = None, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._stage_started = time.perf_counter()
        self._stage: Optional[str] = None
        self._lock = threading.RLock()
        self._watchers: list["BoardWatcher"] = []
        self.tune_total = 0
        self.tune_done = 0
        self.tune_best: Optional[float] = None
        self.tune_metric = "val_loss"
        self.tune_mode = "min"

    def _print(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                self.console.print(text)

    def _catch_up(self) -> None:
        # outside self._lock: a watcher's drain takes its own lock, then this one to print
        for w in list(self._watchers):
            w.flush()

    def stage(self, name: str, detail: str = "") -> None:
        """Announce the start of a stage (reading, preprocessing, training, ...); returns None."""
        self._catch_up()
        with self._lock:
            self._end_stage()
            self._stage, self._stage_started = name, time.perf_counter()
            self._print(f"[bold cyan]▶ {name}[/]" + (f" [dim]{detail}[/]" if detail else ""))

    def _end_stage(self) -> None:
        if self._stage:
            self._print(f"  [dim]{self._stage} took {time.perf_counter() - self._stage_started:.1f}s[/]")
        self._stage = None

    def done(self) -> None:
        """Close the last stage (prints its duration); returns None."""
        self._catch_up()
        with self._lock:
            self._end_stage()

    def info(self, text: str) -> None:
        """Print a note of the current stage, after every pending event; returns None."""
        self._catch_up()
        self._print(f"  {text}")

    def event(self, ev: dict) -> None:
        """Print one event from a worker or trial; returns None.

        A trial's epochs are printed only when ``verbose``: how a trial ended is told by
        ``trial_ended``, from Tune's own view of the trial."""
        if self.quiet:
            return
        metrics = _metrics_text(ev)
        if ev.get("trial") is None:
            speed = f" {ev.get('samples_per_s', 0):,.0f} samples/s" if ev.get("samples_per_s") else ""
            self._print(f"  epoch {ev['epoch']}/{ev['epochs']} {metrics}{speed}")
        elif self.verbose:
            self._print(f"  [dim]trial {ev['trial']} epoch {ev['epoch']}/{ev['epochs']} {metrics}[/]")

    def start_tuning(self, metric: str, mode: str, trials: int) -> None:
        """Say which metric (and direction) ranks the trials and how many there are; returns None."""
        self.tune_metric, self.tune_mode, self.tune_total = metric, mode, trials

    def _keep_best(self, value) -> None:
        if value is not None and (self.tune_best is None or (
                value < self.tune_best if self.tune_mode == "min" else value > self.tune_best)):
            self.tune_best = value

    def trials_restored(self, values: list) -> None:
        """Say that a restored search (``--resume``) keeps the trials its interrupted run ended,
        with their values (None where a trial has none); returns None."""
        with self._lock:
            self.tune_done += len(values)
            for value in values:
                self._keep_best(value)
            best = f", best {self.tune_metric} so far {self.tune_best:.4g}" if self.tune_best is not None else ""
            self._print(f"  continuing the interrupted search: {len(values)} of {self.tune_total} trials had "
                        f"ended and are kept{best}")

    def trial_ended(self, trial: str, status: str, result: dict, params: str = "") -> None:
        """Print how one tuning trial ended (``COMPLETED``, ``STOPPED`` or ``ERROR``) and the best
        so far; returns None. A trial's value is ``trial_value`` of its last result, the value the
        leaderboard ranks by."""
        self._catch_up()
        with self._lock:
            self.tune_done += 1
            value = trial_value(result, self.tune_metric) if status != ERROR else None
            self._keep_best(value)
            best = f"{self.tune_best:.4g}" if self.tune_best is not None else "-"
            mine = f"best {self.tune_metric}={value:.4g}" if value is not None else "no result"
            epochs = result.get("epoch")
            after = f" after {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else ""
            total = f"/{self.tune_total}" if self.tune_total else ""
            self._print(f"  trial {trial} {status}{after}: {mine}" + (f" [dim]({params})[/]" if params else "")
                        + f" [dim]| {self.tune_done}{total} trials ended, best {self.tune_metric} so far {best}[/]")


def _metrics_text(ev: dict) -> str:
    return " ".join(f"{k}={ev[k]:.4g}" for k in ev
                    if (k.startswith("val_") or k == "train_loss") and isinstance(ev[k], (int, float)))


class _Put:
    """``put.remote(ev)`` of a Board: sends the event; the last one of a run (``stop``) is waited
    for, so that when the training function returns every event it sent is on the board (one
    caller's calls to an actor run in the order sent)."""

    def __init__(self, actor):
        self.actor = actor

    def remote(self, ev: dict):
        """Send ``ev`` to the board; returns the call's ObjectRef."""
        ref = self.actor.put.remote(ev)
        if ev.get("stop"):
            import ray

            try:
                ray.get(ref, timeout=10)
            except Exception:  # progress must never break a run
                pass
        return ref


class Board:
    """A ProgressBoard actor's handle, used as the actor's: ``put.remote(ev)``, ``drain.remote()``.
    Plain data (the actor handle), so it travels to workers and trials."""

    def __init__(self, actor):
        self.actor = actor

    @property
    def put(self) -> _Put:
        """The board's ``put``, whose ``remote(ev)`` waits for a run's last event."""
        return _Put(self.actor)

    @property
    def drain(self):
        """The actor's ``drain`` method: ``drain.remote()`` returns a ref to the pending events."""
        return self.actor.drain

    def close(self) -> None:
        """End the actor. Tune keeps the handles its trials were given, so a board is not collected
        with the run: a process running job after job (a benchmark, the Python API) kept one actor
        process per run until it shut Ray down."""
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # progress must never break a run
            pass


class _HandOver:
    def __init__(self, handle):
        self.handle = handle

    def remote(self, ev: dict) -> None:
        try:
            self.handle(ev)
        except Exception:  # progress must never break a run
            pass


class DirectBoard:
    """A board for a loop that runs in this process (a small job without Ray): ``put.remote(ev)``
    hands each event to ``sink`` (a Reporter, or a callable of one event) at once."""

    def __init__(self, sink):
        self.put = _HandOver(sink.event if isinstance(sink, Reporter) else sink)

    def close(self) -> None:
        pass


def make_board() -> Board:
    """Create a ProgressBoard actor (needs a running Ray); returns its Board handle."""
    import ray

    @ray.remote(num_cpus=0)
    class ProgressBoard:
        def __init__(self):
            self.events = []

        def put(self, ev):
            self.events.append(ev)

        def drain(self):
            out, self.events = self.events, []
            return out

    return Board(ProgressBoard.remote())


class BoardWatcher:
    """Context manager: drains a ProgressBoard from a background thread into ``sink``, a Reporter
    or any callable that takes one event dict. With a Reporter, the Reporter also drains it
    (``flush``) before each stage header and note."""

    def __init__(self, board, sink, interval: float = 0.5):
        self.board, self.interval = board, interval
        self.reporter = sink if isinstance(sink, Reporter) else None
        self.handle = sink.event if isinstance(sink, Reporter) else sink
        self._stop = threading.Event()
        # one drain at a time: a drain's events are printed before the next drain fetches more
        self._drain_lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def flush(self) -> int:
        """Print every event now on the board, in order; returns how many were printed."""
        import ray

        with self._drain_lock:
            try:
                events = ray.get(self.board.drain.remote(), timeout=10)
            except Exception:  # progress must never break a run
                return 0
            for ev in events:
                try:
                    self.handle(ev)
                except Exception:
                    pass
            return len(events)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.flush()

    def __enter__(self):
        if self.reporter is not None:
            self.reporter._watchers.append(self)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.flush()
        if self.reporter is not None:
            self.reporter._watchers.remove(self)
        sys.stderr.flush()
        return False
