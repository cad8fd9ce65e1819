"""The research at a glance: computed from the ledger alone, shown by `autoresearch status`.

`summarize` is the one place where the headline numbers (baseline, best, gain, keep rate,
experiments per hour, cost) and the running best are computed; the terminal status, the HTML
report and the dashboard all show this same `Summary`, so they can never disagree.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import TextIO
from datetime import datetime, timedelta

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
    counts: dict[str, int]
    hours: float
    runs: int
    cost_usd: float | None = None  # what the proposals cost (LLM proposers); None when none recorded one
    frontier: tuple[float | None, ...] = ()  # the running best after each ledger row (None before any)
    simplifications: int = 0  # kept because train.py got simpler at an equal result
    complexity: int | None = None  # syntax-tree nodes of the best's train.py
    baseline_complexity: int | None = None
    tokens: int = 0  # LLM tokens of the proposals, failed ones included
    paid_proposals: int = 0  # proposals with a cost or tokens recorded
    workers: int = 1  # runs at once in the latest runs (parallel runs slow each other)
    baseline_steps: float | None = None  # mean training steps of the baseline runs made that many at once
    disturbed: int = 0  # runs set aside because other work disturbed them (run again, never judged)
    interference: float | None = None  # median share of its CPU others competed for, over the last runs

    @property
    def gain(self) -> float | None:
        return None if self.baseline is None or self.best is None else self.baseline - self.best

    @property
    def gain_percent(self) -> float | None:
        return None if self.gain is None or not self.baseline else 100 * self.gain / self.baseline

    @property
    def per_hour(self) -> float | None:
        return self.experiments / self.hours if self.hours > 0 else None

    @property
    def keep_rate(self) -> float | None:
        return self.kept / self.experiments if self.experiments else None


def commit_means(rows: list[Row]) -> dict[str, list[float]]:
    """val_bpb of every measured run (keep/discard), grouped by commit: the repeats noise is pooled over."""
    by_commit: dict[str, list[float]] = {}
    for r in rows:
        if r.val_bpb is not None and r.status in ("keep", "discard") and r.kind != "disturbed":
            by_commit.setdefault(r.commit, []).append(r.val_bpb)
    return by_commit


def _baseline_values(rows: list[Row]) -> list[float]:
    base = [r.val_bpb for r in rows if r.kind == "baseline" and r.val_bpb is not None]
    if not base:  # a reference ledger: no baseline rows; its first measured row is the baseline
        first = next((r for r in rows if r.val_bpb is not None), None)
        base = [first.val_bpb] if first else []
    return base


def _frontier(rows: list[Row], baseline: float | None, by_commit: dict[str, list[float]]) -> list[float | None]:
    """The best after each row: the baseline mean, then the mean of each kept commit in turn.

    The best is the commit the research stands on: the last one kept. A kept simplification may
    measure a little worse than the commit before it; it is the best all the same."""
    best: float | None = None
    out: list[float | None] = []
    has_baseline_rows = any(r.kind == "baseline" for r in rows)
    for i, r in enumerate(rows):
        value = None
        if r.val_bpb is not None and (r.kind == "baseline" or (not has_baseline_rows and best is None)):
            value = baseline
        elif r.kind in ("experiment", "rebaseline", "control") and r.status == "keep" and r.val_bpb is not None:
            value = statistics.fmean(by_commit.get(r.commit, [r.val_bpb]))  # a rebaseline or control: the best re-measured
        if value is not None and (best is None or r.kind in ("experiment", "rebaseline", "control")):
            best = value
        out.append(best)
    return out


def _hours(rows: list[Row]) -> float:
    """Wall time the ledger spans: from the start of the first run (its end minus its duration) to the last end."""
    ends = [(datetime.fromisoformat(r.timestamp), r.wall_seconds or 0.0) for r in rows if r.timestamp]
    if not ends:
        return 0.0
    start = min(end - timedelta(seconds=wall) for end, wall in ends)
    return max(0.0, (max(end for end, _ in ends) - start).total_seconds() / 3600)


def summarize(rows: list[Row], min_noise: float = 0.0) -> Summary:
    by_commit = commit_means(rows)
    base = _baseline_values(rows)
    baseline = statistics.fmean(base) if base else None
    frontier = _frontier(rows, baseline, by_commit)
    experiments = [r for r in rows if r.kind == "experiment"]
    kept = [r for r in experiments if r.status == "keep"]
    best_row = kept[-1] if kept else None
    base_nodes = next((r.complexity for r in rows if r.kind == "baseline" and r.complexity is not None), None)
    counts: dict[str, int] = {}
    for r in experiments:
        counts[r.status] = counts.get(r.status, 0) + 1
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    workers = (rows[-1].workers or 1) if rows else 1
    steps = [r.num_steps for r in rows if r.kind == "baseline" and r.num_steps and (r.workers or 1) == workers]
    return Summary(
        baseline=baseline, baseline_runs=len(base),
        best=frontier[-1] if frontier else None,
        best_commit=best_row.commit if best_row else (rows[0].commit if rows else ""),
        best_description=best_row.description if best_row else "baseline",
        sigma=pooled_sigma(list(by_commit.values()), min_noise), experiments=len(experiments),
        kept=len(kept), counts=counts, hours=_hours(rows), runs=len(rows),
        cost_usd=sum(costs) if costs else None, frontier=tuple(frontier),
        simplifications=sum(r.rule == "simplification" for r in kept),
        complexity=best_row.complexity if best_row is not None else base_nodes, baseline_complexity=base_nodes,
        tokens=sum(r.tokens or 0 for r in rows), paid_proposals=sum(1 for r in rows if r.cost_usd or r.tokens),
        workers=workers, baseline_steps=statistics.fmean(steps) if steps else None,
        disturbed=sum(r.kind == "disturbed" for r in rows), interference=_recent_interference(rows),
    )


def _recent_interference(rows: list[Row], last: int = 10) -> float | None:
    values = [r.interference for r in rows if r.interference is not None][-last:]
    return statistics.median(values) if values else None


def signed(value: float, digits: int) -> str:
    """`value` with its sign, to `digits` decimals; no sign on what rounds to zero (never "-0.00")."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def rule_text(settings: Settings, sigma: float) -> str:
    """The keep rule in words with its numbers (decide.rule_text)."""
    return decide.rule_text(settings, sigma)


