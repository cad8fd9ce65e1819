"""Compare train.py hyperparameters at a fixed number of steps, paired by seed.

A 5-minute run's val_bpb moves with the machine's speed in the sitting (the same file made 567 and
706 steps in one afternoon), so single timed runs of two configs compare the machine as much as
the configs. Here every run trains exactly --steps optimizer steps, with the learning-rate
schedule and weight decay driven by steps instead of the clock, so a config's result does not
depend on how fast the machine was. Each config runs once per seed, and its difference from the
first config is taken seed by seed (same initialisation, same data order).

Each run is the cpu preset's train.py (as `autoresearch init` writes it) with the named values
replaced, run directly (`python train.py`, its own in-process evaluation) with one thread, --parallel
runs at a time: on 2 cores two one-thread runs do ~1.3x the steps per second of one two-thread run,
and speed does not enter the result. Not a replacement for timed runs: a change that makes steps
slower or faster (depth, width, batch) must be compared on the clock (bench/preset_sweep.py).

    python bench/fixed_steps.py [--steps 660] [--seeds 42,43] [--parallel 2] [--cache DIR] CONFIG...

A CONFIG is NAME:KEY=VALUE,KEY=VALUE; the first is the reference. With no CONFIG, the screen
recorded in BENCHMARKS.md ("Learning rates and weight decay at a fixed step count") is run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from _workspace import machine, prepared_workspace, with_hyperparameters
from autoresearch.rundir import parse_summary
from preset_sweep import parse_config

# The screen that set the cpu preset's EMBEDDING_LR 0.3 and WEIGHT_DECAY 0.1 (before: 0.6, 0.2);
# 660 steps is what a 300 s run of the preset made on a 2-core AVX512-BF16 machine on 2026-12-03
# (that machine kind made ~1000 on 2026-12-04: its speed varies from sitting to sitting).
BEFORE = "EMBEDDING_LR=0.6,WEIGHT_DECAY=0.2"
DEFAULT_SCREEN = [
    f"before:{BEFORE}",
    "shipped:",
    "emb03:WEIGHT_DECAY=0.2",
    "emb015:EMBEDDING_LR=0.15,WEIGHT_DECAY=0.2",
    "wdecay01:EMBEDDING_LR=0.6",
    f"unemb008:{BEFORE},UNEMBEDDING_LR=0.008",
    "unemb002:WEIGHT_DECAY=0.2,UNEMBEDDING_LR=0.002",
    f"warmdown07:{BEFORE},WARMDOWN_RATIO=0.7",
]

# The two lines of the template that tie the schedule and the end of training to the clock.
TIMED_PROGRESS = "    progress = min(total_training_time / TIME_BUDGET, 1.0)\n"
TIMED_END = "    if step > untimed_steps and total_training_time >= TIME_BUDGET:\n"


@dataclass
class Result:
    config: str
    seed: int
    val_bpb: float
    steps: int
    seconds: float


def fixed_steps(source: str, steps: int) -> str:
    """train.py's source with its schedule and its end driven by the step count."""
    if TIMED_PROGRESS not in source or TIMED_END not in source:
        raise SystemExit("train.py's schedule lines changed; update TIMED_PROGRESS/TIMED_END in bench/fixed_steps.py")
    source = source.replace(TIMED_PROGRESS, f"    progress = min(step / {steps}, 1.0)\n")
    return source.replace(TIMED_END, f"    if step >= {steps}:\n")


def run(root: Path, script: str, config: str, seed: int, env: dict[str, str]) -> Result:
    proc = subprocess.run([sys.executable, script], cwd=root, env=env, capture_output=True, text=True)
    (root / f"{Path(script).stem}.log").write_text(proc.stdout + proc.stderr)
    found = parse_summary(proc.stdout)
    if proc.returncode != 0 or "val_bpb" not in found:
        raise SystemExit(f"{config} (seed {seed}) failed, exit {proc.returncode}: {root / Path(script).stem}.log\n"
                         f"{(proc.stdout + proc.stderr)[-2000:]}")
    return Result(config, seed, float(found["val_bpb"]), int(found["num_steps"]), float(found["training_seconds"]))


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="NAME:KEY=VALUE,... (default: the documented screen)")
    parser.add_argument("--steps", type=int, default=660, help="optimizer steps of every run")
    parser.add_argument("--seeds", default="42,43", help="comma-separated SEED values; each config runs once per seed")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = dict(parse_config(c) for c in (args.configs or DEFAULT_SCREEN))
    ws, _ = prepared_workspace("cpu", 300.0, args.cache)
    template = fixed_steps(ws.train_py.read_text(), args.steps)
    jobs = []
    for seed in seeds:
        for name, values in configs.items():
            script = f"train_{name}_s{seed}.py"
            (ws.root / script).write_text(with_hyperparameters(template, {**values, "SEED": seed}, f"config {name!r}"))
            jobs.append((script, name, seed))
    print(f"machine: {machine()}; {date.today()}; load average {os.getloadavg()[0]:.1f}")
    print(f"fixed steps: cpu preset, {args.steps} steps, seeds {seeds}, {len(configs)} configs, "
          f"{args.parallel} runs at a time; workspace {ws.root}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="autoresearch-fixed-steps-inductor-")}

    def one(job: tuple[str, str, int]) -> Result:
        result = run(ws.root, *job, env)
        print(f"  {result.config:14s} seed {result.seed}: val_bpb {result.val_bpb:.6f} "
              f"({result.steps} steps, {result.seconds:.0f} s)", flush=True)
        return result

    pool = ThreadPoolExecutor(args.parallel)
    try:
        results = list(pool.map(one, jobs))
    finally:  # a failed run ends the screen: the runs under way finish, the queued ones never start
        pool.shutdown(cancel_futures=True)
    bpb = {(r.config, r.seed): r.val_bpb for r in results}
    reference = next(iter(configs))
    print(f"\nval_bpb at {args.steps} steps, and the difference from {reference!r} seed by seed:")
    for name in sorted(configs, key=lambda n: statistics.fmean(bpb[n, s] for s in seeds)):
        diffs = [bpb[name, s] - bpb[reference, s] for s in seeds]
        print(f"RESULT {name:14s} val_bpb {statistics.fmean(bpb[name, s] for s in seeds):.4f} | "
              f"vs {reference}: {' '.join(f'{d:+.4f}' for d in diffs)} (mean {statistics.fmean(diffs):+.4f}) | "
              f"{configs[name] or 'the preset as shipped'}")


if __name__ == "__main__":
    main()
