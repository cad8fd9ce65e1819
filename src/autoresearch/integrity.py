"""The rules between runs: what changed in the branch and the ledger since the loop last wrote them.

The loop records what it decided in `.autoresearch/best.json`, per research branch: the best
commit, and a short hash of every ledger row it had written (`Decided`). Before every `run` and
`loop` step (`Loop.open`) the workspace is compared with that record:

- the branch at the recorded best, or one kept change ahead of it that the ledger records as kept
  (a loop killed between moving the branch and writing this file): nothing to do;
- the branch moved forward by commits made outside the harness (an agent's `git commit`): they are
  taken off the branch (`take_outside_commits`; kept under `refs/autoresearch/outside/`), their
  combined change is left in the working tree, and the loop judges it as one experiment against
  the recorded best, flagged as committed outside the harness. A change to another file than
  train.py among them is refused as any such edit is: set aside as a git stash, recorded invalid;
- the branch anywhere else (reset to an older commit, amended, replaced): refused
  (`BranchMovedError`), naming both commits and `autoresearch rebaseline`, which accepts it on
  purpose by measuring it as a new baseline;
- a row the loop wrote that is no longer in the ledger as it wrote it: a row with a run folder is
  put back from its row.json first (ledger_check.py); one whose run folder is gone too cannot be,
  and is refused (`LedgerChangedError`) with what is gone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from autoresearch import atomic, ledger
from autoresearch.errors import WorkspaceError
from autoresearch.ledger import Row
from autoresearch.rundir import now
from autoresearch.workspace import BEST_FILE, TRAIN_FILE, Workspace

OUTSIDE = "refs/autoresearch/outside/"  # keeps the commits made outside the harness after they are taken off
CANDIDATES = "refs/autoresearch/candidates/"  # where the loop keeps its candidates (loop.CANDIDATES)
REBASELINE = "autoresearch rebaseline"


class BranchMovedError(WorkspaceError):
    """The research branch is not where the harness left it, and not ahead of it."""


class LedgerChangedError(WorkspaceError):
    """Rows the loop wrote are gone from the ledger (or changed) and their run folders cannot restore them."""


@dataclass
class Decided:
    """What the loop decided on one research branch: its best commit, and the ledger it wrote."""

    branch: str
    commit: str  # the best commit (full hash)
    rows: list[str] = field(default_factory=list)  # row_hash of each ledger row, in order
    last_row: str = ""  # the ledger's last row, as its line
    at: str = ""  # when this was written


def row_hash(row: Row) -> str:
    """A short digest of a row's cells, as the ledger writes them."""
    return hashlib.sha256(ledger.line(row).encode()).hexdigest()[:16]


