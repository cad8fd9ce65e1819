"""Experiments per hour with 1 and 2 local workers, and what the coordinator costs per experiment.

For each worker count, a fresh workspace on the given preset runs its baseline, then
--experiments search proposals through the loop, as `autoresearch loop --workers N` runs them
(1 worker: the in-process executor; 2: two node processes of the local executor). Reported per worker count:
- experiments/hour over the experiment phase (baseline excluded), and its ratio to 1 worker;
- coordinator CPU seconds per experiment (its own process: proposing, committing, the ledger,
  deciding; the runs are other processes) and its wall time per experiment outside the
  executor's wait (the time a free slot waits for the coordinator);
- idle slot-seconds per experiment: worker slots x phase time minus the runs' own wall time;
- the runs' mean training steps (parallel runs share the CPU, so each gets fewer steps).

    python bench/scale.py [--preset tiny] [--budget 10] [--experiments 6] [--cache DIR]

On a 2-core CPU machine, 2 workers split the cores: each run gets half, so the gain in
experiments/hour comes from overlapping each run's fixed costs (start-up, evaluation), not from
more compute. The ratio to watch on a GPU machine is workers x.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import date

from _workspace import machine, prepared_workspace
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.proposers.search import SearchProposer
from autoresearch.research import Limits
from autoresearch.rundir import RunResult


class TimedWait:
    """Counts the time the loop spends in its executor's wait (the rest is the loop's own)."""

    def __init__(self, executor) -> None:
        self.wait = executor.wait
        self.waited = 0.0
        executor.wait = self

    def __call__(self, timeout: float):
        t = time.monotonic()
        try:
            return self.wait(timeout)
        finally:
            self.waited += time.monotonic() - t


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(workers: int, args: argparse.Namespace) -> dict:
    """The loop as `autoresearch loop --workers N` runs it (one worker: the in-process executor)."""
    ws, _ = prepared_workspace(args.preset, args.budget, args.cache, baseline_runs=1)
    with Loop.open(ws.root, tag=f"bench{workers}", log=lambda m: print(f"  [{workers}w] {m}"),
                   workers=workers) as loop:
        loop.ensure_baseline()
        timed = TimedWait(loop.ex)
        cpu0, t0 = cpu_seconds(), time.monotonic()
        done = loop.run(SearchProposer(seed=0), Limits(max_experiments=args.experiments))
        phase, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    rows = [r for r in Ledger.open(ws.ledger_path).rows if r.kind != "baseline"]
    runs = [RunResult.load(ws.runs_dir / r.run_id) for r in rows if r.run_id]
    busy = sum(r.wall_seconds for r in runs if r)
    steps = [r.summary.get("num_steps") for r in runs if r and r.summary.get("num_steps")]
    return {
        "workers": workers, "executor": loop.ex.name, "experiments": done, "phase_s": phase,
        "per_hour": done / phase * 3600, "coordinator_cpu_s": cpu / done,
        "coordinator_wall_s": (phase - timed.waited) / done,
        "idle_slot_s": (workers * phase - busy) / done, "steps": statistics.fmean(steps) if steps else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--budget", type=float, default=10.0, help="training seconds per run")
    parser.add_argument("--experiments", type=int, default=6, help="experiments per worker count")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")
    print(f"preset {args.preset}, budget {args.budget:g} s, {args.experiments} experiments per worker count")
    results = [measure(n, args) for n in (1, 2)]
    base = results[0]["per_hour"]
    print(f"{'workers':>7} {'executor':>10} {'exp/h':>7} {'x 1 worker':>10} {'coord cpu s/exp':>15} {'coord wall s/exp':>16} "
          f"{'idle slot s/exp':>15} {'steps/run':>9}")
    for r in results:
        print(f"{r['workers']:>7} {r['executor']:>10} {r['per_hour']:7.1f} {r['per_hour'] / base:10.2f} {r['coordinator_cpu_s']:15.3f} "
              f"{r['coordinator_wall_s']:16.3f} {r['idle_slot_s']:15.2f} {r['steps']:9.0f}")


if __name__ == "__main__":
    main()
