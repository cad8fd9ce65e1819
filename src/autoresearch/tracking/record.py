"""TrackedRun: one ledger row with what its run folder and its commit hold, as trackers see it.

Built from the row, the run folder (result.json, metrics.jsonl, diff.patch) and git (train.py
at the commit) alone, so the loop's live tracking and `autoresearch track` build the same record
for the same row. Nothing here imports a tracker's library.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from autoresearch import hparams
from autoresearch.errors import WorkspaceError
from autoresearch.git import Git
from autoresearch.ledger import Row, cells, from_cells
from autoresearch.rundir import DIFF_FILE, read_metrics, read_result, read_text
from autoresearch.workspace import TRAIN_FILE, Workspace

BRANCH_PREFIX = "autoresearch/"  # the research branches (loop.BRANCH_PREFIX)

# metrics.jsonl key -> the metric's name in a tracker (the step metrics train.py logs)
STEP_METRICS = {"loss": "loss", "tokens_per_s": "tokens_per_s", "mfu": "mfu", "lr": "lr_multiplier",
                "grad_norm": "grad_norm"}
# ledger column -> the run's summary metric
SUMMARY_METRICS = ("val_bpb", "heldout_bpb", "memory_gb", "training_seconds", "wall_seconds", "handover_seconds",
                   "num_steps", "total_tokens_m", "mfu_percent", "gain", "noise", "threshold", "complexity",
                   "complexity_delta", "memory_delta", "cost_usd", "tokens")
# ledger column -> tag
TAGS = ("run_id", "commit", "parent", "proposer", "status", "kind", "rule", "reason", "description", "flags",
        "fingerprint")


@dataclass(frozen=True)
class Step:
    step: int
    wall_time: float  # epoch seconds: the run's start plus its training seconds at this step
    values: dict[str, float]


@dataclass(frozen=True)
class TrackedRun:
    key: str  # unique within a workspace: the run id, or for a row without a run a hash of the row
    name: str  # what a tracker shows: "0007 halve the batch"
    experiment: str  # the research branch's name in a tracker: "<workspace folder>/<branch>"
    branch: str
    row: Row
    parent_key: str = ""  # a confirmation run's experiment row (its runs nest under it)
    started: float = 0.0  # epoch seconds
    ended: float = 0.0
    params: dict[str, object] = field(default_factory=dict)  # train.py's hyperparameter block
    steps: tuple[Step, ...] = ()
    summary: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # artifact name -> text (diff.patch, train.py)
    run_dir: Path | None = None


def row_key(row: Row) -> str:
    if row.run_id:
        return row.run_id
    digest = hashlib.sha1(f"{row.timestamp}|{row.commit}|{row.description}".encode()).hexdigest()[:10]
    return f"norun-{digest}"


def collect(ws: Workspace, rows: list[Row]) -> list[TrackedRun]:
    """The records of `rows` (in order); a confirmation row names the experiment row before it."""
    git, branches, sources = ws.git, Branches(ws.git), {}
    out: list[TrackedRun] = []
    experiment_of: dict[str, str] = {}  # commit -> key of its latest experiment row
    for row in rows:
        row = from_cells(cells(row))  # as the ledger holds it (its rounding): live and backfill agree
        key = row_key(row)
        parent_key = experiment_of.get(row.commit, "") if row.kind == "confirm" else ""
        if row.kind == "experiment":
            experiment_of[row.commit] = key
        if row.commit not in sources:
            sources[row.commit] = _source(git, row.commit)
        out.append(_record(ws, row, key, parent_key, branches.of(row), sources[row.commit]))
    return out


def _record(ws: Workspace, row: Row, key: str, parent_key: str, branch: str, source: str) -> TrackedRun:
    run_dir = ws.runs_dir / row.run_id if row.run_id and (ws.runs_dir / row.run_id).is_dir() else None
    result = read_result(run_dir)
    started = _epoch(result.get("started") or row.timestamp)
    ended = _epoch(result.get("ended") or row.timestamp) or started
    summary = {name: float(getattr(row, name)) for name in SUMMARY_METRICS if getattr(row, name) is not None}
    tags = {name: str(getattr(row, name)) for name in TAGS if getattr(row, name) not in (None, "")}
    tags["branch"] = branch
    files = {}
    diff = read_text(run_dir, DIFF_FILE)
    if diff:
        files[DIFF_FILE] = diff
    if source:
        files[TRAIN_FILE] = source
    label = row.run_id or "-"
    return TrackedRun(key=key, name=f"{label} {row.description}"[:250], experiment=f"{ws.root.name}/{branch}",
                      branch=branch, row=row, parent_key=parent_key, started=started, ended=ended,
                      params=_params(source), steps=_steps(run_dir, started), summary=summary, tags=tags,
                      files=files, run_dir=run_dir)


def _source(git: Git, commit: str) -> str:
    try:
        return git.show(commit, TRAIN_FILE).decode("utf-8", errors="replace")
    except WorkspaceError:
        return ""


def _params(source: str) -> dict[str, object]:
    try:
        block = hparams.read_block(source) if source else {}
    except SyntaxError:
        return {}
    return {name: hp.value if isinstance(hp.value, (int, float, str, bool)) else hp.expr for name, hp in block.items()}


def _steps(run_dir: Path | None, started: float) -> tuple[Step, ...]:
    steps = []
    for i, record in enumerate(read_metrics(run_dir)):
        values = {name: float(record[k]) for k, name in STEP_METRICS.items() if _is_number(record.get(k))}
        if not values:
            continue
        step = int(record["step"]) if _is_number(record.get("step")) else i
        seconds = float(record["training_seconds"]) if _is_number(record.get("training_seconds")) else 0.0
        steps.append(Step(step, started + seconds, values))
    return tuple(steps)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) != float("inf")


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
    except ValueError:
        return 0.0


class Branches:
    """Which research branch a row belongs to: the research branch (autoresearch/...) that holds its
    commit (or, for a change that was not kept, its parent); among several, the one checked out."""

    def __init__(self, git: Git) -> None:
        self.git = git
        self.current = (git.read("rev-parse", "--abbrev-ref", "HEAD") or "").strip()
        self._cache: dict[str, list[str]] = {}

    def of(self, row: Row) -> str:
        for commit in (row.commit, row.parent):
            names = self._holding(commit) if commit else []
            names = [n for n in names if n.startswith(BRANCH_PREFIX)] or names
            if names:
                return self.current if self.current in names else names[0]
        return self.current or "main"

    def _holding(self, commit: str) -> list[str]:
        if commit not in self._cache:
            out = self.git.read("for-each-ref", "--contains", commit, "--format=%(refname:short)", "refs/heads/")
            self._cache[commit] = sorted((out or "").split())
        return self._cache[commit]
