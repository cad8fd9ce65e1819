"""A made-up research folder: a ledger and run folders with every outcome the harness records.

For the report's tests, its benchmark, and for trying the report or the dashboard without
training anything (`python -m autoresearch.report.synthetic DIR`). The numbers follow the shape
of a real run (a baseline measured three times, slow gains that get rarer, a few crashes and
timeouts, confirmation runs for borderline gains) but mean nothing. Every outcome appears at
least once (see FORCED), so a test on a small research still sees them all.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from autoresearch.ledger import REFERENCE_COLUMNS, Ledger, Row, save_row
from autoresearch.rundir import DIFF_FILE, LOG_FILE, METRICS_FILE, PROPOSAL_FILE, RESULT_FILE
from autoresearch.workspace import LEDGER_FILE

IDEAS = (
    ("TOTAL_BATCH_SIZE", "halve the batch for more optimizer steps", "2**18"),
    ("DEPTH", "one more layer", "9"),
    ("MATRIX_LR", "raise the Muon learning rate", "0.05"),
    ("EMBEDDING_LR", "lower the embedding learning rate", "0.4"),
    ("WARMDOWN_RATIO", "longer warmdown", "0.6"),
    ("ROPE_BASE", "RoPE base 200K", "200000"),
    ("WEIGHT_DECAY", "less weight decay", "0.1"),
    ("INIT_SCALE", "smaller init scale", "0.8"),
    ("WINDOW_PATTERN", "all-long attention windows", '"L"'),
    ("HEAD_DIM", "smaller heads", "64"),
)


FORCED = {1: 0.0, 2: 0.06, 3: 0.075}  # experiments 2, 3 and 4 are a crash, a timeout and an invalid proposal


@dataclass(frozen=True)
class Shape:
    experiments: int = 40
    steps: int = 300  # metrics records per run
    budget: float = 300.0
    baseline: float = 1.0
    sigma: float = 0.0008
    reachable: float = 0.04  # the share of the baseline's val_bpb that changes can win back, at most
    seed: int = 0


def make_research(folder: Path, shape: Shape = Shape(), reference: bool = False) -> Path:
    """Write results.tsv (+ runs/<id>/ unless `reference`) into `folder`; returns the ledger's path."""
    rng = random.Random(shape.seed)  # the ledger's numbers
    noise = random.Random(shape.seed + 1)  # the run folders': the ledger is the same whatever their size
    folder.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.open(folder / LEDGER_FILE)
    clock = datetime(2025, 1, 6, 21, 0, tzinfo=timezone.utc)
    best_commit, best = _sha(rng), shape.baseline
    rows: list[Row] = []
    run_number = 0

    def run(commit: str, value: float | None, status: str, kind: str, description: str, parent: str, gain=None,
            diff: str = "", rule: str = "") -> Row:
        nonlocal clock, run_number
        run_number += 1
        clock += timedelta(seconds=shape.budget + 30 + rng.uniform(0, 20))
        run_id = f"{run_number:04d}"
        row = Row(commit=commit, val_bpb=value, memory_gb=44.0 if value is not None else None, status=status,
                  description=description, run_id=run_id, kind=kind, timestamp=clock.isoformat(timespec="seconds"),
                  parent=parent, proposer="search" if kind != "baseline" else "baseline", gain=gain,
                  training_seconds=shape.budget if value is not None else None, wall_seconds=shape.budget + 25,
                  noise=shape.sigma, rule=rule)
        if not reference:
            _run_folder(folder / "runs" / run_id, row, shape, noise, diff)
        return row

    for _ in range(3):
        rows.append(run(best_commit, shape.baseline + rng.gauss(0, shape.sigma), "keep", "baseline", "baseline", ""))
    for i in range(shape.experiments):
        name, idea, value_text = IDEAS[rng.randrange(len(IDEAS))]
        description = f"{idea} ({name} = {value_text})"
        commit = _sha(rng)
        diff = _diff(name, value_text, rng)
        luck = FORCED.get(i, rng.random())
        if luck < 0.05:
            rows.append(run(commit, None, "crash", "experiment", description, best_commit, diff=diff,
                            rule="train.py exited with code 1"))
            continue
        if luck < 0.07:
            rows.append(run(commit, None, "timeout", "experiment", description, best_commit, diff=diff,
                            rule="killed at the hard limit of 630 s"))
            continue
        if luck < 0.08:
            rows.append(Row(commit=best_commit, val_bpb=None, memory_gb=None, status="invalid", description=description,
                            kind="experiment", timestamp=clock.isoformat(timespec="seconds"), parent=best_commit,
                            proposer="search", rule="changed files other than train.py: prepare.py (reverted)"))
            continue
        headroom = max(0.0, best - shape.baseline * (1 - shape.reachable))  # gains get rarer near what is reachable
        value = best - headroom * rng.uniform(-0.15, 0.3) + rng.gauss(0, shape.sigma)
        se = shape.sigma * math.sqrt(2)  # one run against one (decide.py's rule, with keep_z 2 and confirm_z 1)
        values = [value]
        if se <= best - value < 2 * se:  # borderline: one confirmation run, the mean decides
            values.append(value + rng.gauss(0, shape.sigma))
            se = shape.sigma * math.sqrt(1 / 2 + 1)
        mean = sum(values) / len(values)
        status = "keep" if best - mean >= 2 * se else "discard"
        rule = f"gain {best - mean:.4f} against 2 x se {se:.4f} ({len(values)} run{'s' if len(values) > 1 else ''})"
        for k, v in enumerate(values):
            rows.append(run(commit, v, status, "experiment" if k == 0 else "confirm",
                            description if k == 0 else f"{description} (confirmation run)", best_commit,
                            best - v, diff if k == 0 else "", rule=rule))
        if status == "keep":
            best_commit, best = commit, mean
    ledger.append(*rows)
    if reference:
        lines = ["\t".join(REFERENCE_COLUMNS)]
        for i, r in enumerate(rows):
            if r.kind == "confirm" or (r.kind == "baseline" and i > 0):  # the reference runs its baseline once
                continue
            lines.append(f"{r.commit}\t{r.val_bpb or 0:.6f}\t{r.memory_gb or 0:.1f}\t"
                         f"{'crash' if r.status in ('timeout', 'invalid') else r.status}\t{r.description}")
        ledger.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ledger.path


