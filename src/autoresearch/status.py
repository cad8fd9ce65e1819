"""The research at a glance: computed from the ledger alone, shown by `autoresearch status`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

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
    kept: int
    counts: dict[str, int]
    hours: float
    runs: int
    cost_usd: float = 0.0  # what the proposals cost (LLM proposers), failed ones included
    tokens: int = 0
    paid_proposals: int = 0  # proposals with a cost or tokens recorded

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
    best_row = None
    best_value = statistics.fmean(base) if base else None
    by_commit: dict[str, list[float]] = {}
    for r in rows:
        if r.val_bpb is not None and r.status in ("keep", "discard"):
            by_commit.setdefault(r.commit, []).append(r.val_bpb)
    for r in kept:
        value = statistics.fmean(by_commit.get(r.commit, [r.val_bpb or float("inf")]))
        if best_value is None or value < best_value:
            best_row, best_value = r, value
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
        kept=len(kept), counts=counts, hours=hours, runs=len(rows),
        cost_usd=sum(r.cost_usd or 0.0 for r in rows), tokens=sum(r.tokens or 0 for r in rows),
        paid_proposals=sum(1 for r in rows if r.cost_usd or r.tokens),
    )


def rule_text(settings: Settings, sigma: float) -> str:
    se1 = sigma * (2 ** 0.5)  # one run against one run
    return (f"keep when the gain is >= {settings.keep_z:g} standard errors of the noise "
            f"(sigma {sigma:.4f}; {settings.keep_z * se1:.4f} bpb for one run against one); "
            f"gains between {settings.confirm_z:g} and {settings.keep_z:g} standard errors get up to "
            f"{settings.confirm_runs} confirmation runs, whose mean decides")


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
    head.add_row("experiments", f"{s.experiments} ({counts or 'none yet'}){rate}")
    if s.paid_proposals:
        per = s.cost_usd / s.paid_proposals
        head.add_row("LLM spend", f"{s.cost_usd:.4f} USD, {s.tokens:,} tokens over {s.paid_proposals} proposals "
                                  f"({per:.4f} USD each)")
    if settings is not None:
        head.add_row("rule", rule_text(settings, s.sigma))
    console.print(head)
    table = Table(title=f"last {min(last, len(rows))} runs", title_justify="left")
    paid = any(r.cost_usd or r.tokens for r in rows[-last:])
    for col in ("run", "commit", "val_bpb", "gain", "status", "description", "rule") + (("tokens", "USD") if paid else ()):
        table.add_column(col, overflow="fold")
    colours = {"keep": "green", "discard": "yellow", "crash": "red", "timeout": "magenta", "invalid": "red"}
    for r in rows[-last:]:
        table.add_row(r.run_id, r.short, f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-",
                      f"{r.gain:+.4f}" if r.gain is not None else "",
                      f"[{colours.get(r.status, 'white')}]{r.status}[/]", r.description, r.rule,
                      *((f"{r.tokens:,}" if r.tokens else "", f"{r.cost_usd:.4f}" if r.cost_usd else "") if paid else ()))
    console.print(table)
