"""What the report, the plot and the dashboard show, read from a research folder.

The only input is what a research folder holds on disk: `results.tsv` (ours, or a plain
five-column reference ledger), where present the run folders `runs/<run_id>/` (metrics.jsonl,
train.log, proposal.json, diff.patch, result.json), and, while the loop works, its state file
`.autoresearch/flights.json`. So the report also works on a copy of the files, on a machine
without the data, and on old reference runs.

The ledger is read and validated by `ledger.read` (through `ledger_check.read_for_display`), the run folders by the readers of `rundir`,
diffs that no run folder holds come from `Git.patches`. Nothing here imports torch or the runner:
the dashboard reloads this every few seconds and the report must start fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autoresearch import ledger_check
from autoresearch import settings as settings_mod
from autoresearch.errors import ReportError
from autoresearch.git import Git
from autoresearch.ledger import Row
from autoresearch.rundir import DIFF_FILE, METRICS_FILE, last_output, read_metrics
from autoresearch.settings import Settings
from autoresearch.status import Summary, summarize
from autoresearch.workspace import LEDGER_FILE, RUNS_DIR, read_flights

_NUMBER = (int, float)  # exact types: a JSON true/false is not a number here
CURVE_POINTS = 200  # a loss curve is averaged down to at most this many points
MAX_DIFF_CHARS = 200_000  # a diff longer than this is cut (with a note) so one run cannot bloat the report


@dataclass(frozen=True)
class RunRecord:
    """One ledger row with its place in the research and its run folder (if the folder has one)."""

    number: int  # 1-based position in the ledger
    row: Row
    best_before: float | None  # the running best before this row
    best: float | None  # the running best after it
    run_dir: Path | None

    @property
    def anchor(self) -> str:
        """A stable HTML id: the run id where there is one (ours), the row number otherwise (reference)."""
        return f"run-{self.row.run_id}" if self.row.run_id else f"row-{self.number}"

    @property
    def improved(self) -> bool:
        """A kept experiment that lowered the running best: a step of the progress line."""
        return (self.row.kind == "experiment" and self.row.status == "keep" and self.best is not None
                and (self.best_before is None or self.best < self.best_before))

    @property
    def step_gain(self) -> float | None:
        """How much this row lowered the running best (kept experiments only)."""
        if not self.improved or self.best_before is None or self.best is None:
            return None
        return self.best_before - self.best


@dataclass(frozen=True)
class Research:
    folder: Path
    ledger_path: Path
    records: tuple[RunRecord, ...]
    summary: Summary
    settings: Settings | None  # None for a folder without a (valid) autoresearch.toml
    reference: bool  # a plain five-column reference ledger
    warnings: tuple[str, ...] = ()  # the ledger's damage, one line each (ledger.warnings): the rows shown are the valid ones

    @property
    def rows(self) -> list[Row]:
        return [r.row for r in self.records]

    def baseline_record(self) -> RunRecord | None:
        """The baseline run whose loss curve the others are drawn against: the first one with metrics."""
        baselines = [r for r in self.records if r.row.kind == "baseline"]
        with_curve = [r for r in baselines if r.run_dir is not None and (r.run_dir / METRICS_FILE).is_file()]
        return (with_curve or baselines or [None])[0]

    def improvements(self) -> list[RunRecord]:
        return [r for r in self.records if r.improved]

    def introduced_by(self) -> dict[str, RunRecord]:
        """commit -> the experiment row that first ran it, to link a change to the one it was built on."""
        out: dict[str, RunRecord] = {}
        for r in self.records:
            if r.row.kind in ("experiment", "baseline"):
                out.setdefault(r.row.commit, r)
        return out


def results_folder(path: Path | None, command: str) -> Path:
    """The folder `command` reads: the one named, else the workspace around the current folder, else the
    current folder. A ReportError when it holds no results.tsv and is no workspace (nothing to show)."""
    from autoresearch import workspace
    from autoresearch.errors import WorkspaceError

    if path is not None and not Path(path).is_dir():
        raise ReportError(f"{path} is not a folder: name the folder that holds results.tsv")
    if path is not None:
        folder = Path(path)
    else:
        try:
            folder = workspace.find().root
        except WorkspaceError:
            folder = Path.cwd()
    if not (folder / LEDGER_FILE).exists() and not (folder / settings_mod.SETTINGS_FILE).exists():
        where = "" if path is not None else " (the current folder)"
        raise ReportError(
            f"no {LEDGER_FILE} in {folder.resolve()}{where}, and it is not in an autoresearch workspace: "
            f"start one with `autoresearch init DIR`, or name the folder that holds {LEDGER_FILE} "
            f"(`autoresearch {command} FOLDER`)")
    return folder


def ledger_path(folder: Path) -> Path:
    return Path(folder) / LEDGER_FILE


def load(folder: Path, missing_ok: bool = False) -> Research:
    """Read a results folder: the ledger (validated: its valid rows are shown, its damaged lines are
    `warnings`; a file that is not a ledger is a LedgerError), its summary, and which rows have run folders.

    `missing_ok`: a folder without results.tsv reads as a research with no runs yet (the dashboard,
    started before the first run is recorded) instead of an error (the report).
    """
    folder = Path(folder).resolve()
    path = ledger_path(folder)
    warnings: list[str] = []
    if missing_ok and not path.exists():
        rows, reference = [], False
    else:
        if not path.is_file():
            raise ReportError(
                f"no {path.name} in {folder}: run experiments first (`autoresearch loop`), or pass the folder "
                f"that holds {path.name}")
        contents, warnings = ledger_check.read_for_display(path, folder / RUNS_DIR)
        rows, reference = contents.rows, contents.reference
    if reference:
        rows = _mark_reference_baseline(rows)
    settings = _settings(folder)
    summary = summarize(rows, settings.min_noise if settings else 0.0)
    runs = folder / RUNS_DIR
    existing = {p.name for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()
    records = []
    previous = None
    for i, (row, best) in enumerate(zip(rows, summary.frontier)):
        run_dir = runs / row.run_id if row.run_id and row.run_id in existing else None
        records.append(RunRecord(number=i + 1, row=row, best_before=previous, best=best, run_dir=run_dir))
        previous = best
    return Research(folder=folder, ledger_path=path, records=tuple(records), summary=summary,
                    settings=settings, reference=reference, warnings=tuple(warnings))


def _mark_reference_baseline(rows: list[Row]) -> list[Row]:
    """A reference ledger has no `kind` column: its first measured row is the baseline, by convention."""
    first = next((i for i, r in enumerate(rows) if r.val_bpb is not None), None)
    if first is None:
        return rows
    return [replace(r, kind="baseline") if i == first else r for i, r in enumerate(rows)]


def _settings(folder: Path) -> Settings | None:
    if not (folder / settings_mod.SETTINGS_FILE).is_file():
        return None
    try:
        return settings_mod.load(folder)
    except settings_mod.SettingsError:
        return None  # the report still works; only the keep rule's floor and the budget are unknown


# --- loss curves ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A training-loss curve, averaged down to at most CURVE_POINTS points."""

    x: tuple[float, ...]
    loss: tuple[float, ...]
    x_label: str  # "training seconds" (the budget's clock) or "step" (when train.py logs no time)
    records: int  # metrics records read
    last: dict  # the last record, as train.py wrote it (step, loss, training_seconds, progress, ...)


