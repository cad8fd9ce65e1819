"""The loop's trackers and webhooks: each recorded ledger row goes to them from a background thread.

`publish` (called by `Research.record` after the rows are in the ledger) only builds the records
(record.py: a git read and the run folder's files) and finds the events to notify (notify.py),
and queues them; a daemon thread opens the trackers (importing their libraries there, too),
writes, and posts the notifications (webhook.py). A tracker or a webhook that fails is one
warning and then off for the rest of the loop: the research never waits for it and never stops
because of it. `close` gives the thread a bounded time to finish; what it leaves out of the
trackers `autoresearch track` writes later (a tracker skips what it already holds).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from autoresearch.ledger import Row
from autoresearch.tracking import base, notify, webhook
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun, collect
from autoresearch.workspace import Workspace

CLOSE_WAIT_S = 120.0  # at the loop's end, for rows still being written
STOPPING_WAIT_S = 5.0  # when the loop stops on an error or a signal


class Publisher:
    def __init__(self, ws: Workspace, settings: TrackingConfig, log: Callable[[str], None] = print,
                 ledger: Callable[[], list[Row]] = list) -> None:
        self.ws = ws
        self.settings = settings
        self.log = log
        self.ledger = ledger  # the ledger's rows as they are now (the events keep it as it was)
        self.events = notify.Events()
        self.trackers: dict[str, base.Tracker] = {}
        self.off: set[str] = set()  # trackers and webhooks that failed
        self._queue: queue.Queue[list[TrackedRun] | notify.Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, ws: Workspace, settings: TrackingConfig, log: Callable[[str], None] = print,
             ledger: Callable[[], list[Row]] = list) -> Publisher | None:
        """The trackers and webhooks `settings` name (config.py); None for none."""
        if not settings.trackers and not settings.notify:
            return None
        base.keep_out_of_git(ws, settings)
        if settings.trackers:
            log(f"tracking in {', '.join(settings.trackers)} (docs/tracking.md)")
        if settings.notify:
            log(f"notifying {', '.join(webhook.where(u) for u in settings.notify)} of kept changes, crashes and "
                "the end (docs/tracking.md)")
        return cls(ws, settings, log, ledger)

    def publish(self, rows: list[Row]) -> None:
        """Queue recorded rows for the trackers, and their events for the webhooks; never raises."""
        if self.settings.notify:
            for event in self.events.of(rows, self.ledger()):
                self._put(event)
        if all(name in self.off for name in self.settings.trackers):
            return
        try:
            runs = collect(self.ws, rows)
        except Exception as e:  # noqa: BLE001 - a tracker must never stop the research
            self.log(f"warning: could not read rows for the trackers ({e}); `autoresearch track` writes them later")
            return
        self._put(runs)

    def ended(self, closing_line: str, why: str) -> None:
        """Notify the webhooks that the loop ended (then `close`)."""
        if self.settings.notify:
            self._put(notify.ended(self.ledger(), closing_line, why))

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(wait_s)
            if self._thread.is_alive():
                left = [*(["the trackers are still writing"] if self.settings.trackers else []),
                        *(["notifications are still being sent"] if self.settings.notify else [])]
                self.log(f"warning: {' and '.join(left)} after {wait_s:g} s; the rest is left out"
                         + (": `autoresearch track` writes it" if self.settings.trackers else ""))
                return
        for tracker in self.trackers.values():
            try:
                tracker.close()
            except Exception:  # noqa: BLE001
                pass

    def _put(self, item: list[TrackedRun] | notify.Event) -> None:
        self._queue.put(item)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="autoresearch-tracking", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, notify.Event):
                self._notify(item)
                continue
            for name in self.settings.trackers:
                if name not in self.off:
                    self._write(name, item)

    def _write(self, name: str, runs: list[TrackedRun]) -> None:
        try:
            if name not in self.trackers:
                self.trackers[name] = base.make(name, self.ws, self.settings)
            for run in runs:
                self.trackers[name].write(run)
        except Exception as e:  # noqa: BLE001 - any failure of a tracker: warn once, then off
            self.off.add(name)
            self.log(f"warning: {name} tracking failed and is off for the rest of this loop ({_message(e)}); the "
                     f"ledger and run folders are unaffected: `autoresearch track --{name}` writes what it missed")

    def _notify(self, event: notify.Event) -> None:
        urls = [u for u in self.settings.notify if u not in self.off]
        if not urls:
            return
        try:
            document = notify.document(event, self.ws.root, self.ws.git.branch())
        except Exception as e:  # noqa: BLE001 - a notification must never stop the research
            self.log(f"warning: could not build the {event.name!r} notification ({_message(e)}); not sent")
            return
        for url in urls:
            try:
                webhook.post(url, document)
            except Exception as e:  # noqa: BLE001 - any failure of a webhook: warn once, then off
                self.off.add(url)
                self.log(f"warning: the {event.name!r} notification was not sent ({_message(e)}); no more "
                         f"notifications go to {webhook.where(url)} in this loop")


def _message(e: Exception) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
