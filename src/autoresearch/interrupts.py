"""Stopping the loop on a signal: Ctrl-C, a service manager's SIGTERM, a closed terminal's SIGHUP.

The first of these raises KeyboardInterrupt in the loop's main thread, whatever it is doing; the
loop then ends the runs under way (train.py and the evaluator run in sessions of their own, so
the terminal's Ctrl-C never reaches them) and leaves its state file for the next start to resume.
Later signals are only acknowledged: a second Ctrl-C must not cut that clean-up short and leave a
training run behind. A signal whose handler is not the default (e.g. `nohup` ignores SIGHUP)
is left as it is.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """While entered (in the main thread), the first of SIGNALS raises KeyboardInterrupt; `received`
    names it. Entered elsewhere it does nothing."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                self._previous[sig] = current
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            raise KeyboardInterrupt(self.received.name)
        print(f"{signal.Signals(signum).name}: still ending the run under way (a few seconds)", file=sys.stderr)

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for Ctrl-C)."""
        return 128 + int(self.received or signal.SIGINT)
