"""The research at a glance: computed from the ledger alone, shown by `autoresearch status`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from autoresearch import decide
from autoresearch.decide import pooled_sigma
from autoresearch.ledger import Row
from autoresearch.settings import Settings


@dataclass(frozen=True)
class Summary:
    baseline: float | None
    baseline_runs: int
    best: float | None
    best_commit: str
    best_description: str
    sigma: float
    experiments: int  # proposals decided (baseline and confirmation runs excluded)
    kept: int  # simplifications included
    simplifications: int  # kept because train.py got simpler at an equal result
    complexity: int | None  # syntax-tree nodes of the best's train.py
    baseline_complexity: int | None
    counts: dict[str, int]
    hours: float
    runs: int

    @property
    def gain(self) -> float | None:
        return None if self.baseline is None or self.best is None else self.baseline - self.best

    @property
    def per_hour(self) -> float | None:
        return self.experiments / self.hours if self.hours > 0 else None


def summarize(rows: list[Row], min_noise: float = 0.0) -> Summary:
    base = [r.val_bpb for r in rows if r.kind == "baseline" and r.val_bpb is not None]
    experiments = [r for r in rows if r.kind == "experiment"]
    kept = [r for r in experiments if r.status == "keep"]
    by_commit: dict[str, list[float]] = {}
    for r in rows:
        if r.val_bpb is not None and r.status in ("keep", "discard"):
            by_commit.setdefault(r.commit, []).append(r.val_bpb)
    # The best is the commit the research stands on: the last one kept. A kept simplification may
    # measure a little worse than the commit before it; it is the best all the same.
    best_row = kept[-1] if kept else None
    best_value = statistics.fmean(base) if base else None
    if best_row is not None:
        best_value = statistics.fmean(by_commit.get(best_row.commit, [best_row.val_bpb or float("inf")]))
    base_nodes = next((r.complexity for r in rows if r.kind == "baseline" and r.complexity is not None), None)
    if not base:  # a reference ledger: no baseline rows; its first row is the baseline
        first = next((r for r in rows if r.val_bpb is not None), None)
        base = [first.val_bpb] if first else []
    counts: dict[str, int] = {}
    for r in experiments:
        counts[r.status] = counts.get(r.status, 0) + 1
    stamps = [datetime.fromisoformat(r.timestamp) for r in rows if r.timestamp]
    hours = (max(stamps) - min(stamps)).total_seconds() / 3600 if len(stamps) > 1 else 0.0
    return Summary(
        baseline=statistics.fmean(base) if base else None, baseline_runs=len(base),
        best=best_value, best_commit=best_row.commit if best_row else (rows[0].commit if rows else ""),
        best_description=best_row.description if best_row else "baseline",
        sigma=pooled_sigma(list(by_commit.values()), min_noise), experiments=len(experiments),
        kept=len(kept), simplifications=sum(r.rule == "simplification" for r in kept),
        complexity=best_row.complexity if best_row is not None else base_nodes, baseline_complexity=base_nodes,
        counts=counts, hours=hours, runs=len(rows),
    )


def rule_text(settings: Settings, sigma: float) -> str:
    """The keep rule in words with its numbers (decide.rule_text)."""
    return decide.rule_text(settings, sigma)


def render(rows: list[Row], settings: Settings | None, last: int = 12) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = summarize(rows, settings.min_noise if settings else 0.0)
    if not rows:
        console.print("no runs yet: start with `autoresearch loop` (or `autoresearch run`)")
        return
    head = Table.grid(padding=(0, 2))
    head.add_row("baseline", f"{s.baseline:.6f} ({s.baseline_runs} runs)" if s.baseline is not None else "-")
    head.add_row("best", f"{s.best:.6f}  {s.best_commit}  {s.best_description}" if s.best is not None else "-")
    if s.gain is not None:
        head.add_row("gain", f"{s.gain:+.6f} bpb ({100 * s.gain / s.baseline:+.2f}%)")
    head.add_row("noise", f"sigma {s.sigma:.6f} (pooled over repeated runs)")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    rate = f", {s.per_hour:.1f}/hour" if s.per_hour else ""
    simpler = f", {s.simplifications} of the kept as simplifications" if s.simplifications else ""
    head.add_row("experiments", f"{s.experiments} ({counts or 'none yet'}{simpler}){rate}")
    if s.complexity is not None:
        since = (f" ({s.complexity - s.baseline_complexity:+d} since the baseline)"
                 if s.baseline_complexity is not None else "")
        head.add_row("train.py", f"{s.complexity} syntax-tree nodes{since}")
    if settings is not None:
        head.add_row("rule", rule_text(settings, s.sigma))
    console.print(head)
    table = Table(title=f"last {min(last, len(rows))} runs", title_justify="left")
    for col in ("run", "commit", "val_bpb", "gain", "nodes", "memory", "status", "description", "why"):
        table.add_column(col, overflow="fold")
    colours = {"keep": "green", "discard": "yellow", "crash": "red", "timeout": "magenta", "invalid": "red"}
    for r in rows[-last:]:
        table.add_row(r.run_id, r.short, f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-",
                      f"{r.gain:+.4f}" if r.gain is not None else "",
                      f"{r.complexity_delta:+d}" if r.complexity_delta is not None else "",
                      f"{r.memory_delta:+.2f} GB" if r.memory_delta is not None else "",
                      f"[{colours.get(r.status, 'white')}]{r.status}[/]", r.description, r.why)
    console.print(table)
