"""`results.tsv`: one row per run, the reference's five columns first.

    commit  val_bpb  memory_gb  status  description  | run_id  kind  timestamp  ...

The first five columns keep the reference's names and formats (7-character commit, val_bpb with
6 decimals or 0.000000 when there is none, memory in GB with 1 decimal, status, free text), so
tools written for the reference read it unchanged; the extra columns follow (EXTRA_COLUMNS).
Statuses: keep, discard, crash (the reference's), timeout, invalid. A kept simplification is a
`keep` whose `rule` is `simplification` (its `complexity_delta` is negative). The decision's reasons
are in the extra columns: gain, noise, complexity, complexity_delta, memory_delta, threshold, rule,
reason (docs/decisions.md).

Writes rewrite the whole file through a temporary file and a rename, so a kill at any moment
leaves either the old ledger or the new one. Tab-separated with a header: `pandas.read_csv(path,
sep="\\t")` reads it as it is. A plain reference ledger (five columns) is read too.

There is one reader, `read`, for everyone (the loop, `autoresearch status`, the proposers'
context, the report, the dashboard), with one notion of a valid row: every reference column
present, a known status (and kind), numbers that are numbers (nan and inf read as none, as does
the reference's val_bpb of 0.000000 for a crash), timestamps that are times, and a last line that
was not cut short (no line end and fewer cells than the header). A file that is not a ledger at
all (empty, no header, not text) is a `LedgerError`.

The ledger never loses a row. A line that cannot be read (`Damaged`) is never dropped: readers
leave it in the file where it is, work on the valid rows and warn about it with its line number
(`warnings`, the one message every command prints). A writer (`Ledger.write`: the loop, `autoresearch
ledger check --repair`) first moves every line of the file on disk that the rows it writes do not
hold to `results.tsv.damaged` beside it (`set_aside`: line number, when, the problem, the line as it
was), so that the main file stays readable by reference tools such as pandas. The run folders are
the source of truth: each recorded row is also written to `runs/<run_id>/row.json` (`save_row`),
from which a row missing from the ledger is rebuilt exactly (ledger_check.py).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from autoresearch import atomic
from autoresearch.errors import LedgerError

STATUSES = ("keep", "discard", "crash", "timeout", "invalid")
KINDS = ("baseline", "experiment", "confirm", "rebaseline", "control", "disturbed", "audit")  # rebaseline, audit: their commands
REFERENCE_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
DAMAGED_SUFFIX = ".damaged"  # results.tsv.damaged: the lines set aside from results.tsv
DAMAGED_HEADER = "line\tset_aside\tproblem\ttext"
ROW_FILE = "row.json"  # in a run folder: its ledger row, cell by cell, as written to the ledger


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
    interference: float | None = None  # share of the run's CPU that other processes competed for (interference.py)
    slowdown: float | None = None  # steps/s below the median of earlier runs of its commit (0.2: 20% slower)

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
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # as it reads back: a line renders the same before and after a round trip
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
    """The ledger file of a workspace: its valid rows, and the damaged lines it held when opened."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    damaged: tuple[Damaged, ...] = ()

    @classmethod
    def open(cls, path: Path) -> Ledger:
        ledger = cls(Path(path))
        for stale in ledger.path.parent.glob(f".{ledger.path.name}.*.tmp"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        if ledger.path.exists():  # a missing ledger is an empty one: nothing recorded yet
            contents = read(ledger.path)
            ledger.rows, ledger.damaged = contents.rows, contents.damaged
        return ledger

    def append(self, *new: Row) -> list[Damaged]:
        for row in new:  # never write a row that `read` would refuse
            if row.status not in STATUSES:
                raise ValueError(f"unknown status {row.status!r}")
            if row.kind not in KINDS:
                raise ValueError(f"unknown kind {row.kind!r}")
        return self.write(self.rows + list(new))

    def write(self, rows: list[Row], reasons: dict[int, str] | None = None) -> list[Damaged]:
        """Replace the file with `rows`, atomically, after setting aside (to results.tsv.damaged) every
        line of the file on disk that `rows` does not hold: a damaged line, or a row this writer did
        not know of (`reasons`: line number -> why, for rows left out on purpose). Returns those lines."""
        stray = strays(self.path, rows, reasons or {})
        if stray:
            set_aside(self.path, stray)
        atomic.write_text(self.path, render(rows))
        self.rows, self.damaged = list(rows), ()
        return stray

    def in_sync(self) -> bool:
        """Whether the file on disk is what this ledger last wrote or read (its rows, no damaged line)."""
        try:
            return self.path.read_text(encoding="utf-8") == render(self.rows) and not self.damaged
        except (OSError, UnicodeDecodeError):
            return False

    def run_ids(self) -> set[str]:
        return {r.run_id for r in self.rows if r.run_id}


def line(row: Row) -> str:
    """A row as one ledger line (no line end): what `render` writes for it."""
    return "\t".join(_fmt(name, getattr(row, name)) for name in COLUMNS)


def cells(row: Row) -> dict[str, str]:
    """A row as its ledger cells, column -> text: what row.json holds, so it rebuilds the row exactly."""
    return dict(zip(COLUMNS, line(row).split("\t")))


def from_cells(values: dict) -> Row:
    """The row that `cells` gave; a ValueError that says what is wrong when they are not a valid row."""
    if not isinstance(values, dict) or not all(isinstance(values.get(c), str) for c in REFERENCE_COLUMNS):
        raise ValueError(f"not a ledger row (the cells {', '.join(REFERENCE_COLUMNS)} are needed)")
    present = [name for name in COLUMNS if isinstance(values.get(name), str)]
    return _row([values[name] for name in present], list(enumerate(present)))


def save_row(run_dir: Path, row: Row) -> None:
    """Write a run's ledger row into its run folder (row.json), the record a lost ledger row is rebuilt from."""
    atomic.write_json(Path(run_dir) / ROW_FILE, cells(row))


def load_row(run_dir: Path) -> Row | None:
    """The ledger row a run folder holds (row.json); None when it has none or it is unreadable."""
    try:
        return from_cells(json.loads((Path(run_dir) / ROW_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def render(rows: list[Row]) -> str:
    out = io.StringIO()
    out.write("\t".join(COLUMNS) + "\n")
    for row in rows:
        out.write("\t".join(_fmt(name, getattr(row, name)) for name in COLUMNS) + "\n")
    return out.getvalue()


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damaged:
    """A line of a ledger that is not a valid row, kept as it was."""

    line: int  # its number in the file, counting every line as an editor does
    text: str  # the line as it was (bytes that are not UTF-8 kept as surrogate escapes)
    problem: str  # what is wrong with it, in words

    def describe(self, source: Path | str) -> str:
        return f"{source}, line {self.line}: {self.problem}"


@dataclass(frozen=True)
class Contents:
    """What a ledger file holds: its header's column names, its valid rows in order (with their line
    numbers), the lines that are not valid rows, and the lines set aside beside it earlier."""

    columns: tuple[str, ...]
    rows: list[Row]
    damaged: tuple[Damaged, ...] = ()
    lines: tuple[int, ...] = ()  # the line number of each row
    source: str = "results.tsv"
    set_aside: tuple[Damaged, ...] = ()  # what results.tsv.damaged holds

    @property
    def reference(self) -> bool:
        """A plain reference ledger (no `kind` column): by convention its first measured row is the baseline."""
        return "kind" not in self.columns


def read(path: Path) -> Contents:
    """The ledger at `path`, every line validated; its damaged lines are in `damaged`, never skipped in
    silence. A LedgerError for a missing or unreadable file, or one that is not a ledger at all."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"no {path.name} in {path.parent}") from None
    except OSError as e:
        raise LedgerError(f"cannot read {path} ({e.strerror})") from None
    contents = parse(data.decode("utf-8", errors="surrogateescape"), path)
    return Contents(contents.columns, contents.rows, contents.damaged, contents.lines, contents.source,
                    read_set_aside(path))


def _split_lines(text: str) -> list[tuple[int, str]]:
    lines = text.removeprefix("\ufeff").split("\n")  # a byte-order mark from a spreadsheet is not a column name
    return [(n, line.rstrip("\r")) for n, line in enumerate(lines, start=1) if line.strip()]


def _undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def parse(text: str, source: Path | str = "results.tsv") -> Contents:
    """The rows of a ledger's text (ours or a plain five-column reference one); `source` names it.

    Blank lines are skipped; every other line is a row or a `Damaged` line. Line numbers count every
    line of the file, as an editor does. A LedgerError when the text is not a ledger (no header).
    """
    numbered = _split_lines(text)
    if not numbered:
        raise LedgerError(
            f"{source} is empty (not even its header line): no runs recorded yet; delete the empty file "
            "(the loop writes it anew with its first run)")
    header_line, header_text = numbered[0]
    if _undecodable(header_text):
        raise LedgerError(
            f"{source} is not a text file (not UTF-8, from line {header_line}): a results ledger is UTF-8 text; "
            "save it as UTF-8")
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
    last = len(text.removeprefix("\ufeff").split("\n"))  # the line after the last line end, if any text
    rows, numbers, damaged = [], [], []
    for n, line_text in numbered[1:]:
        cells = line_text.split("\t")
        try:
            if _undecodable(line_text):
                raise ValueError("not UTF-8 text (save the file as UTF-8)")
            if len(cells) < need:
                raise ValueError(f"{len(cells)} tab-separated cell(s), expected at least {need} "
                                 f"({' '.join(header[:need])})")
            if n == last and len(cells) < len(header):
                raise ValueError(f"cut short: no line end and {len(cells)} of the header's {len(header)} cells "
                                 "(a write that was interrupted?)")
            rows.append(_row(cells, used))
            numbers.append(n)
        except ValueError as e:
            damaged.append(Damaged(n, line_text, " ".join(str(e).split())))
    return Contents(header, rows, tuple(damaged), tuple(numbers), str(source))


def damaged_path(path: Path) -> Path:
    """Where the lines set aside from the ledger at `path` are kept: results.tsv.damaged beside it."""
    return Path(path).with_name(Path(path).name + DAMAGED_SUFFIX)


def read_set_aside(path: Path) -> tuple[Damaged, ...]:
    """The lines set aside from the ledger at `path` (its .damaged file); () when there is none."""
    try:
        text = damaged_path(path).read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError:
        return ()
    out = []
    for n, entry in _split_lines(text):
        if entry == DAMAGED_HEADER:
            continue
        number, _, rest = entry.partition("\t")
        _, _, rest = rest.partition("\t")  # when
        problem, _, original = rest.partition("\t")
        out.append(Damaged(int(number), original, problem) if number.isdigit() else Damaged(0, entry, "?"))
    return tuple(out)


def set_aside(path: Path, lines: Sequence[Damaged]) -> None:
    """Add `lines` of the ledger at `path` to its .damaged file (atomically; a line already there, with
    the same number and text, is not added twice: a writer killed before its rename sets it aside again)."""
    target = damaged_path(path)
    try:
        old = target.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        old = ""
    known = {(d.line, d.text) for d in read_set_aside(path)}
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    new = [f"{d.line}\t{stamp}\t{' '.join(d.problem.split())}\t{d.text}\n" for d in lines
           if (d.line, d.text) not in known]
    if not new:
        return
    head = old if old.strip() else DAMAGED_HEADER + "\n"
    head += "" if head.endswith("\n") else "\n"
    atomic.write_bytes(target, (head + "".join(new)).encode("utf-8", errors="surrogateescape"))


def strays(path: Path, rows: Sequence[Row], reasons: dict[int, str]) -> list[Damaged]:
    """The lines of the ledger file at `path` that writing `rows` would drop: damaged lines, and rows
    that `rows` does not hold (compared as the lines they render to)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    try:
        contents = parse(text, path)
    except LedgerError as e:  # not a ledger at all: every line of it is kept aside
        return [Damaged(n, t, str(e)) for n, t in _split_lines(text)]
    wanted = Counter(line(r) for r in rows)
    out = list(contents.damaged)
    by_line = dict(_split_lines(text))
    for n, row in zip(contents.lines, contents.rows):
        key = line(row)
        if wanted[key] and n not in reasons:
            wanted[key] -= 1
        else:
            out.append(Damaged(n, by_line[n], reasons.get(n, "a row the writer did not know of (the file "
                                                             "changed while it was open)")))
    return sorted(out, key=lambda d: d.line)


def warnings(contents: Contents) -> list[str]:
    """What every command that reads the ledger says about its damage, one line each: the damaged
    lines (left out, left in the file) and the lines set aside beside it. [] when there is none."""
    out = [f"warning: {d.describe(contents.source)}; the line is left out of what is shown, kept in the file "
           f"as it is (fix it, or `autoresearch ledger check --repair` moves it to {Path(contents.source).name}"
           f"{DAMAGED_SUFFIX})" for d in contents.damaged]
    if contents.set_aside:
        numbers = ", ".join(str(d.line) for d in contents.set_aside)
        out.append(f"warning: {contents.source}{DAMAGED_SUFFIX} holds {len(contents.set_aside)} line(s) set aside "
                   f"from {Path(contents.source).name} (its line(s) {numbers}): fix them and add them back, or "
                   "delete that file once you have read it")
    return out


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
