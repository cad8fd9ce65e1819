"""A load generator: processes that each keep one core busy, switched on and off on purpose.

Tests and benchmarks use it to make the machine busy when they choose, instead of hoping for a
quiet one: `on()`/`off()` by hand (deterministic in timing), or a seeded random schedule (`run`)
that switches the load on and off at random intervals, as other programs on a laptop do.

    with LoadGenerator(cores=1) as load:
        load.on()      # one core busy from now
        ...
        load.off()

    python -m bench.loadgen --cores 1 --seconds 600 --seed 0   # a random schedule, from a shell
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time

BURN = "while True: pass"


class LoadGenerator:
    """`cores` processes that burn CPU while the load is on (stopped with SIGSTOP while off)."""

    def __init__(self, cores: int = 1) -> None:
        self.cores = cores
        self.procs: list[subprocess.Popen] = []
        self.is_on = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.switches: list[tuple[float, bool]] = []  # (time.monotonic(), on) of every switch

    def __enter__(self) -> LoadGenerator:
        for _ in range(self.cores):
            proc = subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            os.kill(proc.pid, signal.SIGSTOP)
            self.procs.append(proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def on(self) -> None:
        self._signal(signal.SIGCONT, True)

    def off(self) -> None:
        self._signal(signal.SIGSTOP, False)

    def _signal(self, sig: signal.Signals, on: bool) -> None:
        for proc in self.procs:
            os.kill(proc.pid, sig)
        self.is_on = on
        self.switches.append((time.monotonic(), on))

    def cpu_seconds(self) -> float:
        """CPU time the load has used so far."""
        import psutil

        total = 0.0
        for proc in self.procs:
            try:
                t = psutil.Process(proc.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def random_schedule(self, seed: int, on_s: tuple[float, float] = (5.0, 30.0),
                        off_s: tuple[float, float] = (5.0, 30.0)) -> None:
        """Switch the load on and off in a thread, each phase lasting a random time from its range."""
        rng = random.Random(seed)

        def switch() -> None:
            while not self._stop.is_set():
                self.on()
                if self._stop.wait(rng.uniform(*on_s)):
                    break
                self.off()
                if self._stop.wait(rng.uniform(*off_s)):
                    break
            self.off()

        self._thread = threading.Thread(target=switch, name="load-schedule", daemon=True)
        self._thread.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=1, help="cores kept busy while the load is on")
    parser.add_argument("--seconds", type=float, default=600, help="how long to run")
    parser.add_argument("--seed", type=int, help="switch on and off at seeded random intervals (default: always on)")
    args = parser.parse_args()
    # The burners run in sessions of their own: on `kill` exit through the `with` so they die too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LoadGenerator(args.cores) as load:
        if args.seed is None:
            load.on()
        else:
            load.random_schedule(args.seed)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