def read_curve(run_dir: Path | None, points: int = CURVE_POINTS) -> Curve | None:
    """The loss curve of a run from its metrics.jsonl (records that do not parse are skipped); None when
    there is none."""
    records = read_metrics(run_dir)
    if not records:
        return None
    use_time = type(records[0].get("training_seconds")) in _NUMBER
    key = "training_seconds" if use_time else "step"
    pairs = [(r.get(key), r.get("loss")) for r in records]
    pairs = [(x, y) for x, y in pairs if type(x) in _NUMBER and type(y) in _NUMBER and -math.inf < y < math.inf]
    if not pairs:
        return None
    xs = np.array([x for x, _ in pairs], dtype=np.float64)
    ys = np.array([y for _, y in pairs], dtype=np.float64)
    return Curve(_bucket_means(xs, points), _bucket_means(ys, points), "training seconds" if use_time else "step",
                 len(pairs), records[-1])


def _bucket_means(values: np.ndarray, points: int) -> tuple[float, ...]:
    """Means of consecutive buckets: fewer points to draw, and per-step noise smoothed away."""
    n = len(values)
    if n <= points:
        return tuple(values.tolist())
    starts = np.arange(points) * n // points
    sums = np.add.reduceat(values, starts)
    counts = np.diff(np.append(starts, n))
    return tuple((sums / counts).tolist())


