"""`autoresearch track`: a workspace's ledger and run folders, written into trackers.

The same records (record.py) and the same trackers as the loop's live tracking, so a backfill
gives what live tracking gives; a tracker skips the runs it already holds, so it can run again
at any time (after a loop whose tracker failed, or to add a tracker to an old research).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autoresearch import ledger_check
from autoresearch.errors import SettingsError
from autoresearch.tracking import NAMES, base, config
from autoresearch.tracking.record import collect
from autoresearch.workspace import Workspace


@dataclass(frozen=True)
class Backfilled:
    tracker: str
    written: int  # runs written now
    present: int  # runs it already held (or, for TensorBoard, rows without a run folder)


def backfill(ws: Workspace, names: list[str] | None, log: Callable[[str], None] = print) -> list[Backfilled]:
    """Write every ledger row of `ws` into the trackers `names` (else those of [tracking])."""
    settings = config.load(ws.root).with_trackers(names)
    if not settings.trackers:
        raise SettingsError(f"name the tracker(s) to write: `autoresearch track --mlflow` (or {', '.join(NAMES)}), "
                            "or list them in [tracking] trackers of autoresearch.toml")
    if not ws.ledger_path.exists():
        raise SettingsError(f"{ws.ledger_path} does not exist yet: nothing to track before the first run")
    contents, warnings = ledger_check.read_for_display(ws.ledger_path, ws.runs_dir)
    for line in warnings:
        log(line)
    base.keep_out_of_git(ws, settings)
    runs = collect(ws, contents.rows)
    done = []
    for name in settings.trackers:
        tracker = base.make(name, ws, settings)
        try:
            written = sum(tracker.write(run) for run in runs)
        finally:
            tracker.close()
        done.append(Backfilled(name, written, len(runs) - written))
        log(f"{name}: {written} run(s) written, {len(runs) - written} already there or without a run folder")
    return done
