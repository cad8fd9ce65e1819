"""`results.tsv`: one row per run, the reference's five columns first.

    commit  val_bpb  memory_gb  status  description  | run_id  kind  timestamp  ...

The first five columns keep the reference's names and formats (7-character commit, val_bpb with
6 decimals or 0.000000 when there is none, memory in GB with 1 decimal, status, free text), so
tools written for the reference read it unchanged; the extra columns follow (EXTRA_COLUMNS).
Statuses: keep, discard, crash (the reference's), timeout, invalid. A kept simplification is a
`keep` whose `rule` is `simplification` (its `complexity_delta` is negative). The decision's reasons
are in the extra columns: gain, noise, complexity, complexity_delta, memory_delta, threshold, rule,
reason (docs/decisions.md).

Appends rewrite the whole file through a temporary file and a rename, so a kill at any moment
leaves either the old ledger or the new one. Tab-separated with a header: `pandas.read_csv(path,
sep="\\t")` reads it as it is. A plain reference ledger (five columns) is read too.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from autoresearch import atomic

STATUSES = ("keep", "discard", "crash", "timeout", "invalid")
KINDS = ("baseline", "experiment", "confirm")
REFERENCE_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")


@dataclass(frozen=True)
class Row:
    commit: str
    val_bpb: float | None
    memory_gb: float | None
    status: str
    description: str
    run_id: str = ""
    kind: str = "experiment"  # baseline | experiment | confirm
    timestamp: str = ""  # ISO 8601, UTC, when the run ended
    parent: str = ""  # the commit the change was made on
    proposer: str = ""
    heldout_bpb: float | None = None
    training_seconds: float | None = None
    wall_seconds: float | None = None  # launch to exit, the runner's clock
    handover_seconds: float | None = None  # launch to hand-over
    num_steps: int | None = None
    total_tokens_m: float | None = None
    mfu_percent: float | None = None
    gain: float | None = None  # best mean before this run minus this val_bpb (positive = better)
    noise: float | None = None  # the run-to-run sigma the decision used
    complexity: int | None = None  # syntax-tree nodes of this commit's train.py (complexity.py)
    complexity_delta: int | None = None  # nodes added to train.py by the change (negative: removed)
    memory_delta: float | None = None  # peak memory (GB), the candidate's mean minus the best's
    threshold: float | None = None  # the gain the deciding branch of the rule needed to keep
    rule: str = ""  # the rule that decided (decide.RULES: gain, simplification, noise, ...) or the outcome
    reason: str = ""  # why, in words with the numbers
    flags: str = ""  # things the runner noticed (e.g. printed val_bpb differs)
    cost_usd: float | None = None  # what the proposal cost (LLM proposers), on its first row
    tokens: int | None = None  # LLM tokens the proposal took (prompt + completion, all requests), on its first row
    fingerprint: str = ""  # settings + data + tokenizer + harness code
    workers: int | None = None  # runs in parallel when it ran (parallel workers slow each other); empty: 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "commit", self.commit[:7])  # the reference's format, in memory too

    @property
    def short(self) -> str:
        return self.commit

    @property
    def why(self) -> str:
        """The decision in one line: `rule: reason`."""
        return f"{self.rule}: {self.reason}" if self.reason else self.rule


EXTRA_COLUMNS = tuple(f.name for f in fields(Row))[len(REFERENCE_COLUMNS):]
COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS


def _fmt(name: str, value) -> str:
    if value is None:
        return "0.000000" if name == "val_bpb" else ("0.0" if name == "memory_gb" else "")
    if name == "commit":
        return str(value)[:7]
    if name in ("val_bpb", "heldout_bpb", "gain", "noise", "threshold", "cost_usd"):
        return f"{value:.6f}"
    if name == "memory_delta":
        return f"{value:.3f}" if round(value, 3) != 0 else "0.000"  # never "-0.000"
    if name == "memory_gb":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else ""
    return " ".join(str(value).split())  # no tabs or newlines inside a cell


def _parse(name: str, text: str):
    kind = {f.name: f.type for f in fields(Row)}[name]
    if "float" in str(kind):
        if text == "":
            return None
        value = float(text)
        if name == "val_bpb" and value == 0.0:
            return None
        return value
    if "int" in str(kind):
        return int(float(text)) if text else None
    return text


@dataclass
class Ledger:
    path: Path
    rows: list[Row] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        ledger = cls(Path(path))
        for stale in ledger.path.parent.glob(f".{ledger.path.name}.*.tmp"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        if ledger.path.exists():
            ledger.rows = read_rows(ledger.path.read_text(encoding="utf-8"))
        return ledger

    def append(self, *new: Row) -> None:
        for row in new:
            if row.status not in STATUSES:
                raise ValueError(f"unknown status {row.status!r}")
        rows = self.rows + list(new)
        atomic.write_text(self.path, render(rows))
        self.rows = rows

    def run_ids(self) -> set[str]:
        return {r.run_id for r in self.rows if r.run_id}


def render(rows: list[Row]) -> str:
    out = io.StringIO()
    out.write("\t".join(COLUMNS) + "\n")
    for row in rows:
        out.write("\t".join(_fmt(name, getattr(row, name)) for name in COLUMNS) + "\n")
    return out.getvalue()


def read_rows(text: str) -> list[Row]:
    """Rows of a ledger (ours or a plain five-column reference one)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    known = {f.name for f in fields(Row)}
    rows = []
    for cells in reader:
        values = {}
        for name, text in zip(header, cells):
            if name in known:
                values[name] = _parse(name, text.strip())
        if "commit" in values and "status" in values:
            values.setdefault("description", "")
            values.setdefault("val_bpb", None)
            values.setdefault("memory_gb", None)
            rows.append(Row(**values))
    return rows