def _read(ws: Workspace) -> dict[str, dict]:
    try:
        data = json.loads((ws.state_dir / BEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load(ws: Workspace, branch: str) -> Decided | None:
    """What the loop recorded for `branch`; None when nothing is (a new branch, an older version)."""
    entry = _read(ws).get(branch)
    try:
        return Decided(**entry) if isinstance(entry, dict) else None
    except TypeError:
        return None


def remember(ws: Workspace, branch: str, commit: str, rows: list[Row]) -> None:
    """Record `commit` as the best of `branch`, with the ledger's rows as they are now (atomically)."""
    data = _read(ws)
    data[branch] = asdict(Decided(branch, commit, [row_hash(r) for r in rows],
                                  ledger.line(rows[-1]) if rows else "", now()))
    atomic.write_json(ws.state_dir / BEST_FILE, data)


# --- the branch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moved:
    """The branch is not at the recorded best."""

    branch: str
    best: str  # the recorded best (full hash)
    head: str  # where the branch is (full hash)
    forward: bool  # HEAD descends from the best: commits were added on top of it
    commits: tuple[str, ...] = ()  # forward: `short subject` of each commit, oldest first

    def refusal(self) -> BranchMovedError:
        return BranchMovedError(
            f"the branch {self.branch} is at {self.head[:7]}, but the best commit the harness decided is "
            f"{self.best[:7]}, and {self.head[:7]} does not descend from it (reset, amended or replaced outside the "
            f"harness): go back with `git reset --hard {self.best[:7]}`, or accept {self.head[:7]} on purpose with "
            f"`{REBASELINE}` (it measures it as a new baseline, recorded as such in the ledger)")

    def describe(self) -> str:
        """The commits, in words for the ledger: `committed outside the harness: abc1234 msg; ...`."""
        return "committed outside the harness: " + "; ".join(self.commits)


def _exists(ws: Workspace, commit: str) -> bool:
    return ws.git.read("cat-file", "-e", f"{commit}^{{commit}}") is not None


def _kept_by_harness(ws: Workspace, best: str, head: str, rows: list[Row]) -> bool:
    """Whether `head` is a candidate the loop kept on `best` (the branch moved before best.json was written)."""
    parent = ws.git.read("rev-parse", f"{head}^")
    return (parent or "").strip() == best and ws.git.read("rev-parse", "--verify", "--quiet",
                                                          f"{CANDIDATES}{head}") is not None \
        and any(r.commit == head[:7] and r.parent == best[:7] and r.status == "keep" for r in rows)


def moved(ws: Workspace, rows: list[Row]) -> Moved | None:
    """How the current branch moved from its recorded best; None when it did not (or nothing is recorded)."""
    git = ws.git
    branch = git.branch()
    decided = load(ws, branch)
    if decided is None:
        return None
    head = git.head()
    if head == decided.commit or _kept_by_harness(ws, decided.commit, head, rows):
        return None
    if not _exists(ws, decided.commit):
        return Moved(branch, decided.commit, head, False)
    forward = git.read("merge-base", "--is-ancestor", decided.commit, head) is not None
    commits = ()
    if forward:
        listed = git.read("log", "--reverse", "--format=%h %s", f"{decided.commit}..{head}") or ""
        commits = tuple(line for line in listed.splitlines() if line.strip())
    return Moved(branch, decided.commit, head, forward, commits)


def take_outside_commits(ws: Workspace, move: Moved, log: Callable[[str], None]) -> None:
    """The commits made on top of the best, taken off the branch: the branch back at the best, their
    combined change (and any uncommitted edit) left in the working tree, to be judged as one change.
    A ref under refs/autoresearch/outside/ keeps them."""
    git = ws.git
    git.update_ref(f"{OUTSIDE}{move.head}", move.head)
    git.run("reset", "--quiet", "--mixed", move.best)
    changed = git.changed_since(move.best)
    others = [p for p in changed if p != TRAIN_FILE]
    log(f"the branch moved from the best {move.best[:7]} to {move.head[:7]} by {len(move.commits)} commit(s) made "
        f"outside the harness ({'; '.join(move.commits[:3])}{' ...' if len(move.commits) > 3 else ''}): "
        f"`autoresearch run` commits for you. Their change is judged as one experiment against the best"
        + (f"; it also changes {', '.join(others[:5])}, which is refused" if others else "")
        + f" (the commits stay reachable as {OUTSIDE}{move.head[:7]})")


# --- the ledger ---------------------------------------------------------------------------------


def lost_rows(ws: Workspace, rows: list[Row]) -> list[str]:
    """Rows recorded in best.json for the current branch that the ledger no longer holds, as it wrote
    them (after the run folders restored what they could). One phrase each; [] when none."""
    decided = load(ws, ws.git.branch())
    if decided is None:
        return []
    have = Counter(row_hash(r) for r in rows)
    missing = []
    for i, digest in enumerate(decided.rows):
        if have[digest]:
            have[digest] -= 1
        else:
            missing.append(i + 1)
    if not missing:
        return []
    last = " (its last row was: " + " ".join(decided.last_row.split("\t")[:5]) + ")" \
        if len(decided.rows) in missing and decided.last_row else ""
    return [f"{len(missing)} row(s) the loop wrote (row(s) {', '.join(map(str, missing[:10]))}"
            f"{' ...' if len(missing) > 10 else ''} of the {len(decided.rows)} it had written{last}) are gone from "
            f"{ws.ledger_path.name} or changed, and no run folder holds them"]


def refuse_lost_rows(ws: Workspace, rows: list[Row]) -> None:
    problems = lost_rows(ws, rows)
    if problems:
        raise LedgerChangedError(
            f"{problems[0]}: put the line(s) back as they were ({ws.ledger_path.name}{ledger.DAMAGED_SUFFIX} may hold "
            f"them), or accept the ledger as it is now with `{REBASELINE}` (it measures the best again as a new "
            "baseline)")
