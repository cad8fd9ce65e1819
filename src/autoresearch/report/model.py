"""What the report, the plot and the dashboard show, read from a results folder.

The only input is what a research folder holds on disk: `results.tsv` (ours, or a plain
five-column reference ledger) and, where present, the run folders `runs/<run_id>/`
(metrics.jsonl, train.log, proposal.json, diff.patch, result.json). So the report also works
on a copy of the files, on a machine without the data, and on old reference runs.

Nothing here imports torch or the runner: the dashboard reloads this every few seconds and the
report must start fast. The run-folder file names are therefore repeated here (a test checks
they match the runner's and the harness API's).
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from autoresearch import settings as settings_mod
from autoresearch.errors import ReportError
from autoresearch.ledger import REFERENCE_COLUMNS, STATUSES, Row, read_rows
from autoresearch.proposers.base import PROPOSAL_FILE
from autoresearch.settings import Settings
from autoresearch.status import Summary, summarize
from autoresearch.workspace import LEDGER_FILE, RUNS_DIR, STATE_DIR

METRICS_FILE = "metrics.jsonl"  # api.METRICS_FILE: the per-step stream train.py writes via log_metrics
LOG_FILE = "train.log"  # runner.LOG_FILE
RESULT_FILE = "result.json"  # runner.RESULT_FILE
DIFF_FILE = "diff.patch"  # written by the loop: the change to train.py, parent -> candidate
STATE_FILE = "state.json"  # loop.STATE_FILE, in STATE_DIR: the step under way
FLIGHTS_FILE = "flights.json"  # scale.coordinator.FLIGHTS_FILE: the candidates under way with parallel workers
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


def ledger_path(folder: Path) -> Path:
    return Path(folder) / LEDGER_FILE


def load(folder: Path, missing_ok: bool = False) -> Research:
    """Read a results folder: the ledger (validated), its summary, and which rows have run folders.

    `missing_ok`: a folder without results.tsv reads as a research with no runs yet (the dashboard,
    started before the first run is recorded) instead of an error (the report).
    """
    folder = Path(folder).resolve()
    path = ledger_path(folder)
    if missing_ok and not path.exists():
        rows, reference = [], False
    else:
        rows, reference = read_ledger(path)
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
                    settings=settings, reference=reference)


# --- the ledger, validated --------------------------------------------------------------------


def read_ledger(path: Path) -> tuple[list[Row], bool]:
    """The rows of `path` and whether it is a plain reference ledger; a clear error if it is unusable."""
    folder = path.parent
    if not path.is_file():
        raise ReportError(
            f"no {path.name} in {folder}: run experiments first (`autoresearch loop`), or pass the folder "
            f"that holds {path.name}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not a text file (not UTF-8): it is not a results ledger") from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise ReportError(f"{path} is empty: no runs recorded yet; run `autoresearch loop` first")
    header = numbered[0][1].split("\t")
    missing = [c for c in REFERENCE_COLUMNS if c not in header]
    if missing:
        raise ReportError(
            f"{path} is not a results ledger: its header lacks {', '.join(missing)}; expected the tab-separated "
            f"columns {' '.join(REFERENCE_COLUMNS)} (optionally followed by more)")
    status_at = header.index("status")
    for n, line in numbered[1:]:
        cells = line.split("\t")
        if len(cells) < len(REFERENCE_COLUMNS):
            raise ReportError(
                f"{path}, line {n}: {len(cells)} tab-separated cell(s), expected at least {len(REFERENCE_COLUMNS)} "
                f"({' '.join(REFERENCE_COLUMNS)}); fix or delete that line")
        status = cells[status_at].strip()
        if status not in STATUSES:
            raise ReportError(
                f"{path}, line {n}: unknown status {status!r} (expected one of {', '.join(STATUSES)}); "
                "fix or delete that line")
    try:
        rows = read_rows(text)
    except ValueError:
        raise _locate_bad_value(path, numbered) from None
    return [_finite(r) for r in rows], "kind" not in header


def _finite(row: Row) -> Row:
    """The row with any nan/inf number (a diverged run's, say) read as no number."""
    bad = {f.name: None for f in fields(row)
           if isinstance(getattr(row, f.name), float) and not math.isfinite(getattr(row, f.name))}
    return replace(row, **bad) if bad else row


def _locate_bad_value(path: Path, numbered: list[tuple[int, str]]) -> ReportError:
    """The first line whose numbers do not parse (only called once parsing the whole file failed)."""
    header = numbered[0][1]
    for n, line in numbered[1:]:
        try:
            read_rows(f"{header}\n{line}\n")
        except ValueError as e:
            return ReportError(f"{path}, line {n}: a value is not a number ({e}); fix or delete that line")
    return ReportError(f"{path}: a value is not a number; check the val_bpb and memory_gb columns")


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


# --- run folders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A training-loss curve, averaged down to at most CURVE_POINTS points."""

    x: tuple[float, ...]
    loss: tuple[float, ...]
    x_label: str  # "training seconds" (the budget's clock) or "step" (when train.py logs no time)
    records: int  # metrics records read
    last: dict  # the last record, as train.py wrote it (step, loss, training_seconds, progress, ...)


def read_curve(run_dir: Path | None, points: int = CURVE_POINTS) -> Curve | None:
    """The loss curve of a run from its metrics.jsonl; None when there is none.

    Lines that do not parse are skipped: while a run is under way its last line may be half written.
    """
    if run_dir is None:
        return None
    try:
        text = (run_dir / METRICS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    records = _records(text)
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


def _records(text: str) -> list[dict]:
    """The JSON objects of a .jsonl text, skipping lines that do not parse.

    All lines are first parsed in one call as a JSON array (a thousand runs of a thousand steps
    must not take a thousand-thousand parser calls); only if that fails, line by line.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in records if isinstance(r, dict)]


def _bucket_means(values: np.ndarray, points: int) -> tuple[float, ...]:
    """Means of consecutive buckets: fewer points to draw, and per-step noise smoothed away."""
    n = len(values)
    if n <= points:
        return tuple(values.tolist())
    starts = np.arange(points) * n // points
    sums = np.add.reduceat(values, starts)
    counts = np.diff(np.append(starts, n))
    return tuple((sums / counts).tolist())


def _read_object(run_dir: Path | None, name: str) -> dict:
    """A JSON object from a run folder, or {} when the folder, the file or a valid object is missing."""
    if run_dir is None:
        return {}
    try:
        data = json.loads((run_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_proposal(run_dir: Path | None) -> dict:
    """proposal.json (description, hypothesis, params, proposer, tokens, cost) or {}."""
    return _read_object(run_dir, PROPOSAL_FILE)


def read_result(run_dir: Path | None) -> dict:
    """result.json, the runner's record (outcome, error, flags, timings), or {}."""
    return _read_object(run_dir, RESULT_FILE)


def log_tail(run_dir: Path | None, lines: int = 25, max_bytes: int = 64_000) -> str:
    """The end of train.log as a terminal would show it (a progress line rewritten with \\r counts once)."""
    if run_dir is None:
        return ""
    path = run_dir / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = [line.rsplit("\r", 1)[-1] if line.rstrip("\r") else "" for line in data.split("\n")]
    shown = [line.rstrip("\r") for line in shown]
    while shown and not shown[-1].strip():
        shown.pop()
    return "\n".join(shown[-lines:])


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
        by_commit = git_diffs(research.folder, sorted({r.row.commit for r in wanted if r.row.commit}))
        for rec in wanted:
            if rec.row.commit in by_commit:
                out[rec.anchor] = by_commit[rec.row.commit]
    return out


def _cap(text: str) -> str:
    if len(text) <= MAX_DIFF_CHARS:
        return text
    return text[:MAX_DIFF_CHARS] + f"\n... (cut: the diff has {len(text):,} characters)\n"


def git_diffs(folder: Path, commits: list[str]) -> dict[str, str]:
    """short commit -> its patch against its parent, for the commits git still has; {} if not a repo.

    Two git calls in all (which commits exist, then all their patches), not one per commit: a
    ledger of a thousand experiments must not mean a thousand processes.
    """
    if not commits or not (folder / ".git").exists():
        return {}
    found = _git(folder, ["cat-file", "--batch-check=%(objectname) %(objecttype)"], "\n".join(commits) + "\n")
    if found is None:
        return {}
    full = {}
    for short, line in zip(commits, found.splitlines()):
        parts = line.split()
        if len(parts) == 2 and parts[1] == "commit":
            full[parts[0]] = short
    if not full:
        return {}
    shown = _git(folder, ["show", "--no-color", "--no-ext-diff", "--format=%x1e%H", "--patch", *full], None)
    if shown is None:
        return {}
    out = {}
    for chunk in shown.split("\x1e")[1:]:
        sha, _, patch = chunk.partition("\n")
        if sha.strip() in full:
            out[full[sha.strip()]] = _cap(patch.strip("\n") + "\n") if patch.strip() else ""
    return out


def _git(folder: Path, args: list[str], stdin: str | None) -> str | None:
    """Read-only git; None when git is missing or fails (no diffs, not an error: the report goes on)."""
    try:
        proc = subprocess.run(["git", *args], cwd=folder, input=stdin, capture_output=True, text=True,
                              errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# --- the run under way ------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRun:
    """What the loop is doing now, as far as the folder shows it (the loop's state file)."""

    phase: str  # proposing | committing | running
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
    """The step under way, from the state file the loop writes before each step; None when idle.

    The loop removes the file when a step is done; if the loop was killed the file stays until it
    resumes, which `last_output` (when the run last wrote anything) makes visible.
    """
    recorded = {r.run_id for r in research.rows if r.run_id}
    state = _read_json(research.folder / STATE_DIR / STATE_FILE) or _latest_flight(research, recorded)
    if not state:
        return None
    runs = [r for r in state.get("runs", []) if isinstance(r, str) and r not in recorded]
    phase = str(state.get("phase", ""))
    run_id = runs[-1] if runs and phase == "running" else ""
    run_dir = research.folder / RUNS_DIR / run_id if run_id else None
    kind = str(state.get("kind", "experiment"))
    description = str(state.get("description") or ("baseline" if kind == "baseline" else ""))
    budget = research.settings.time_budget if research.settings else None
    return LiveRun(phase, run_id, description, kind, read_curve(run_dir), budget, _last_output(run_dir))


def _latest_flight(research: Research, recorded: set[str]) -> dict:
    """With parallel workers (scale/): the candidate whose run started last, from flights.json."""
    try:
        flights = json.loads((research.folder / STATE_DIR / FLIGHTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(flights, list):
        return {}
    running = [f for f in flights if isinstance(f, dict) and f.get("phase") == "running"
               and any(r not in recorded for r in f.get("runs", []))]
    return max(running, key=lambda f: max(r for r in f["runs"] if r not in recorded), default={})


def _last_output(run_dir: Path | None) -> float | None:
    if run_dir is None:
        return None
    stamps = []
    for name in (LOG_FILE, METRICS_FILE):
        try:
            stamps.append((run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return max(stamps) if stamps else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
