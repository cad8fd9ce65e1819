"""What an experiment costs beyond its training budget, and the 5-minute CPU baseline.

Runs the baseline of a fresh cpu-preset workspace --runs times through the research loop, as
`autoresearch loop` does, and reports:
- per run: wall time (launch to exit), hand-over time, training seconds, the runner's
  out-of-process evaluation and train.py's informational in-process one, val_bpb;
- overhead = (loop wall time per run - budget) / budget: start-up, warm-up step, hand-over
  export, both evaluations, bookkeeping; and experiments per hour at this budget;
- the baseline's val_bpb: mean, standard deviation and range over the runs (its run-to-run noise);
- out-of-process / in-process evaluation time.

    python bench/overhead.py [--budget 300] [--runs 3] [--cache DIR]

Targets: overhead <= 10% at the 5-minute budget (issue: loop), and no worse than the 3.6% the
single-worker loop measured before it became the one driver over an in-process executor (issue:
one loop); evaluation out of process <= 1.5x in process (issue: tamper-proof evaluation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date

from _workspace import machine, prepared_workspace
from autoresearch.loop import Loop
from autoresearch.rundir import INPROCESS_RECORD, RunResult

TARGET_OVERHEAD = 0.10
BEFORE_ONE_LOOP = 0.036  # BENCHMARKS.md, 2026-11-27: the single loop's overhead at a 300 s budget
TARGET_EVAL_RATIO = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="baseline runs")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")
    ws, _ = prepared_workspace("cpu", args.budget, args.cache, baseline_runs=args.runs)
    print(f"workspace {ws.root}: cpu preset, budget {args.budget:g} s, {args.runs} baseline runs")

    with Loop.open(ws.root, tag="bench", log=lambda m: print(f"  {m}")) as loop:
        print(f"  executor: {loop.ex.name}")
        t0 = time.monotonic()
        loop.ensure_baseline()
        per_run = (time.monotonic() - t0) / args.runs

    results = [RunResult.load(d) for d in sorted(ws.runs_dir.iterdir()) if d.name.isdigit()]
    print(f"{'run':>5} {'wall s':>8} {'handover s':>10} {'train s':>8} {'eval out s':>10} {'eval in s':>9} {'val_bpb':>9}")
    ratios = []
    for r in results:
        inproc = json.loads((ws.runs_dir / r.run_id / INPROCESS_RECORD).read_text())["seconds"]
        ratios.append(r.eval_seconds / inproc)
        print(f"{r.run_id:>5} {r.wall_seconds:8.1f} {r.handover_seconds:10.1f} "
              f"{r.summary['training_seconds']:8.1f} {r.eval_seconds:10.1f} {inproc:9.1f} {r.val_bpb:9.4f}")
    bpb = [r.val_bpb for r in results]
    overhead = (per_run - args.budget) / args.budget
    ratio = statistics.fmean(ratios)
    print(f"baseline val_bpb: mean {statistics.fmean(bpb):.4f}, sd {statistics.stdev(bpb) if len(bpb) > 1 else 0:.4f}, "
          f"range {max(bpb) - min(bpb):.4f} over {len(bpb)} runs")
    print(f"RESULT overhead {per_run - args.budget:.1f} s per {args.budget:g} s run = {100 * overhead:.1f}% "
          f"(target {100 * TARGET_OVERHEAD:.0f}%: {overhead / TARGET_OVERHEAD:.2f}x of it); "
          f"{3600 / per_run:.1f} experiments/hour")
    print(f"RESULT overhead vs the single loop before the one driver ({100 * BEFORE_ONE_LOOP:.1f}%): "
          f"{overhead / BEFORE_ONE_LOOP:.2f}x")
    # The loop's own share: what a run costs beyond train.py (launch to exit) and the evaluation,
    # i.e. the node workspace, containment, git and the ledger.
    inside = statistics.fmean(r.wall_seconds + (r.eval_seconds or 0.0) for r in results)
    print(f"RESULT the loop's own time per run (beyond train.py and the evaluation): {per_run - inside:.2f} s "
          f"= {100 * (per_run - inside) / args.budget:.2f}% of the budget")
    print(f"RESULT evaluation out of process / in process: {ratio:.2f}x (target <= {TARGET_EVAL_RATIO}x: "
          f"{'met' if ratio <= TARGET_EVAL_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