def _sha(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(7))


def _diff(name: str, value: str, rng: random.Random) -> str:
    line = rng.randint(28, 60)
    return (f"diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
            f"@@ -{line},3 +{line},3 @@\n # --- hyperparameters\n-{name} = old  # before\n"
            f"+{name} = {value}  # <changed>\n # end\n")


def _run_folder(run_dir: Path, row: Row, shape: Shape, rng: random.Random, diff: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_row(run_dir, row)  # as the loop does: the record a lost ledger row is rebuilt from
    crashed = row.status == "crash"
    steps = shape.steps // 3 if crashed else shape.steps
    final = row.val_bpb if row.val_bpb is not None else shape.baseline + 0.05
    lines = []
    for step in range(steps):
        seconds = shape.budget * (step + 1) / shape.steps
        loss = final * 2.2 + 6.0 * math.exp(-seconds / (shape.budget / 12)) + rng.gauss(0, 0.05)
        lines.append(json.dumps({"step": step, "loss": round(loss, 4), "lr": 1.0, "training_seconds": round(seconds, 2),
                                 "progress": round(seconds / shape.budget, 4), "tokens_per_s": 1.6e6}))
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n")
    log = "".join(f"\rstep {s:05d} | loss: {2.5:.6f}    " for s in range(0, steps, max(1, steps // 20)))
    if crashed:
        log += "\nTraceback (most recent call last):\n  File \"train.py\", line 301\nRuntimeError: CUDA out of memory\n"
    else:
        log += f"\n---\nval_bpb:          {final:.6f}\ntraining_seconds: {shape.budget:.1f}\n"
    (run_dir / LOG_FILE).write_text(log)
    if diff:
        (run_dir / DIFF_FILE).write_text(diff)
    if row.kind != "baseline":
        (run_dir / PROPOSAL_FILE).write_text(json.dumps({
            "description": row.description, "hypothesis": "more steps in the same time should lower the loss",
            "params": {}, "tokens": 0, "cost_usd": 0.0, "proposer": row.proposer}))
    outcome = {"keep": "ok", "discard": "ok"}.get(row.status, row.status)
    (run_dir / RESULT_FILE).write_text(json.dumps({
        "run_id": row.run_id, "commit": row.commit, "outcome": outcome, "val_bpb": row.val_bpb,
        "error": row.rule if outcome != "ok" else "", "flags": []}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--experiments", type=int, default=40)
    parser.add_argument("--reference", action="store_true", help="a plain five-column ledger, no run folders")
    args = parser.parse_args()
    path = make_research(args.folder, Shape(experiments=args.experiments), reference=args.reference)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
