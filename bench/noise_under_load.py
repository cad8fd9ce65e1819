"""The noise estimate on a busy machine: baseline repeats quiet and under a load, with and without
the measures against interference (docs/decisions.md, "A busy machine").

In one run, on one fresh workspace of the preset:
1. `--repeats` runs of the baseline with the machine as quiet as the benchmark can make it;
2. `--loaded` runs of the same commit while bench/loadgen.py keeps `--load-cores` cores busy,
   switched on and off at seeded random intervals (`--seed`);
then the keep rule's noise estimate from each:
- quiet: the pooled sigma of the quiet runs;
- loaded, measures off: the sigma of the first `--repeats` loaded runs, as the loop would have
  taken them before the measures existed;
- loaded, measures on: the loop's rule replayed on the loaded runs in order: a run whose
  contention is above max_interference (on the wall clock only: on the cpu clock others' CPU use
  does not shorten training), or whose steps are max_slowdown slower than the median of the runs
  kept so far, is set aside and the next one taken, disturbed_retries times per run at
  most; sigma pooled robustly. No extra training: the same runs, another rule.
Each run's val_bpb, steps, contention and slowdown are printed; the closing lines give each sigma
and its ratio to the quiet one (target: measures on <= 2x quiet).

    python bench/noise_under_load.py [--preset cpu] [--budget 60] [--repeats 4] [--loaded 8] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import date

from _workspace import machine, prepared_workspace
from loadgen import LoadGenerator

from autoresearch.decide import pooled_sigma
from autoresearch.interference import Interference
from autoresearch.rundir import RunResult
from autoresearch.runner import Runner


def speed(r: RunResult) -> float | None:
    steps, seconds = r.summary.get("num_steps"), r.summary.get("training_seconds")
    return steps / seconds if steps and seconds else None


def contention(r: RunResult) -> float:
    measured = Interference.from_dict(r.interference)
    return measured.contention if measured else 0.0


def replay(runs: list[RunResult], need: int, max_interference: float, max_slowdown: float,
           retries: int, clock: str = "wall") -> tuple[list[RunResult], int]:
    """The runs the loop's rule would keep, in order, and how many runs it took to get them.

    As research.disturbance: contention above max_interference sets a run aside on the wall clock
    only (on the cpu clock others' CPU use does not shorten training); on either clock, steps per
    second more than max_slowdown below the median of the runs kept so far."""
    kept: list[RunResult] = []
    set_aside = 0
    for used, r in enumerate(runs, start=1):
        speeds = [s for s in (speed(k) for k in kept) if s]
        slow = 1 - speed(r) / statistics.median(speeds) if speeds and speed(r) else 0.0
        disturbed = (clock == "wall" and contention(r) > max_interference) or slow > max_slowdown
        if disturbed and set_aside < retries * need:
            set_aside += 1
            continue
        kept.append(r)  # undisturbed, or disturbed with no re-runs left: used as it is, as the loop does
        if len(kept) == need:
            return kept, used
    return kept, len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per run")
    parser.add_argument("--repeats", type=int, default=4, help="runs a noise estimate is made of")
    parser.add_argument("--loaded", type=int, default=8, help="runs made under the load")
    parser.add_argument("--load-cores", type=int, default=1, help="cores the load keeps busy while on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the load's on/off schedule")
    parser.add_argument("--clock", choices=("wall", "cpu"), help="the training clock (default: the preset's)")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")
    ws, prepared = prepared_workspace(args.preset, args.budget, args.cache, clock=args.clock)
    settings = ws.settings()
    runner = Runner(ws, settings, prepared.data_sha256)
    commit = ws.git.head()
    print(f"workspace {ws.root}: {args.preset} preset, budget {args.budget:g} s on the {settings.clock} clock; load: {args.load_cores} core(s), "
          f"on/off at random 5-30 s intervals (seed {args.seed})")
    print(f"{'run':>5} {'condition':>9} {'val_bpb':>9} {'steps':>6} {'contention':>10} {'pressure':>8} {'wall s':>7}")
    quiet: list[RunResult] = []
    loaded: list[RunResult] = []

    def one(condition: str, out: list[RunResult]) -> None:
        run_id = f"{len(quiet) + len(loaded) + 1:04d}"
        r = runner.run(run_id, commit)
        out.append(r)
        m = Interference.from_dict(r.interference)
        pressure = f"{m.pressure:.0%}" if m and m.pressure is not None else "-"
        print(f"{run_id:>5} {condition:>9} {r.val_bpb or 0:9.4f} {r.summary.get('num_steps', 0):6.0f} "
              f"{contention(r):10.0%} {pressure:>8} {r.wall_seconds:7.1f}", flush=True)

    for _ in range(args.repeats):
        one("quiet", quiet)
    with LoadGenerator(args.load_cores) as load:
        load.random_schedule(args.seed)
        for _ in range(args.loaded):
            one("loaded", loaded)
    need = args.repeats
    sigma_quiet = pooled_sigma([[r.val_bpb for r in quiet]], 0.0)
    first = loaded[:need]
    sigma_off = pooled_sigma([[r.val_bpb for r in first]], 0.0)
    kept, used = replay(loaded, need, settings.max_interference, settings.max_slowdown, settings.disturbed_retries,
                        settings.clock)
    mean_quiet = statistics.fmean(r.val_bpb for r in quiet)
    print(f"sigma_quiet={sigma_quiet:.5f} mean={mean_quiet:.4f} over {len(quiet)} runs")
    print(f"sigma_loaded_measures_off={sigma_off:.5f} ratio={sigma_off / sigma_quiet:.2f} "
          f"mean={statistics.fmean(r.val_bpb for r in first):.4f} over {len(first)} runs")
    disturbed = used - len(kept)  # set aside by the replayed rule
    if len(kept) < 2:
        print(f"sigma_loaded_measures_on=unknown: {disturbed} of {len(loaded)} loaded runs were set aside as "
              f"disturbed; the loop would run more (or, after {settings.disturbed_retries} re-runs per run, use them flagged)")
        return
    short = f" (only {len(kept)} of the {need} it needs: the loop would run more)" if len(kept) < need else ""
    sigma_on = pooled_sigma([[r.val_bpb for r in kept]], 0.0)
    print(f"sigma_loaded_measures_on={sigma_on:.5f} ratio={sigma_on / sigma_quiet:.2f} "
          f"mean={statistics.fmean(r.val_bpb for r in kept):.4f} over {len(kept)} runs kept of {used} made{short}, "
          f"{disturbed} set aside as disturbed (target ratio <= 2)")


if __name__ == "__main__":
    main()
