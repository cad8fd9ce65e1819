"""The training clock: what a run's TIME_BUDGET counts (the `clock` setting).

- `wall`: seconds on the wall clock, as in the reference. Right on a GPU, where the device does
  the work and the CPU only feeds it; on a busy CPU it counts the time other programs took, so
  a loaded run makes fewer steps and looks worse.
- `cpu`: CPU seconds of the training process's main thread (`time.thread_time`). The main thread
  runs the Python loop and its share of every parallel operation, so on a quiet machine it keeps
  pace with the wall clock; while another program holds a core it is not running, and its clock
  stops with the work. The runner sets OpenMP's passive wait policy for such runs, so a thread
  waiting for the others sleeps instead of spinning on the clock.

train.py reads the clock through prepare.py's `training_clock()`. The runner does not trust it:
at the hand-over it reads the main thread's CPU time from the kernel, and the process tree's CPU
time per thread of the run's demand, and holds the larger against budget + allowance (a run that
moved its work to other threads or processes is caught by the second). While the run trains, the
runner kills it at the hard limit counted on the same clock (2 x budget + allowance, as on the
wall clock), and at a wall-clock hard limit `CPU_CLOCK_HARD_FACTOR` times longer than the wall
clock's, so a run that the machine starves still ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

CLOCKS = ("wall", "cpu")
# The cpu clock's wall-clock hard limit is this many times the wall clock's: a run that gets a fifth
# of its CPU (measured beside four other sessions' tests on 2 cores) still finishes.
CPU_CLOCK_HARD_FACTOR = 5.0
CPU_CLOCK_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # waiting OpenMP threads sleep: no spinning on the clock


def training_clock(kind: str) -> Callable[[], float]:
    """The function train.py times its training with (seconds; only differences mean anything)."""
    return time.thread_time if kind == "cpu" else time.perf_counter


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
