"""The live progress of the runs under way, for the terminal of `loop` and `run`.

While a run trains, a terminal shows one updating line per run (rich), from what the run writes:

    run 0004  lower the learning rate  step 123  loss 3.214  12.3k tok/s  45 s of 60 s

When output is not a terminal (a log file, CI), the same line is printed every `every_s` seconds
instead. What is under way comes from the loop's state file (.autoresearch/flights.json) and
each run's metrics stream (runs/<id>/metrics.jsonl), as the dashboard reads them: a watcher
thread reads files and never touches the loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from autoresearch.rundir import METRICS_FILE, RESULT_FILE, parse_metrics, read_text
from autoresearch.workspace import RUNS_DIR, read_flights

REFRESH_S = 0.5  # how often the terminal line is redrawn
EVERY_S = 30.0  # how often a line is printed when output is not a terminal
TAIL_BYTES = 4096  # enough of metrics.jsonl for its last records


@dataclass(frozen=True)
class RunProgress:
    """One run under way, as far as its files show."""

    run_id: str
    label: str  # what the run measures: the change's description, or "baseline"
    since_s: float  # seconds since the run folder was made
    last: dict  # the last record of metrics.jsonl ({} before the first step)
    budget_s: float

    def line(self) -> str:
        parts = [f"run {self.run_id}", _cut(self.label, 40)]
        if not self.last:
            return "  ".join(parts + [f"starting ({self.since_s:.0f} s)"])
        step, loss = self.last.get("step"), self.last.get("loss")
        rate, trained = self.last.get("tokens_per_s"), self.last.get("training_seconds")
        if isinstance(step, int):
            parts.append(f"step {step}")
        if isinstance(loss, (int, float)):
            parts.append(f"loss {loss:.3f}")
        if isinstance(rate, (int, float)):
            parts.append(f"{rate / 1000:.1f}k tok/s")
        if isinstance(trained, (int, float)):
            parts.append(f"{trained:.0f} s of {self.budget_s:g} s")
        return "  ".join(parts)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def runs_under_way(root: Path, budget_s: float) -> list[RunProgress]:
    """The runs the loop of workspace `root` has started and not finished, oldest first."""
    out = []
    for flight in read_flights(root):
        if flight.get("phase") != "running":
            continue
        label = str(flight.get("description") or flight.get("kind") or "")
        for run_id in flight.get("runs") or ():
            run_dir = root / RUNS_DIR / str(run_id)
            if (run_dir / RESULT_FILE).exists():
                continue
            try:
                since = time.time() - run_dir.stat().st_mtime
            except OSError:
                continue  # not started yet
            records = parse_metrics(read_text(run_dir, METRICS_FILE, TAIL_BYTES))
            out.append(RunProgress(str(run_id), label, since, records[-1] if records else {}, budget_s))
    return sorted(out, key=lambda p: (len(p.run_id), p.run_id))


class LiveProgress:
    """A thread that shows the runs under way while entered: an updating line on a terminal, a
    line every `every_s` seconds otherwise. `enabled=False` (--quiet) shows nothing."""

    def __init__(self, root: Path, budget_s: float, console: Console | None = None, every_s: float = EVERY_S,
                 enabled: bool = True) -> None:
        self.root = root
        self.budget_s = budget_s
        self.console = console or Console(highlight=False)
        self.every_s = every_s
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def __enter__(self) -> LiveProgress:
        if not self.enabled:
            return self
        if self.console.is_terminal:
            # transient: the line goes when the run ends; the loop's own lines print above it
            self._live = Live(Text(""), console=self.console, transient=True, auto_refresh=False,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        self._thread = threading.Thread(target=self._watch, name="live-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._live is not None:
            self._live.stop()

    def _watch(self) -> None:
        last_printed = time.monotonic()
        while not self._stop.wait(REFRESH_S):
            try:
                lines = [p.line() for p in runs_under_way(self.root, self.budget_s)]
            except Exception as e:  # a display must never stop the research
                lines = [f"(progress unavailable: {e})"]
            if self._live is not None:
                self._live.update(Text("\n".join(lines), no_wrap=True, overflow="ellipsis"), refresh=True)
            elif lines and time.monotonic() - last_printed >= self.every_s:
                last_printed = time.monotonic()
                for line in lines:
                    self.console.print(line, soft_wrap=True)