def rule_line(settings: Settings, sigma: float) -> str:
    """The keep rule in one short line: the gain a one-run change needs (`status --rule`: all of it)."""
    se = decide.standard_error(max(sigma, settings.min_noise), 1, settings.baseline_runs)
    return (f"keep when gain - prices >= {settings.keep_z:g} se ({settings.keep_z * se:.4f} bpb for one run); "
            "`autoresearch status --rule` for the whole rule")


def headline(s: Summary, settings: Settings | None = None) -> list[tuple[str, str]]:
    """The summary as (label, text) lines: the same words in the terminal, the report and the dashboard."""
    lines = [("baseline", f"{s.baseline:.6f} ({s.baseline_runs} run{'s' if s.baseline_runs != 1 else ''})"
              if s.baseline is not None else "-")]
    lines.append(("best", f"{s.best:.6f}  {s.best_commit}  {s.best_description}" if s.best is not None else "-"))
    if s.gain is not None:
        lines.append(("gain", f"{signed(s.gain, 6)} bpb ({signed(s.gain_percent, 2)}%)"))
    noise = f"sigma {s.sigma:.6f} (pooled over repeated runs)"
    if s.workers > 1:
        steps = f", {s.baseline_steps:.0f} training steps per baseline run" if s.baseline_steps else ""
        noise = (f"sigma {s.sigma:.6f}, measured with {s.workers} runs at a time, as the loop runs them{steps} "
                 "(parallel runs slow each other: results are compared only among runs made so)")
    lines.append(("noise", noise))
    if s.interference is not None or s.disturbed:
        lines.append(("interference", f"others competed for {100 * (s.interference or 0):.0f}% of a run's CPU or GPU "
                                      f"(median of the last runs); {s.disturbed} run(s) disturbed and run again"))
    warning = decide.implausible(s.sigma, s.best, settings) if settings is not None and s.best else ""
    if warning:
        lines.append(("warning", warning))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    simpler = f", {s.simplifications} of the kept as simplifications" if s.simplifications else ""
    lines.append(("experiments", f"{s.experiments} ({counts or 'none yet'}{simpler})"))
    if s.keep_rate is not None:
        lines.append(("keep rate", f"{100 * s.keep_rate:.1f}% ({s.kept} of {s.experiments})"))
    if s.per_hour:
        span = f"{s.hours:.1f} h" if s.hours >= 1 else f"{60 * s.hours:.0f} min"
        lines.append(("pace", f"{s.per_hour:.1f} experiments/hour over {span}"))
    if s.complexity is not None:
        since = (f" ({s.complexity - s.baseline_complexity:+d} since the baseline)"
                 if s.baseline_complexity is not None else "")
        lines.append(("train.py", f"{s.complexity} syntax-tree nodes{since}"))
    if s.paid_proposals:
        lines.append(("cost", f"${s.cost_usd or 0:.4f}, {s.tokens:,} tokens over {s.paid_proposals} "
                              f"proposal{'s' if s.paid_proposals != 1 else ''} "
                              f"(${(s.cost_usd or 0) / s.paid_proposals:.4f} each)"))
    else:
        lines.append(("cost", "none recorded (offline proposer)"))
    if settings is not None:
        lines.append(("rule", rule_text(settings, s.sigma)))
    return lines


