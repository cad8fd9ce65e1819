"""Notifications: what happened in the research, as small JSON documents for webhooks.

Three events (docs/tracking.md, "Notifications"):

    kept      an experiment was kept: its rows (the experiment run and its confirmation runs)
    crashes   CRASHES_IN_A_ROW runs in a row crashed or timed out: their rows
    ended     the loop ended: its closing line and why it stopped

`Events` finds them in the rows the loop records (cheap: it runs in the loop's thread and keeps
only the ledger as it was, a reference); `document` turns one into JSON in the publisher's
background thread, with the rows as the state document has them (docs/json.md, `ledger[i]`)
and the best val_bpb and commit as `status` computes them. webhook.py delivers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoresearch.ledger import Row, cells, from_cells
from autoresearch.report.reading import RunRecord
from autoresearch.report.state import ledger_row
from autoresearch.rundir import now
from autoresearch.status import summarize

SCHEMA_VERSION = 1
CRASHES_IN_A_ROW = 3
TEXT_CHARS = 500  # `text` is cut to this
FAILED = ("crash", "timeout")


@dataclass(frozen=True)
class Event:
    name: str  # kept | crashes | ended
    numbers: tuple[int, ...]  # the 1-based ledger rows involved
    ledger: tuple[Row, ...] | list[Row]  # the ledger when it happened (never changed afterwards)
    time: str
    closing_line: str = ""  # ended
    why: str = ""  # ended


class Events:
    """The events in a loop's recorded rows; counts the crashes in a row across calls."""

    def __init__(self, crashes_in_a_row: int = CRASHES_IN_A_ROW) -> None:
        self.limit = crashes_in_a_row
        self.crashed: list[int] = []  # ledger rows of the runs that failed in a row, so far

    def of(self, new: list[Row], ledger: list[Row]) -> list[Event]:
        """The events of rows `new` just recorded; `ledger`: every row, ending with them."""
        first = len(ledger) - len(new) + 1
        events = []
        if any(r.kind == "experiment" and r.status == "keep" for r in new):  # with its confirmation runs
            events.append(Event("kept", tuple(range(first, first + len(new))), ledger, now()))
        for number, row in enumerate(new, first):
            if not row.run_id:  # a proposal that never ran neither breaks nor extends a streak
                continue
            self.crashed = [*self.crashed, number] if row.status in FAILED else []
            if len(self.crashed) == self.limit:
                events.append(Event("crashes", tuple(self.crashed), ledger, now()))
                self.crashed = []
        return events


def ended(ledger: list[Row], closing_line: str, why: str) -> Event:
    return Event("ended", (), ledger, now(), closing_line=closing_line, why=why)


def document(event: Event, workspace: Path, branch: str) -> dict:
    """The JSON document of `event` (docs/tracking.md lists its fields)."""
    rows = [from_cells(cells(r)) for r in event.ledger]  # as results.tsv holds them (its rounding)
    summary = summarize(rows)  # the best and the running best; the noise is not used here
    frontier = (None, *summary.frontier)
    records = {n: RunRecord(number=n, row=rows[n - 1], best_before=frontier[n - 1], best=frontier[n], run_dir=None)
               for n in event.numbers}
    doc = {
        "schema_version": SCHEMA_VERSION, "event": event.name, "time": event.time,
        "workspace": str(workspace), "branch": branch,
        "best": {"val_bpb": summary.best, "commit": summary.best_commit, "description": summary.best_description},
        "rows": [ledger_row(records[n]) for n in event.numbers],
        "text": "",
    }
    if event.name == "ended":
        doc.update(closing_line=event.closing_line, why=event.why)
    doc["text"] = text(doc)
    return doc


def text(doc: dict) -> str:
    """The event in one line (the field chat webhooks such as Slack's show)."""
    line = _text(doc)
    return line if len(line) <= TEXT_CHARS else line[:TEXT_CHARS - 3] + "..."


def _text(doc: dict) -> str:
    where = f"autoresearch {Path(doc['workspace']).name} ({doc['branch']})"
    best = doc["best"]
    best_line = "no best yet" if best["val_bpb"] is None else f"best val_bpb {best['val_bpb']:.6f} ({best['commit']})"
    if doc["event"] == "kept":
        first = doc["rows"][0]
        return f"{where}: kept {first['description']!r} ({first['rule']}); {best_line}"
    if doc["event"] == "crashes":
        last = doc["rows"][-1]
        return f"{where}: {len(doc['rows'])} runs in a row crashed or timed out, the last {last['description']!r} " \
               f"({last['why']}); {best_line}"
    return f"{where}: the loop ended ({doc['why']}): {doc['closing_line']}"
