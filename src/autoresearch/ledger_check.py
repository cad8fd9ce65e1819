"""`autoresearch ledger check [--repair]`: the ledger against the run folders, which are the source of truth.

What can be wrong with a ledger (results.tsv), and what is done about it:

- a damaged line (not a valid row: garbage, a last line cut short by a crash): reported with its
  line number (`ledger.warnings`, the message every reading command prints); `--repair` moves it
  to results.tsv.damaged, as it was, with its line number;
- a row missing from the ledger although its run folder holds it (`runs/<id>/row.json`, written
  with every row): restored, exactly, by `--repair` and by the loop at start;
- two rows of the same run: the one that matches its row.json (else the first) stays, `--repair`
  sets the other aside;
- a row that differs from its run folder's row.json (a val_bpb edited by hand): reported cell by
  cell, and put back as row.json holds it by `--repair` and by the loop at start (the edited line
  goes to results.tsv.damaged);
- a row whose run folder is gone: a warning only; the row is the record and stays;
- a finished run (result.json) with neither a row nor a row.json: a warning (an older version's
  run, or one whose candidate is still being decided); it cannot be rebuilt exactly.

Repairing never drops a line: every line of the file that is not kept goes to results.tsv.damaged
before the file is replaced, atomically (`Ledger.write`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch import ledger
from autoresearch.errors import LedgerError
from autoresearch.ledger import Contents, Ledger, Row
from autoresearch.rundir import RESULT_FILE
from autoresearch.workspace import LEDGER_FILE, RUNS_DIR


@dataclass(frozen=True)
class Duplicate:
    run_id: str
    lines: tuple[int, ...]  # line numbers of its rows in the ledger
    keep: int  # the line that stays: the one matching row.json, else the first


@dataclass(frozen=True)
class Edited:
    """A row of the ledger that differs from the row its run folder holds (row.json)."""

    line: int
    row: Row  # as the ledger has it
    saved: Row  # as its run folder holds it: the truth

    def differences(self) -> list[str]:
        """Each differing cell: `column: 'in the ledger' (row.json: 'in the run folder')`."""
        now, then = ledger.cells(self.row), ledger.cells(self.saved)
        return [f"{c} {now[c]!r} (row.json: {then[c]!r})" for c in ledger.COLUMNS if now[c] != then[c]]


@dataclass(frozen=True)
class Check:
    """What is wrong with a ledger, measured against its run folders."""

    path: Path
    runs_dir: Path
    contents: Contents | None  # None: there is no ledger file yet
    missing: tuple[Row, ...]  # rows that run folders hold (row.json) and the ledger lacks, by run id
    duplicates: tuple[Duplicate, ...]
    orphans: tuple[tuple[int, Row], ...]  # (line, row) of rows whose run folder is gone
    unrecorded: tuple[str, ...]  # run ids of finished runs with neither a row nor a row.json
    edited: tuple[Edited, ...] = ()  # rows that differ from their run folder's row.json

    @property
    def damaged(self) -> tuple[ledger.Damaged, ...]:
        return self.contents.damaged if self.contents else ()

    def problems(self) -> list[str]:
        """What is wrong: damaged lines, rows missing from the ledger, duplicate rows (each a line)."""
        out = [w.removeprefix("warning: ") for w in ledger.warnings(self._damage_only())]
        out += [f"{self.path}: the row of run {r.run_id} ({r.status}, {r.description}) is missing; its run folder "
                f"holds it ({self.runs_dir.name}/{r.run_id}/{ledger.ROW_FILE})" for r in self.missing]
        out += [f"{self.path}, lines {', '.join(map(str, d.lines))}: {len(d.lines)} rows of run {d.run_id} "
                f"(line {d.keep} is the one its run folder holds)" for d in self.duplicates]
        out += [f"{self.path}, line {e.line}: the row of run {e.row.run_id} differs from its run folder's record "
                f"({self.runs_dir.name}/{e.row.run_id}/{ledger.ROW_FILE}): {'; '.join(e.differences())}"
                for e in self.edited]
        return out

    def warnings(self) -> list[str]:
        """What is worth knowing but loses nothing: lines set aside earlier, rows without run folders,
        finished runs that cannot be rebuilt."""
        out = []
        if self.contents and self.contents.set_aside:
            out += [w.removeprefix("warning: ") for w in ledger.warnings(
                Contents(self.contents.columns, [], source=self.contents.source, set_aside=self.contents.set_aside))]
        out += [f"{self.path}, line {n}: run {r.run_id} has no run folder ({self.runs_dir.name}/{r.run_id} is "
                "gone); the row stays, it is the record" for n, r in self.orphans]
        if self.unrecorded:
            out.append(f"finished run(s) {', '.join(self.unrecorded)} have no ledger row and no "
                       f"{ledger.ROW_FILE} to rebuild one from (a run whose candidate is still being decided, or "
                       "one from an older version)")
        return out

    def _damage_only(self) -> Contents:
        c = self.contents
        return Contents(c.columns, [], c.damaged, source=c.source) if c else Contents((), [], ())


def _run_number(run_id: str) -> tuple[int, str]:
    return (int(run_id), run_id) if run_id.isdigit() else (1 << 62, run_id)


def inspect(path: Path, runs_dir: Path) -> Check:
    """Compare the ledger at `path` with the run folders in `runs_dir`. A LedgerError only when the
    file is not a ledger at all (then nothing can be compared)."""
    path, runs_dir = Path(path), Path(runs_dir)
    contents = ledger.read(path) if path.exists() else None
    rows = contents.rows if contents else []
    lines = contents.lines if contents else ()
    folders = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: _run_number(p.name)) \
        if runs_dir.is_dir() else []
    names = {p.name for p in folders}
    by_run: dict[str, list[int]] = {}
    for n, row in zip(lines, rows):
        if row.run_id:
            by_run.setdefault(row.run_id, []).append(n)
    missing, unrecorded = [], []
    for folder in folders:
        if folder.name in by_run:
            continue
        saved = ledger.load_row(folder)
        if saved is not None and saved.run_id == folder.name:
            missing.append(saved)
        elif (folder / RESULT_FILE).exists():
            unrecorded.append(folder.name)
    duplicates = []
    for run_id, numbers in by_run.items():
        if len(numbers) > 1:
            saved = ledger.load_row(runs_dir / run_id)
            by_line = dict(zip(lines, rows))
            match = [n for n in numbers if saved is not None and ledger.line(by_line[n]) == ledger.line(saved)]
            duplicates.append(Duplicate(run_id, tuple(numbers), (match or numbers)[0]))
    orphans = tuple((n, r) for n, r in zip(lines, rows) if r.run_id and r.run_id not in names)
    edited = []
    for n, row in zip(lines, rows):
        if row.run_id in names and len(by_run[row.run_id]) == 1:
            saved = ledger.load_row(runs_dir / row.run_id)
            if saved is not None and saved.run_id == row.run_id and ledger.line(saved) != ledger.line(row):
                edited.append(Edited(n, row, saved))
    return Check(path, runs_dir, contents, tuple(missing), tuple(duplicates), orphans, tuple(unrecorded),
                 tuple(edited))


def read_for_display(path: Path, runs_dir: Path) -> tuple[Contents, list[str]]:
    """What a reading command (status, report, dashboard) shows and says: the ledger's valid rows, and
    its warnings: each damaged line with its number, lines set aside, rows its run folders hold that
    it lacks. A LedgerError only for a file that is not a ledger at all."""
    check = inspect(path, runs_dir)
    contents = check.contents or ledger.read(path)  # no file: read's error names it
    out = ledger.warnings(contents)
    if check.missing:
        out.append(f"warning: {path}: {len(check.missing)} finished run(s) are missing from it (run(s) "
                   f"{', '.join(r.run_id for r in check.missing)}): `autoresearch ledger check --repair` restores "
                   "them from their run folders (the loop does at its start)")
    return contents, out


def merged(rows: list[Row], restored: list[Row]) -> list[Row]:
    """`rows` with the `restored` ones put back where they were: each before the first row of a later run."""
    out = list(rows)
    for row in sorted(restored, key=lambda r: _run_number(r.run_id)):
        later = next((i for i, r in enumerate(out)
                      if r.run_id and _run_number(r.run_id) > _run_number(row.run_id)), len(out))
        out.insert(later, row)
    return out


@dataclass(frozen=True)
class Repaired:
    restored: tuple[Row, ...]  # rows put back from their run folders
    set_aside: tuple[ledger.Damaged, ...]  # lines moved to results.tsv.damaged
    corrected: tuple[Edited, ...] = ()  # edited rows put back as their run folders hold them

    def lines(self, path: Path) -> list[str]:
        """What a repair did, in words (one line each; none when it did nothing)."""
        out = []
        if self.restored:
            out.append(f"{path.name}: restored {len(self.restored)} row(s) from their run folders (run(s) "
                       f"{', '.join(r.run_id for r in self.restored)})")
        for e in self.corrected:
            out.append(f"{path.name}: put back the row of run {e.row.run_id} (line {e.line}) as its run folder holds "
                       f"it: {'; '.join(e.differences())}")
        if self.set_aside:
            out.append(f"{path.name}: moved line(s) {', '.join(str(d.line) for d in self.set_aside)} to "
                       f"{ledger.damaged_path(path).name}, as they were")
        return out


def repair(check: Check, book: Ledger | None = None) -> Repaired:
    """Rebuild the ledger from its readable rows and the run folders: missing rows restored, damaged
    lines and second rows of a run set aside in results.tsv.damaged, nothing dropped, atomically.
    `book`: the Ledger the caller holds open on the same file (the loop's), kept up to date."""
    if not (check.missing or check.duplicates or check.damaged or check.edited):
        return Repaired((), ())
    contents = check.contents
    rows, lines = (contents.rows, contents.lines) if contents else ([], ())
    extra = {n: f"a second row of run {d.run_id} (line {d.keep} is kept)"
             for d in check.duplicates for n in d.lines if n != d.keep}
    truth = {e.line: e.saved for e in check.edited}
    extra.update({e.line: f"edited: it differs from {check.runs_dir.name}/{e.row.run_id}/{ledger.ROW_FILE} "
                          f"({'; '.join(e.differences())}), which is put back" for e in check.edited})
    kept = [truth.get(n, r) for n, r in zip(lines, rows) if n not in extra or n in truth]
    book = book or Ledger(check.path)
    set_aside = book.write(merged(kept, list(check.missing)), extra)
    return Repaired(check.missing, tuple(set_aside), check.edited)


def restore(book: Ledger, runs_dir: Path, log: Callable[[str], None]) -> Repaired:
    """The loop at start: say what is damaged, and put back what the run folders hold (one line each)."""
    check = inspect(book.path, runs_dir)
    if check.contents:
        for line in ledger.warnings(check.contents):
            log(line)
    done = repair(check, book) if check.missing or check.damaged or check.edited else Repaired((), ())
    for line in done.lines(book.path):
        log(f"ledger: {line}")
    return done


def run_check(folder: Path, fix: bool, say: Callable[[str], None] = print) -> int:
    """`autoresearch ledger check [--repair]` on a results folder: 0 when nothing is wrong (or all was
    repaired), 1 when something is wrong."""
    path, runs_dir = Path(folder) / LEDGER_FILE, Path(folder) / RUNS_DIR
    if not path.exists() and not runs_dir.is_dir():
        raise LedgerError(f"no {LEDGER_FILE} and no {RUNS_DIR}/ in {folder}: name the folder that holds them")
    check = inspect(path, runs_dir)
    problems = check.problems()
    for line in problems:
        say(f"problem: {line}")
    for line in check.warnings():
        say(f"warning: {line}")
    if fix and problems:
        _ignore_in_git(Path(folder), ledger.damaged_path(path).name)
        for line in repair(check).lines(path):
            say(f"repaired: {line}")
        problems = inspect(path, runs_dir).problems()
        for line in problems:
            say(f"still wrong: {line}")
    rows = len(check.contents.rows) if check.contents else 0
    if not problems:
        say(f"{path}: {'repaired' if fix and check.problems() else 'ok'} ({rows} readable row(s) were read)")
    elif not fix:
        say(f"{len(problems)} problem(s): `autoresearch ledger check --repair` restores the missing rows and sets "
            f"damaged lines aside in {ledger.damaged_path(path).name}, dropping nothing")
    return 1 if problems else 0


def _ignore_in_git(folder: Path, name: str) -> None:
    """Keep results.tsv.damaged out of git in a workspace (its .gitignore may predate the file), so that
    the loop, which cleans untracked files, never removes it."""
    from autoresearch.git import Git

    git = Git(folder)
    if git.is_repo():
        git.exclude(f"/{name}")
