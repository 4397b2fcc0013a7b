"""Progress a user can follow: the stage, each epoch's metrics, trials done and the best so far.

Workers and trials push small events to a ``ProgressBoard`` actor (no CPU); a thread on the
driver drains it and prints. Ray's own logs stay hidden unless ``--verbose``."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

from rich.console import Console


class Reporter:
    """Prints stages and events to the terminal (stderr), or nothing when ``quiet``."""

    def __init__(self, quiet: bool = False, console: Optional[Console] = None, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._stage_started = time.perf_counter()
        self._stage: Optional[str] = None
        self.tune_total = 0
        self.tune_done = 0
        self.tune_best: Optional[float] = None
        self.tune_metric = "val_loss"
        self.tune_mode = "min"

    def stage(self, name: str, detail: str = "") -> None:
        """Announce the start of a stage (reading, preprocessing, training, ...)."""
        self._end_stage()
        self._stage, self._stage_started = name, time.perf_counter()
        if not self.quiet:
            self.console.print(f"[bold cyan]▶ {name}[/]" + (f" [dim]{detail}[/]" if detail else ""))

    def _end_stage(self) -> None:
        if self._stage and not self.quiet:
            self.console.print(f"  [dim]{self._stage} took {time.perf_counter() - self._stage_started:.1f}s[/]")
        self._stage = None

    def done(self) -> None:
        self._end_stage()

    def info(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  {text}")

    def event(self, ev: dict) -> None:
        """Print one event from a worker or trial."""
        if self.quiet:
            return
        metrics = " ".join(f"{k}={ev[k]:.4g}" for k in ev
                           if (k.startswith("val_") or k == "train_loss") and isinstance(ev[k], (int, float)))
        if ev.get("trial") is None:
            speed = f" {ev.get('samples_per_s', 0):,.0f} samples/s" if ev.get("samples_per_s") else ""
            self.console.print(f"  epoch {ev['epoch']}/{ev['epochs']} {metrics}{speed}")
            return
        if ev.get("stop"):
            self.tune_done += 1
            value = ev.get(f"best_{self.tune_metric}", ev.get(self.tune_metric))
            if value is not None:
                better = self.tune_best is None or (value < self.tune_best if self.tune_mode == "min" else value > self.tune_best)
                if better:
                    self.tune_best = value
            best = f"{self.tune_best:.4g}" if self.tune_best is not None else "-"
            self.console.print(f"  trial {ev['trial']} finished after {ev['epoch']} epochs: {metrics} "
                               f"[dim]| {self.tune_done} trial(s) complete, best {self.tune_metric} so far {best}[/]")


def make_board():
    """Create the ProgressBoard actor (needs a running Ray)."""
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

    return ProgressBoard.remote()


class BoardWatcher:
    """Context manager: drains a ProgressBoard from a background thread into ``sink``, a Reporter
    or any callable that takes one event dict."""

    def __init__(self, board, sink, interval: float = 0.5):
        self.board, self.interval = board, interval
        self.handle = sink.event if isinstance(sink, Reporter) else sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _drain(self):
        import ray

        try:
            for ev in ray.get(self.board.drain.remote(), timeout=10):
                self.handle(ev)
        except Exception:  # progress must never break a run
            pass

    def _run(self):
        while not self._stop.wait(self.interval):
            self._drain()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._drain()
        sys.stderr.flush()
        return False