# --- diffs ------------------------------------------------------------------------------------


def load_diffs(research: Research) -> dict[str, str]:
    """anchor -> the change an experiment made.

    From the run folder's diff.patch (the loop saves it) where there is one; otherwise from git when
    the folder is a git repository that still holds the commit (a reference workspace, or a run
    folder that was deleted); otherwise there is no diff for that row.
    """
    out: dict[str, str] = {}
    wanted: list[RunRecord] = []
    for rec in research.records:
        row = rec.row
        if row.kind != "experiment" or (row.parent and row.parent == row.commit):
            continue  # baselines change nothing; an invalid proposal was never committed (commit = parent)
        if rec.run_dir is not None and (rec.run_dir / DIFF_FILE).is_file():
            out[rec.anchor] = _cap((rec.run_dir / DIFF_FILE).read_text(encoding="utf-8", errors="replace"))
        else:
            wanted.append(rec)
    if wanted:
        by_commit = Git(research.folder).patches(sorted({r.row.commit for r in wanted if r.row.commit}))
        for rec in wanted:
            if rec.row.commit in by_commit:
                out[rec.anchor] = _cap(by_commit[rec.row.commit])
    return out


def _cap(text: str) -> str:
    if len(text) <= MAX_DIFF_CHARS:
        return text
    return text[:MAX_DIFF_CHARS] + f"\n... (cut: the diff has {len(text):,} characters)\n"


# --- the run under way ------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRun:
    """What the loop is doing now, as far as the folder shows it (the loop's state file)."""

    phase: str  # proposing | running
    run_id: str  # "" until the run has started
    description: str
    kind: str  # baseline | experiment
    curve: Curve | None
    budget_s: float | None  # the training budget (from autoresearch.toml)
    last_output: float | None  # when the run last wrote its log or metrics (epoch seconds; a stopped loop stays quiet)

    @property
    def training_seconds(self) -> float | None:
        value = self.curve.last.get("training_seconds") if self.curve else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def time_left_s(self) -> float | None:
        if self.budget_s is None or self.training_seconds is None:
            return None
        return max(0.0, self.budget_s - self.training_seconds)


def live_run(research: Research) -> LiveRun | None:
    """The step under way, from the loop's state file (.autoresearch/flights.json); None when idle.

    The file lists what the loop has under way (proposing, queued, running). Shown is the running
    entry whose newest run not yet in the ledger started last; with none running, an entry being
    proposed. If the loop was killed the file stays until it resumes, which `last_output` (when the
    run last wrote anything) makes visible.
    """
    recorded = {r.run_id for r in research.rows if r.run_id}
    flights = read_flights(research.folder)
    running = {}
    for flight in flights:
        runs = [r for r in flight.get("runs") or () if isinstance(r, str) and r and r not in recorded]
        if flight.get("phase") == "running" and runs:
            running[max(runs, key=_run_order)] = flight
    if running:
        run_id = max(running, key=_run_order)
        flight, phase = running[run_id], "running"
    else:
        flight = next((f for f in flights if f.get("phase") == "proposing"), None)
        if flight is None:
            return None
        run_id, phase = "", "proposing"
    run_dir = research.folder / RUNS_DIR / run_id if run_id else None
    kind = str(flight.get("kind") or "experiment")
    description = str(flight.get("description") or ("baseline" if kind == "baseline" else ""))
    budget = research.settings.time_budget if research.settings else None
    return LiveRun(phase, run_id, description, kind, read_curve(run_dir), budget, last_output(run_dir))


def _run_order(run_id: str) -> tuple[int, str]:
    """Run ids are numbers counted up (0099, 0100, ..., 10000): the longer one is the later one."""
    return len(run_id), run_id
