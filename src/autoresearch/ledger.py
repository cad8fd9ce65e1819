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

There is one reader, `read`, for everyone (the loop, `autoresearch status`, the proposers'
context, the report, the dashboard), with one notion of a valid row: every reference column
present, a known status (and kind), numbers that are numbers (nan and inf read as none, as does
the reference's val_bpb of 0.000000 for a crash), timestamps that are times. A damaged line is
never skipped: it is a `LedgerError` that names the file and the line and says how to fix it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from autoresearch import atomic
from autoresearch.errors import LedgerError

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


@dataclass
class Ledger:
    path: Path
    rows: list[Row] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        ledger = cls(Path(path))
        for stale in ledger.path.parent.glob(f".{ledger.path.name}.*.tmp"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        if ledger.path.exists():  # a missing ledger is an empty one: nothing recorded yet
            ledger.rows = read(ledger.path).rows
        return ledger

    def append(self, *new: Row) -> None:
        for row in new:  # never write a row that `read` would refuse
            if row.status not in STATUSES:
                raise ValueError(f"unknown status {row.status!r}")
            if row.kind not in KINDS:
                raise ValueError(f"unknown kind {row.kind!r}")
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


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contents:
    """What a ledger file holds: its header's column names and its rows, in order."""

    columns: tuple[str, ...]
    rows: list[Row]

    @property
    def reference(self) -> bool:
        """A plain reference ledger (no `kind` column): by convention its first measured row is the baseline."""
        return "kind" not in self.columns


def read(path: Path) -> Contents:
    """The ledger at `path`, every line validated; a LedgerError for a missing, unreadable or damaged one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"no {path.name} in {path.parent}") from None
    except OSError as e:
        raise LedgerError(f"cannot read {path} ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LedgerError(
            f"{path} is not a text file (not UTF-8, from line {line}): a results ledger is UTF-8 text; "
            "save it as UTF-8, or fix or delete that line") from None
    return parse(text, path)


def parse(text: str, source: Path | str = "results.tsv") -> Contents:
    """The rows of a ledger's text (ours or a plain five-column reference one); `source` names it in errors.

    Blank lines are skipped; every other line is a row or an error. Line numbers count every line
    of the file, as an editor does.
    """
    lines = text.removeprefix("\ufeff").split("\n")  # a byte-order mark from a spreadsheet is not a column name
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise LedgerError(
            f"{source} is empty (not even its header line): no runs recorded yet; delete the empty file "
            "(the loop writes it anew with its first run)")
    header_line, header_text = numbered[0]
    header = tuple(name.strip() for name in header_text.split("\t"))
    missing = [c for c in REFERENCE_COLUMNS if c not in header]
    if missing:
        raise LedgerError(
            f"{source} is not a results ledger: its header lacks {', '.join(missing)} (line {header_line}); expected "
            f"the tab-separated columns {' '.join(REFERENCE_COLUMNS)} (optionally followed by more)")
    twice = sorted({name for name in header if name in _PARSERS and header.count(name) > 1})
    if twice:
        raise LedgerError(f"{source}, line {header_line}: the header names {', '.join(twice)} more than once; "
                          "keep one of each")
    used = [(i, name) for i, name in enumerate(header) if name in _PARSERS]
    need = max(header.index(c) for c in REFERENCE_COLUMNS) + 1
    rows = []
    for n, line in numbered[1:]:
        cells = line.split("\t")
        try:
            if len(cells) < need:
                raise ValueError(f"{len(cells)} tab-separated cell(s), expected at least {need} "
                                 f"({' '.join(header[:need])})")
            rows.append(_row(cells, used))
        except ValueError as e:
            raise LedgerError(f"{source}, line {n}: {e}; fix or delete that line") from None
    return Contents(header, rows)


def _row(cells: list[str], used: list[tuple[int, str]]) -> Row:
    """One line's Row; a ValueError that says what is wrong with it. Cells missing at the end are empty."""
    values = {name: _PARSERS[name](cells[i].strip()) for i, name in used if i < len(cells)}
    if values["status"] not in STATUSES:
        raise ValueError(f"unknown status {values['status']!r} (expected one of {', '.join(STATUSES)})")
    if "kind" in values and values["kind"] not in KINDS:
        raise ValueError(f"unknown kind {values['kind']!r} (expected one of {', '.join(KINDS)})")
    return Row(**values)


def _parser(name: str, annotation: str) -> Callable[[str], object]:
    """How a cell of column `name` is read (by the Row field's type)."""
    if "float" in annotation or "int" in annotation:
        integer = "float" not in annotation

        def number(text: str) -> float | int | None:
            if not text:
                return None
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"a value is not a number: {name} {text!r}") from None
            if not math.isfinite(value) or (name == "val_bpb" and value == 0.0):
                return None  # a diverged run's nan; the reference's 0.000000 for a crash
            return int(value) if integer else value

        return number
    if name == "timestamp":

        def timestamp(text: str) -> str:
            if text:
                try:
                    datetime.fromisoformat(text)
                except ValueError:
                    raise ValueError(f"timestamp {text!r} is not an ISO 8601 time "
                                     "(like 2025-01-06T21:00:00+00:00)") from None
            return text

        return timestamp
    return str


_PARSERS = {f.name: _parser(f.name, str(f.type)) for f in fields(Row)}
