"""The state document: the research as one JSON object, a stable interface for tools.

`autoresearch status --json` and `report --json` print it and the dashboard serves it as
`/api/state`. One function builds it (`document`), so the three can
never disagree. Its fields are documented in docs/json.md: within a `schema_version` fields are
only added, never renamed, removed or given another meaning.
"""

from __future__ import annotations

from pathlib import Path

from autoresearch import decide, status
from autoresearch.report import reading

SCHEMA_VERSION = 1


def document(folder: Path) -> dict:
    """The state of the research in `folder`; an unreadable ledger raises its AutoresearchError."""
    return from_research(reading.load(folder, missing_ok=True))


def error_document(folder: Path, error: str) -> dict:
    """The document of a folder whose ledger cannot be read: `error` says why, the rest is empty."""
    return {"schema_version": SCHEMA_VERSION, "schema": SCHEMA_VERSION, "folder": str(Path(folder).resolve()),
            "error": error, "reference": False, "budget_s": None, "summary": None, "noise": None, "best": None,
            "rule": None, "ledger": [], "current": None, "baseline_curve": None, "best_curve": None, "warnings": []}


def from_research(research: reading.Research) -> dict:
    s = research.summary
    settings = research.settings
    best = next((r for r in reversed(research.records) if r.improved), None)
    return {
        "schema_version": SCHEMA_VERSION, "schema": SCHEMA_VERSION,
        "folder": str(research.folder), "error": None, "reference": research.reference,
        "budget_s": settings.time_budget if settings else None,
        "summary": _summary(research), "noise": _noise(research), "best": _best(research, best),
        "rule": None if settings is None else {"short": status.rule_line(settings, s.sigma),
                                               "text": status.rule_text(settings, s.sigma)},
        "ledger": [ledger_row(r) for r in research.records], "current": _current(research),
        "baseline_curve": _curve(research.baseline_record()), "best_curve": _curve(best),
        "warnings": list(research.warnings),  # the ledger's damage (ledger.warnings); the rows are the valid ones
    }


def _summary(research: reading.Research) -> dict:
    s = research.summary
    return {
        "baseline": s.baseline, "baseline_runs": s.baseline_runs, "best": s.best, "best_commit": s.best_commit,
        "best_description": s.best_description, "gain": s.gain, "gain_percent": s.gain_percent, "sigma": s.sigma,
        "experiments": s.experiments, "kept": s.kept, "keep_rate": s.keep_rate, "counts": s.counts,
        "hours": s.hours, "per_hour": s.per_hour, "cost_usd": s.cost_usd, "runs": s.runs,
        "simplifications": s.simplifications, "complexity": s.complexity,
        "baseline_complexity": s.baseline_complexity, "tokens": s.tokens, "paid_proposals": s.paid_proposals,
        "lines": [list(line) for line in status.headline(s, research.settings)] if research.records else [],
    }


def _noise(research: reading.Research) -> dict:
    s = research.summary
    floor = research.settings.min_noise if research.settings else None
    return {"sigma": s.sigma, "min_noise": floor, "sigma_used": max(s.sigma, floor or 0.0),
            "baseline_runs": s.baseline_runs, "workers": s.workers, "baseline_steps": s.baseline_steps,
            "interference": s.interference, "disturbed_runs": s.disturbed,
            "warning": (decide.implausible(s.sigma, s.best, research.settings)
                        if research.settings is not None and s.best else "")}


def _best(research: reading.Research, best: reading.RunRecord | None) -> dict | None:
    s = research.summary
    if s.best is None:
        return None
    record = best or research.baseline_record()
    return {"val_bpb": s.best, "commit": s.best_commit, "description": s.best_description,
            "run_id": record.row.run_id if record else "", "number": record.number if record else None,
            "gain": s.gain, "gain_percent": s.gain_percent}


def ledger_row(r: reading.RunRecord) -> dict:
    """One row of `ledger` (docs/json.md), also the rows of a notification (tracking/notify.py)."""
    return {
        "number": r.number, "run_id": r.row.run_id, "commit": r.row.commit, "val_bpb": r.row.val_bpb,
        "memory_gb": r.row.memory_gb, "status": r.row.status, "kind": r.row.kind, "description": r.row.description,
        "gain": r.row.gain, "best": r.best, "improved": r.improved, "timestamp": r.row.timestamp,
        "proposer": r.row.proposer, "rule": r.row.rule, "why": r.row.why,
        "parent": r.row.parent, "noise": r.row.noise, "complexity_delta": r.row.complexity_delta,
        "memory_delta": r.row.memory_delta, "wall_seconds": r.row.wall_seconds,
        "cost_usd": r.row.cost_usd, "tokens": r.row.tokens, "interference": r.row.interference,
        "slowdown": r.row.slowdown,
    }


def _current(research: reading.Research) -> dict | None:
    live = reading.live_run(research)
    if live is None:
        return None
    last = live.curve.last if live.curve else {}
    return {
        "phase": live.phase, "run_id": live.run_id, "description": live.description, "kind": live.kind,
        "budget_s": live.budget_s, "training_seconds": live.training_seconds, "time_left_s": live.time_left_s,
        "progress": _number(last.get("progress")), "step": _number(last.get("step")), "loss": _number(last.get("loss")),
        "last_output_at": None if live.last_output is None else round(live.last_output, 3),
        "curve": _curve_data(live.curve) if live.curve else None,
    }


def _curve(record: reading.RunRecord | None) -> dict | None:
    curve = reading.read_curve(record.run_dir) if record is not None else None
    if curve is None:
        return None
    return {"run_id": record.row.run_id, "number": record.number, **_curve_data(curve)}


def _curve_data(curve: reading.Curve) -> dict:
    return {"x": [round(v, 3) for v in curve.x], "loss": [round(v, 5) for v in curve.loss], "x_label": curve.x_label}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