COLUMNS = ("run", "commit", "val_bpb", "gain", "nodes", "memory", "status", "kind", "description", "why")


def render(rows: list[Row], settings: Settings | None, last: int = 12, rule: bool = False,
           out: TextIO | None = None) -> None:
    """The summary and the last runs: a table fitted to the terminal's width on a terminal; plain text
    (`label  text` lines, then tab-separated runs, no padding or box art) when piped.

    The keep rule is one short line, or all of it with `rule`."""
    out = out or sys.stdout
    if not rows:
        print("no runs yet: start with `autoresearch loop` (or `autoresearch run`)", file=out)
        return
    s = summarize(rows, settings.min_noise if settings else 0.0)
    lines = headline(s, settings)
    lines = [line for line in lines if line[0] != "rule"]  # one short line unless --rule, below
    if settings is not None:
        lines.append(("rule", rule_text(settings, s.sigma) if rule else rule_line(settings, s.sigma)))
    shown = rows[-last:] if last > 0 else []
    paid = any(r.cost_usd or r.tokens for r in shown)
    header = COLUMNS + (("tokens", "USD") if paid else ())
    cells = [_cells(r, paid) for r in shown]
    title = f"last {len(shown)} run{'s' if len(shown) != 1 else ''}"
    if out.isatty():
        _render_rich(lines, title, header, cells, out)
    else:
        _render_plain(lines, title, header, cells, out)


def _cells(r: Row, paid: bool) -> tuple[str, ...]:
    return (r.run_id, r.short, f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-",
            f"{r.gain:+.4f}" if r.gain is not None else "",
            f"{r.complexity_delta:+d}" if r.complexity_delta is not None else "",
            f"{r.memory_delta:+.2f} GB" if r.memory_delta is not None else "",
            r.status, r.kind, r.description, r.why,
            *((f"{r.tokens:,}" if r.tokens else "", f"{r.cost_usd:.4f}" if r.cost_usd else "") if paid else ()))


def _render_plain(lines: list[tuple[str, str]], title: str, header: tuple[str, ...],
                  cells: list[tuple[str, ...]], out: TextIO) -> None:
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        first, *rest = text.splitlines() or [""]
        print(f"{label:<{width}}  {first}".rstrip(), file=out)
        for more in rest:
            print(f"{'':<{width}}  {more}".rstrip(), file=out)
    if not cells:
        return
    print(f"\n{title}", file=out)
    for row in (header, *cells):
        print("\t".join(" ".join(c.split()) for c in row), file=out)  # one line per run: no tabs or newlines inside


def _render_rich(lines: list[tuple[str, str]], title: str, header: tuple[str, ...],
                 cells: list[tuple[str, ...]], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out)  # the terminal's width; long cells wrap inside their column
    head = Table.grid(padding=(0, 2))
    for label, text in lines:
        head.add_row(label, Text(text))
    console.print(head)
    if not cells:
        return
    table = Table(title=title, title_justify="left")
    for col in header:  # the numbers stay on one line; the words wrap within their column
        table.add_column(col, overflow="fold", no_wrap=col not in ("description", "why"))
    status_at = header.index("status")
    for row in cells:
        table.add_row(*(Text(c, style=STATUS_COLOURS.get(c, "white") if i == status_at else "")
                        for i, c in enumerate(row)))
    console.print(table)


STATUS_COLOURS = {"keep": "green", "discard": "yellow", "crash": "red", "timeout": "magenta", "invalid": "red"}
