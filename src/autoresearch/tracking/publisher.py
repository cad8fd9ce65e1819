"""The loop's trackers: each recorded ledger row goes to them from a background thread.

`publish` (called by `Research.record` after the rows are in the ledger) only builds the records
(record.py: a git read and the run folder's files) and queues them; a daemon thread opens the
trackers (importing their libraries there, too) and writes. A tracker that fails is one warning
and then off for the rest of the loop: the research never waits for it and never stops because
of it. `close` gives the thread a bounded time to finish; what it leaves out `autoresearch
track` writes later (a tracker skips what it already holds).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from autoresearch.ledger import Row
from autoresearch.tracking import base, config
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun, collect
from autoresearch.workspace import Workspace

CLOSE_WAIT_S = 120.0  # at the loop's end, for rows still being written
STOPPING_WAIT_S = 5.0  # when the loop stops on an error or a signal


class Publisher:
    def __init__(self, ws: Workspace, settings: TrackingConfig, log: Callable[[str], None] = print) -> None:
        self.ws = ws
        self.settings = settings
        self.log = log
        self.trackers: dict[str, base.Tracker] = {}
        self.off: set[str] = set()
        self._queue: queue.Queue[list[TrackedRun] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, ws: Workspace, names: list[str] | None, log: Callable[[str], None] = print) -> Publisher | None:
        """The trackers that --track `names` (else [tracking] in autoresearch.toml) ask for; None for none.
        A bad [tracking] section is a SettingsError, before anything runs."""
        settings = config.load(ws.root).with_trackers(names)
        if not settings.trackers:
            return None
        base.keep_out_of_git(ws, settings)
        log(f"tracking in {', '.join(settings.trackers)} (docs/tracking.md)")
        return cls(ws, settings, log)

    def publish(self, rows: list[Row]) -> None:
        """Queue recorded rows for the trackers; never raises."""
        if len(self.off) == len(self.settings.trackers):
            return
        try:
            runs = collect(self.ws, rows)
        except Exception as e:  # noqa: BLE001 - a tracker must never stop the research
            self.log(f"warning: could not read rows for the trackers ({e}); `autoresearch track` writes them later")
            return
        self._queue.put(runs)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="autoresearch-tracking", daemon=True)
            self._thread.start()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(wait_s)
            if self._thread.is_alive():
                self.log(f"warning: the trackers are still writing after {wait_s:g} s; the rest is left out: "
                         "`autoresearch track` writes it")
                return
        for tracker in self.trackers.values():
            try:
                tracker.close()
            except Exception:  # noqa: BLE001
                pass

    def _work(self) -> None:
        while True:
            runs = self._queue.get()
            if runs is None:
                return
            for name in self.settings.trackers:
                if name not in self.off:
                    self._write(name, runs)

    def _write(self, name: str, runs: list[TrackedRun]) -> None:
        try:
            if name not in self.trackers:
                self.trackers[name] = base.make(name, self.ws, self.settings)
            for run in runs:
                self.trackers[name].write(run)
        except Exception as e:  # noqa: BLE001 - any failure of a tracker: warn once, then off
            self.off.add(name)
            message = " ".join(str(e).split())[:300] or type(e).__name__
            self.log(f"warning: {name} tracking failed and is off for the rest of this loop ({message}); the "
                     f"ledger and run folders are unaffected: `autoresearch track --{name}` writes what it missed")
