"""`autoresearch logs RUN [-f]`: a run's train.log, and following it while the run is under way.

RUN is a run id as in results.tsv's run_id column (`0003`) or `last` (the newest run folder, which
is the run under way while the loop trains). Following stops when the run has ended: its folder
has its result record (result.json), or results.tsv records it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from autoresearch import ledger
from autoresearch.errors import UnknownRunError
from autoresearch.rundir import LOG_FILE, RESULT_FILE
from autoresearch.workspace import LEDGER_FILE, RUNS_DIR

POLL_S = 0.5
CHUNK = 1 << 16


def run_order(run_id: str) -> tuple[int, str]:
    """Run ids are numbers counted up (0099, 0100, ..., 10000): the longer one is the later one."""
    return len(run_id), run_id


def recorded_runs(folder: Path) -> list[str]:
    """The run ids results.tsv records (none when it is missing)."""
    path = Path(folder) / LEDGER_FILE
    if not path.is_file():
        return []
    return [r.run_id for r in ledger.read(path).rows if r.run_id]


def known_runs(folder: Path) -> list[str]:
    """Every run id of the folder, oldest first: the ledger's and the run folders' (a run under way has
    a folder before results.tsv records it)."""
    runs = Path(folder) / RUNS_DIR
    folders = {p.name for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()
    return sorted(folders | set(recorded_runs(folder)), key=run_order)


def resolve(folder: Path, run: str) -> Path:
    """The run folder of `run` (a run id or `last`); UnknownRunError naming the known range otherwise."""
    known = known_runs(folder)
    if not known:
        raise UnknownRunError(f"{folder} has no runs yet: start one with `autoresearch loop` or `autoresearch run`")
    run_id = known[-1] if run == "last" else run
    if run_id not in known and run.isdigit():  # `3` for `0003`
        run_id = next((k for k in known if k.isdigit() and int(k) == int(run)), run_id)
    if run_id not in known:
        raise UnknownRunError(f"no run {run!r} in {folder}: its runs are {known[0]} to {known[-1]} "
                              f"({len(known)} run{'s' if len(known) != 1 else ''}), or `last` for the newest")
    run_dir = Path(folder) / RUNS_DIR / run_id
    if not run_dir.is_dir():
        raise UnknownRunError(f"run {run_id} is in results.tsv but has no run folder {run_dir} "
                              "(deleted, or a reference ledger): there is no train.log to show")
    return run_dir


def ended(folder: Path, run_dir: Path) -> bool:
    """The run has its result record, or results.tsv records it."""
    return (run_dir / RESULT_FILE).exists() or run_dir.name in recorded_runs(folder)


def show(folder: Path, run_dir: Path, follow: bool = False, out: BinaryIO | None = None,
         sleep: Callable[[float], None] = time.sleep) -> None:
    """Copy train.log to `out`; with `follow`, keep copying what the run appends until it has ended."""
    out = out or sys.stdout.buffer
    path = run_dir / LOG_FILE
    offset = 0
    while True:
        done = not follow or ended(folder, run_dir)  # checked before the last read: nothing written is missed
        offset = _copy_from(path, offset, out)
        if done:
            break
        sleep(POLL_S)
    if offset == 0 and not follow:
        print(f"(no {LOG_FILE} in {run_dir} yet)", file=sys.stderr)


def _copy_from(path: Path, offset: int, out: BinaryIO) -> int:
    """Write what `path` holds past `offset`; the new offset (0 while the file does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(CHUNK):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    out.flush()
    return offset
