"""What else the machine did while a run trained: interference, measured by the runner.

A run's val_bpb depends on how many optimizer steps fit in its budget, so another program that
takes CPU from it makes it look worse, and one that stops makes the next run look better. The
runner measures, from the launch of train.py to its exit:

- `others_cores`: CPU time the machine spent on processes outside the run (and outside the
  harness's own: the loop, the evaluator) per second, in cores. Machine-wide busy time
  (psutil.cpu_times: user, nice, system, irq, softirq, steal; steal is a VM neighbour's) less the
  run's process tree (getrusage of the reaped train.py) less the harness's processes.
- `demand`: the cores the run wants: its threads (OMP_NUM_THREADS, or every core), 1 on a GPU.
- `contention`: the share of that demand that other work competed for:
  max(0, others_cores - (cores - demand)) / demand. Others that fit on cores the run does not use
  count nothing; others that need the run's cores count in full. 0 on a quiet machine.
- `run_share`: the run's own CPU time per second per core of demand (how busy it kept its threads).
- `pressure`: the share of the time some runnable task waited for a CPU (/proc/pressure/cpu
  `some`, Linux 4.20+), None where the kernel does not report it.

The loop (research.py) calls a run disturbed when its contention is above `max_interference`,
or when it made its steps more than `max_slowdown` slower than earlier runs of the same commit
(a cause the CPU counters do not see: memory bandwidth, thermal throttling, a shared GPU).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

PSI_CPU = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class Interference:
    """The interference a run met (see the module's docstring)."""

    seconds: float  # wall time measured over
    cores: int  # the machine's logical cores
    demand: float  # cores the run wants
    others_cores: float
    contention: float
    run_share: float | None = None
    pressure: float | None = None

    def describe(self) -> str:
        """One line for a person: `other processes used 0.9 cores (contention 45%), CPU pressure 60%`."""
        text = f"other processes used {self.others_cores:.1f} of {self.cores} cores (contention {self.contention:.0%})"
        if self.pressure is not None:
            text += f", CPU pressure {self.pressure:.0%}"
        return text

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Interference | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


def run_demand(env: dict[str, str], device: str = "cpu") -> float:
    """The cores a run wants: 1 on a GPU (a thread that feeds it), else its threads (capped)."""
    cores = psutil.cpu_count() or 1
    if device in ("cuda", "mps"):
        return 1.0
    try:
        threads = int(env.get("OMP_NUM_THREADS") or cores)
    except ValueError:
        threads = cores
    return float(max(1, min(threads, cores)))


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    busy = t.user + t.system
    for name in ("nice", "irq", "softirq", "steal"):
        busy += getattr(t, name, 0.0)
    # Linux counts guest time inside user and nice; it is not a second use of the CPU.
    return busy - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pressure_us() -> float | None:
    try:
        for line in PSI_CPU.read_text().splitlines():
            if line.startswith("some "):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Meter:
    """Measures interference between `start()` (just before train.py is launched) and `stop()`
    (just after it was reaped: its CPU time is then in this process's children's usage)."""

    def __init__(self, demand: float) -> None:
        self.demand = demand
        self._start: tuple[float, float, float, float, float | None] | None = None

    def start(self) -> None:
        self._start = (time.monotonic(), _busy_seconds(), _children_seconds(), _self_seconds(), _pressure_us())

    def stop(self, harness_pids: tuple[int, ...] = ()) -> Interference | None:
        """The interference since start(). `harness_pids`: live processes of the harness that ran
        beside the run (the evaluator), whose CPU time is not the others'."""
        if self._start is None:
            return None
        t0, busy0, children0, self0, psi0 = self._start
        seconds = time.monotonic() - t0
        if seconds <= 0:
            return None
        run = _children_seconds() - children0
        harness = _self_seconds() - self0 + sum(_cpu_seconds(pid) for pid in harness_pids)
        others = max(0.0, _busy_seconds() - busy0 - run - harness)
        cores = psutil.cpu_count() or 1
        others_cores = others / seconds
        spare = max(0.0, cores - self.demand)
        contention = min(1.0, max(0.0, others_cores - spare) / self.demand)
        psi1 = _pressure_us()
        pressure = None if psi0 is None or psi1 is None else min(1.0, (psi1 - psi0) / 1e6 / seconds)
        return Interference(seconds=round(seconds, 2), cores=cores, demand=self.demand,
                            others_cores=round(others_cores, 3), contention=round(contention, 3),
                            run_share=round(run / seconds / self.demand, 3), pressure=_round(pressure))


def _cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def describe_load() -> str:
    """The machine's load now, for messages: `load average 1.9 on 2 cores`."""
    try:
        one, _, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.1f} on {psutil.cpu_count() or 1} cores"
