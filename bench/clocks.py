"""The two training clocks (settings `clock`: wall or cpu, clock.py) under the same load.

In one run, two fresh workspaces of the preset that differ only in their clock train the same
train.py, interleaved (wall, cpu, wall, cpu, ...) so that whatever else the machine does hits
both alike. Each clock gets `--runs` runs with the machine as quiet as the benchmark can make it
and `--runs` runs while bench/loadgen.py keeps `--load-cores` cores busy (on for the whole run, or
switched on and off at seeded random intervals with `--random`). No disturbed-run rule is applied:
this measures what each clock alone does to the result.

Printed per clock: val_bpb mean and sigma quiet and loaded, the loaded-minus-quiet shift of the
mean in quiet sigmas, steps, and wall seconds per run (what the clock costs in experiments per
hour). The better clock moves val_bpb least under load.

    python bench/clocks.py [--preset cpu] [--budget 30] [--runs 4] [--load-cores 1] [--random]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import date

from _workspace import machine, prepared_workspace
from loadgen import LoadGenerator

from autoresearch.interference import Interference
from autoresearch.rundir import RunResult
from autoresearch.runner import Runner

CLOCKS = ("wall", "cpu")


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--budget", type=float, default=30.0, help="training seconds per run")
    parser.add_argument("--runs", type=int, default=4, help="runs per clock and condition")
    parser.add_argument("--load-cores", type=int, default=1, help="cores the load keeps busy while on")
    parser.add_argument("--random", action="store_true", help="switch the load on and off at random intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random schedule")
    parser.add_argument("--hard-limit", type=float, default=0.0, help="wall seconds before a run is killed (0: default)")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")
    runners = {}
    for clock in CLOCKS:
        ws, prepared = prepared_workspace(args.preset, args.budget, args.cache, clock=clock, hard_limit=args.hard_limit)
        runners[clock] = (Runner(ws, ws.settings(), prepared.data_sha256), ws.git.head())
    load_text = "on/off at random" if args.random else "on for every loaded run"
    print(f"{args.preset} preset, budget {args.budget:g} s, {args.runs} runs per clock and condition; "
          f"load: {args.load_cores} core(s), {load_text}")
    print(f"{'run':>4} {'clock':>5} {'condition':>9} {'val_bpb':>8} {'steps':>6} {'wall s':>7} {'clock s':>7} "
          f"{'contention':>10}")
    results: dict[tuple[str, str], list[RunResult]] = {(c, k): [] for c in CLOCKS for k in ("quiet", "loaded")}
    count = 0

    def one(clock: str, condition: str) -> None:
        nonlocal count
        count += 1
        runner, commit = runners[clock]
        r = runner.run(f"{count:04d}", commit)
        results[(clock, condition)].append(r)
        m = Interference.from_dict(r.interference)
        print(f"{count:4d} {clock:>5} {condition:>9} {r.val_bpb or float('nan'):8.4f} "
              f"{r.summary.get('num_steps', 0):6.0f} {r.wall_seconds:7.1f} {r.clock_seconds or 0:7.1f} "
              f"{(m.contention if m else 0):10.0%}  {r.outcome if r.outcome != 'ok' else ''}", flush=True)

    with LoadGenerator(args.load_cores) as load:
        if args.random:
            load.random_schedule(args.seed)
        for _ in range(args.runs):
            if not args.random:
                load.off()
            for clock in CLOCKS:
                one(clock, "quiet" if not args.random else "loaded")
            if not args.random:
                load.on()
                for clock in CLOCKS:
                    one(clock, "loaded")
    for clock in CLOCKS:
        quiet = [r for r in results[(clock, "quiet")] if r.val_bpb is not None]
        loaded = [r for r in results[(clock, "loaded")] if r.val_bpb is not None]
        if not loaded:
            print(f"clock={clock}: no loaded run finished")
            continue
        lb = [r.val_bpb for r in loaded]
        line = (f"clock={clock} loaded_mean={statistics.fmean(lb):.4f} loaded_sigma={sd(lb):.4f} "
                f"loaded_steps={statistics.fmean(r.summary.get('num_steps', 0) for r in loaded):.0f} "
                f"loaded_wall_s={statistics.fmean(r.wall_seconds for r in loaded):.1f}")
        if quiet:
            qb = [r.val_bpb for r in quiet]
            sigma_q = sd(qb)
            shift = statistics.fmean(lb) - statistics.fmean(qb)
            line += (f" quiet_mean={statistics.fmean(qb):.4f} quiet_sigma={sigma_q:.4f} "
                     f"quiet_steps={statistics.fmean(r.summary.get('num_steps', 0) for r in quiet):.0f} "
                     f"quiet_wall_s={statistics.fmean(r.wall_seconds for r in quiet):.1f} "
                     f"shift={shift:+.4f} shift_in_quiet_sigmas={shift / sigma_q if sigma_q else float('nan'):+.1f}")
        print(line)


if __name__ == "__main__":
    main()
