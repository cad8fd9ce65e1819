"""Report rendering time for a long research: 1,000 experiments, every one with its run folder.

Generates a synthetic research (autoresearch.report.synthetic) in a temporary folder: the
ledger, and per run a metrics.jsonl with one record per training step (953 by default, the
reference's H100 step count), a train.log, a diff and a proposal. Then times `autoresearch
report` on it (load + progress.png + report.html), best of a few repeats, on one core.

    python bench/report.py [--experiments 1000] [--steps 953] [--repeats 3]

Target (issue: seeing the research): under 5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from autoresearch.report import reading
from autoresearch.report.build import build
from autoresearch.report.synthetic import Shape, make_research
from autoresearch.rundir import METRICS_FILE

TARGET_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=953, help="metrics records per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory(prefix="autoresearch-bench-report-") as tmp:
        folder = Path(tmp) / "research"
        started = time.perf_counter()
        make_research(folder, Shape(experiments=args.experiments, steps=args.steps))
        made = time.perf_counter() - started
        research = reading.load(folder)
        metrics_mb = sum((r.run_dir / METRICS_FILE).stat().st_size for r in research.records
                         if r.run_dir is not None) / 1e6
        print(f"machine: {platform.processor() or platform.machine()}, 1 core; research: {len(research.records)} runs "
              f"({research.summary.experiments} experiments, {research.summary.kept} kept), "
              f"{args.steps} metrics records per run ({metrics_mb:.0f} MB of metrics); generated in {made:.1f} s")
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            built = build(folder)
            times.append(time.perf_counter() - started)
        best = min(times)
        print(f"report: {best:.2f} s (best of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)}); "
              f"report.html {built.report.stat().st_size / 1e6:.1f} MB, progress.png {built.progress.stat().st_size / 1e3:.0f} kB")
        print(f"ratio to the {TARGET_S:g} s target: {best / TARGET_S:.2f} ({'met' if best < TARGET_S else 'MISSED'})")


if __name__ == "__main__":
    main()
