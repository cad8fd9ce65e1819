"""The interface every proposer implements.

A proposer looks at the research so far (`Context`) and changes `train.py` in the workspace's
working tree, returning a `Proposal` that describes the change. It never commits, runs or
records anything: the coordinator does, and decides. After the decision the proposer is told
the outcome (`observe`), so it can learn from every result, crashes included.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from autoresearch import atomic
from autoresearch.ledger import Ledger, Row
from autoresearch.rundir import PROPOSAL_FILE
from autoresearch.settings import Settings
from autoresearch.workspace import Workspace

PROPOSAL_DIR = "proposal"  # under the workspace's .autoresearch/: what the proposer leaves for the run folder
FAILED_DIR = "failed"  # under runs/: what failed proposals left behind, one folder each


@dataclass(frozen=True)
class Proposal:
    description: str  # one line: what changed (and why)
    hypothesis: str = ""  # what the proposer expects and why
    params: dict = field(default_factory=dict)  # machine-readable details (the search proposer's values)
    tokens: int = 0  # LLM tokens spent on this proposal (prompt + completion)
    cost_usd: float = 0.0  # and their price


@dataclass(frozen=True)
class Context:
    ws: Workspace
    settings: Settings
    ledger: Ledger
    best_commit: str
    best_source: str  # train.py of the best commit
    best_bpb: float | None
    sigma: float  # run-to-run noise of val_bpb
    in_flight: tuple[str, ...] = ()  # descriptions of proposals being run right now (parallel workers)
    returned: tuple[str, ...] = ()  # ideas that won against an older best but conflict with the current one
    busy_runs: tuple[str, ...] = ()  # run ids under way (their folders change while the proposer works)


class Proposer(Protocol):
    name: str

    def propose(self, ctx: Context) -> Proposal:
        """Change train.py in ctx.ws's working tree (starting from ctx.best_source)."""
        ...

    def observe(self, proposal: Proposal, rows: list[Row]) -> None:
        """Learn from the recorded outcome of a proposal (its ledger rows)."""
        ...


def save_proposal(run_dir: Path, proposal: Proposal, proposer: str) -> None:
    atomic.write_json(run_dir / PROPOSAL_FILE, {**asdict(proposal), "proposer": proposer})


def load_proposal(run_dir: Path) -> tuple[Proposal, str] | None:
    import json

    path = run_dir / PROPOSAL_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    proposer = data.pop("proposer", "")
    return Proposal(**data), proposer


# --- what a proposal leaves behind (the prompt a model saw, its replies, an agent's log) --------


def proposal_dir(ws: Workspace) -> Path:
    """Where a proposer writes the files that go into the run folder with its proposal."""
    return ws.state_dir / PROPOSAL_DIR


def clear_proposal_files(ws: Workspace) -> None:
    """Forget the files of the last proposal (it was decided, dropped or recorded as failed)."""
    folder = proposal_dir(ws)
    if folder.exists():
        shutil.rmtree(folder)


def begin_proposal(ws: Workspace) -> Path:
    """An empty proposal folder for a new proposal."""
    clear_proposal_files(ws)
    folder = proposal_dir(ws)
    folder.mkdir(parents=True)
    return folder


def copy_proposal_files(ws: Workspace, run_dir: Path, folder: Path | None = None) -> None:
    """Copy the current proposal's files (if any; or those kept in `folder`) into a run folder."""
    folder = folder or proposal_dir(ws)
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.is_file() and not (run_dir / path.name).exists():
            shutil.copyfile(path, run_dir / path.name)


def keep_failed_proposal(ws: Workspace, stamp: str) -> Path | None:
    """Move the files of a proposal that never became a run to a new runs/failed/<stamp>[-N]/; its path."""
    folder = proposal_dir(ws)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    dest = new_folder(ws.runs_dir / FAILED_DIR, stamp)
    for path in folder.iterdir():
        shutil.move(str(path), str(dest / path.name))
    folder.rmdir()
    return dest


def new_folder(parent: Path, name: str) -> Path:
    """A folder `name` under `parent` that did not exist before: `name`, else `name-2`, `name-3`...
    (created here, so two proposals failing within one second never share or delete one)."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        dest = parent / (name if n == 1 else f"{name}-{n}")
        try:
            dest.mkdir()
            return dest
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
