"""The run folder, `runs/<run_id>/`: one per run, and the names and records of what it holds.

Torch-free, so the report, the dashboard and the proposers' context can read run folders without
importing the training stack. Every other module takes these names, and the readers below, from
here. The readers are tolerant: a run folder is read while its run writes it, and may be old,
partial or copied without some files, so what is missing or unreadable reads as nothing.

    result.json       the runner's record of the run (`RunResult`)             runner
    train.log         train.py's stdout and stderr                              runner
    metrics.jsonl     one JSON object per logged step (`log_metrics`)           train.py, via api.py
    model.pt2         the model train.py exported at the hand-over             train.py, via handover.py
    handed_over.pt2   the runner's copy of it, the one evaluated (kept commits)  runner
    eval.json         what the harness's evaluator answered                     runner
    inprocess.json    what train.py's own evaluate_bpb computed (informational) train.py, via api.py
    proposal.json     what was proposed, by which proposer                      the loop
    row.json          its ledger row, cell by cell (ledger.save_row)            the loop, before the ledger
    diff.patch        the change to train.py, parent -> candidate               the loop
    node.log          what a worker printed on stderr (data preparation, errors) the executor
    model-not-sent.txt why a remote run's model did not come back              the ray executor
    prompt.md, ...    what the proposer left (the prompt a model saw, its replies, an agent's log)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from autoresearch import atomic

RESULT_FILE = "result.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.pt2"
HANDED_OVER = "handed_over.pt2"
EVAL_FILE = "eval.json"
INPROCESS_RECORD = "inprocess.json"
PROPOSAL_FILE = "proposal.json"
DIFF_FILE = "diff.patch"
NODE_LOG = "node.log"
MODEL_LEFT = "model-not-sent.txt"

SUMMARY_LINE = re.compile(r"^([A-Za-z_]+):\s+(-?[0-9.]+|nan|inf)\s*$")


def now() -> str:
    """A timestamp as the ledger and the run records write it: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunResult:
    """The runner's record of one run (result.json in the run folder)."""

    run_id: str
    commit: str
    outcome: str  # ok | crash | timeout | invalid
    val_bpb: float | None = None
    heldout_bpb: float | None = None
    printed_bpb: float | None = None  # what train.py printed (informational)
    inprocess_bpb: float | None = None  # what the in-process evaluate_bpb computed (informational)
    wall_seconds: float = 0.0  # launch to exit
    handover_seconds: float | None = None  # launch to hand-over
    clock_seconds: float | None = None  # launch to hand-over on the workspace's training clock (clock.py)
    eval_seconds: float | None = None
    exit_code: int | None = None
    summary: dict[str, float] = field(default_factory=dict)  # train.py's `---` block
    flags: list[str] = field(default_factory=list)
    error: str = ""  # why it is not ok, in one line
    log_tail: str = ""  # the end of train.log, for crashes
    started: str = ""
    ended: str = ""
    node: str = ""  # where it ran, for runs of parallel workers (host:pid, or the Ray node)
    interference: dict | None = None  # what else the machine did meanwhile (interference.Interference)

    @property
    def why(self) -> str:
        """Why it is not ok, in one line: its error, else what the runner flagged (an overstayed run
        keeps no error: it is still evaluated, for information)."""
        return self.error or "; ".join(self.flags) or self.outcome

    @property
    def memory_gb(self) -> float | None:
        mb = self.summary.get("peak_vram_mb")
        return mb / 1024 if mb is not None else None

    def save(self, run_dir: Path) -> None:
        atomic.write_json(run_dir / RESULT_FILE, asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> RunResult | None:
        """The record of a finished run; None while it runs, after a kill, or if it is unreadable."""
        path = run_dir / RESULT_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None


def parse_summary(log: str) -> dict[str, float]:
    """The last `---` block of a train.py log: key -> number."""
    lines = log.replace("\r", "\n").splitlines()
    try:
        start = len(lines) - 1 - lines[::-1].index("---")
    except ValueError:
        return {}
    out = {}
    for line in lines[start + 1 :]:
        m = SUMMARY_LINE.match(line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def tail(text: str, n_lines: int = 40) -> str:
    """The last `n_lines` lines of a log text (a progress line rewritten with \\r counts as lines)."""
    lines = text.replace("\r", "\n").splitlines()
    return "\n".join(line for line in lines[-n_lines:])


# --- reading a run folder ----------------------------------------------------------------------


def read_text(run_dir: Path | None, name: str, max_bytes: int | None = None) -> str:
    """A text file of a run folder, undecodable bytes replaced; only its last `max_bytes` bytes when
    given; "" when the folder or the file is missing or unreadable."""
    if run_dir is None:
        return ""
    path = run_dir / name
    try:
        with open(path, "rb") as f:
            if max_bytes is not None:
                f.seek(max(0, path.stat().st_size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def read_object(run_dir: Path | None, name: str) -> dict:
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
    return read_object(run_dir, PROPOSAL_FILE)


def read_result(run_dir: Path | None) -> dict:
    """result.json, the runner's record (outcome, error, flags, timings), as written, or {}."""
    return read_object(run_dir, RESULT_FILE)


def parse_metrics(text: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl text, in order, skipping lines that do not parse (while a
    run is under way its last line may be half written) and values that are not objects.

    All lines are first parsed in one call as a JSON array (a thousand runs of a thousand steps
    must not take a thousand-thousand parser calls); only if that fails, line by line.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        records = None
    if records is None or len(records) != len(lines):  # a line that held more (or less) than one value
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in records if isinstance(r, dict)]


def read_metrics(run_dir: Path | None) -> list[dict]:
    """The records train.py logged (metrics.jsonl), oldest first; [] when there are none."""
    return parse_metrics(read_text(run_dir, METRICS_FILE))


def log_tail(run_dir: Path | None, lines: int = 25, max_bytes: int = 64_000) -> str:
    """The end of train.log as a terminal would show it (a progress line rewritten with \\r counts once)."""
    data = read_text(run_dir, LOG_FILE, max_bytes)
    shown = [line.rsplit("\r", 1)[-1] if line.rstrip("\r") else "" for line in data.split("\n")]
    shown = [line.rstrip("\r") for line in shown]
    while shown and not shown[-1].strip():
        shown.pop()
    return "\n".join(shown[-lines:])


def last_output(run_dir: Path | None) -> float | None:
    """When the run last wrote its log or its metrics (epoch seconds); None before it wrote either."""
    if run_dir is None:
        return None
    stamps = []
    for name in (LOG_FILE, METRICS_FILE):
        try:
            stamps.append((run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return max(stamps) if stamps else None
