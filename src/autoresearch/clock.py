"""The training clock: what a run's TIME_BUDGET counts (the `clock` setting).

- `wall`: seconds on the wall clock, as in the reference. Right on a GPU, where the device does
  the work and the CPU only feeds it; on a busy CPU it counts the time other programs took, so
  a loaded run makes fewer steps and looks worse.
- `cpu`: the run's own time on the CPUs (`RunQueueClock`): wall seconds less the seconds the
  training process's threads spent runnable but waiting for a CPU that another program held
  (Linux's per-thread `schedstat`), and never less than the main thread's CPU seconds. On a quiet
  machine it keeps pace with the wall clock, including the time the main thread sleeps while
  its worker threads finish their share; while another program holds a core, the threads it
  keeps waiting stop the clock. Where the kernel does not report run-queue waits (macOS,
  Windows) it is the main thread's CPU seconds (`time.thread_time`), which stops too but also
  leaves out the main thread's own waits for its workers (~10% of the wall time on 2 cores).
  The runner sets OpenMP's passive wait policy for such runs, so a thread waiting for the others
  sleeps instead of spinning on a core that a loaded machine's other programs need.

train.py reads the clock through prepare.py's `training_clock()`. The runner does not trust it:
at the hand-over it reads the main thread's CPU time from the kernel, and the process tree's CPU
time per thread of the run's demand, and holds the larger against budget + allowance (a run that
moved its work to other threads or processes is caught by the second). While the run trains, the
runner kills it at the hard limit counted on the same clock (2 x budget + allowance, as on the
wall clock), and at a wall-clock hard limit `CPU_CLOCK_HARD_FACTOR` times longer than the wall
clock's, so a run that the machine starves still ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil

CLOCKS = ("wall", "cpu")
# The cpu clock's wall-clock hard limit is this many times the wall clock's: a run that gets a fifth
# of its CPU (measured beside four other sessions' tests on 2 cores) still finishes.
CPU_CLOCK_HARD_FACTOR = 5.0
CPU_CLOCK_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # waiting OpenMP threads sleep: no spinning on the clock


def training_clock(kind: str) -> Callable[[], float]:
    """The function train.py times its training with (seconds; only differences mean anything).
    The cpu clock must be read from the thread that trains (train.py's main thread)."""
    if kind != "cpu":
        return time.perf_counter
    return RunQueueClock() if thread_times() is not None else time.thread_time


def thread_times(pid: int | None = None) -> dict[int, tuple[int, int]] | None:
    """(nanoseconds run, nanoseconds runnable but waiting for a CPU) of each thread of process
    `pid` (this one by default), by thread id, from /proc/<pid>/task/<tid>/schedstat; None where
    the kernel has no such count. A thread that ends between the listing and the read is left out."""
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        return None
    times: dict[int, tuple[int, int]] = {}
    for tid in tids:
        try:
            fields = (tasks / tid / "schedstat").read_text().split()
        except OSError:
            continue
        if len(fields) >= 2:
            times[int(tid)] = (int(fields[0]), int(fields[1]))
    return times or None


class RunQueueClock:
    """The cpu clock on Linux: wall seconds less the time this process's threads waited for a CPU,
    counted between readings, and never less than the reading thread's CPU seconds.

    The threads of a parallel operation run side by side and meet at its end. When the machine
    has fewer free cores than the run has threads, they take turns, and the operation is held up
    by about the mean of their waits, so that mean is what is subtracted: the mean over the
    threads that wanted a CPU for at least a tenth of the interval (a pool's idle threads do not
    dilute it). Measured on 2 cores with one kept busy by another program (BENCHMARKS.md, "The
    cpu clock counts run-queue waits"): a 40 s budget made 1.06x the steps per clock second of a
    quiet run, against 1.10x for the main thread's CPU time and 1.20x for the sum of the waits.
    The floor keeps the clock moving under a heavy load, as fast as the main-thread clock it
    replaced. A thread that ended since the last reading takes its waits in that interval along
    (the kernel drops its counts); a training run's worker threads live as long as the run.

    In a virtual machine the hypervisor can also hold a CPU back (`steal` in /proc/stat). The
    kernel leaves that time out of a thread's CPU time, as it leaves out waits, so the mean steal
    of the CPUs the process may run on is subtracted too (0.05% of the time on the machine that
    measured the clock)."""

    WANTED = 0.1  # a thread counts if it ran or waited for this share of the interval

    def __init__(self) -> None:
        self._seconds = 0.0
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        self._threads = thread_times() or {}
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._stolen = stolen_seconds(self._cpus)

    def __call__(self) -> float:
        wall, cpu, threads = time.perf_counter(), time.thread_time(), thread_times() or {}
        stolen = stolen_seconds(self._cpus)
        elapsed = wall - self._wall
        waits = []
        for tid, (ran, waited) in threads.items():
            ran0, waited0 = self._threads.get(tid, (0, 0))
            ran, waited = (ran - ran0) / 1e9, max(0, waited - waited0) / 1e9
            if ran + waited >= self.WANTED * elapsed:
                waits.append(waited)
        waited = sum(waits) / len(waits) if waits else 0.0
        self._seconds += max(cpu - self._cpu, elapsed - waited - max(0.0, stolen - self._stolen))
        self._wall, self._cpu, self._threads, self._stolen = wall, cpu, threads, stolen
        return self._seconds


def stolen_seconds(cpus: list[int], stat: str | None = None) -> float:
    """The mean seconds that the hypervisor held each of `cpus` back while it wanted to run (the
    `steal` column of /proc/stat, or of `stat`), since boot; 0.0 where there is no such count."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return 0.0
    wanted = {f"cpu{c}" for c in cpus}
    steals = []
    for line in stat.splitlines():
        fields = line.split()
        if len(fields) > 8 and fields[0] in wanted:
            steals.append(int(fields[8]))
    return sum(steals) / len(steals) / os.sysconf("SC_CLK_TCK") if steals else 0.0


def main_thread_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid`'s main thread, from the kernel; None if gone."""
    try:
        for thread in psutil.Process(pid).threads():
            if thread.id == pid:
                return thread.user_time + thread.system_time
    except psutil.Error:
        return None
    return None


def tree_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid` and every live descendant; None if it is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def run_clock_seconds(pid: int, demand: float) -> float | None:
    """The cpu clock of a run as the runner holds it: the larger of its main thread's CPU seconds
    and its process tree's CPU seconds per core of demand; None if the process is gone."""
    main = main_thread_seconds(pid)
    tree = tree_seconds(pid)
    if main is None and tree is None:
        return None
    return max(main or 0.0, (tree or 0.0) / max(demand, 1.0))
