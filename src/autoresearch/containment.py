"""Containment: undo what an untrusted process changed in the workspace, except what it was allowed to.

Two callers run untrusted code in the workspace and call `contain` once it has exited, with
`before` taken just before it started:

- the runner, after train.py: it allows only its own run folder (train.py is reverted too);
- the `cmd` proposer, after a coding agent: it allows train.py (the proposal) and the agent's files.

Whatever is not allowed is undone:

- the guarded state (guard.py): the fixed files, the ledger, HEAD, the branch, every ref, the
  harness code, as the snapshot holds them;
- every other tracked file, as the HEAD the process started from has it (a file it added removed);
- files it created: untracked ones, and new ones among the ignored (`runs/`, `report.html`) that are
  watched (`watched`: not bytecode caches, not the notes or the harness's state folder, which the
  harness and the proposers write).

Watched ignored files it deleted are only reported: nothing holds their bytes. What was undone comes
back as `Undone`; each caller decides what it means (the runner: a guarded change makes the run
`invalid`, the rest are flags).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from autoresearch import guard
from autoresearch.workspace import NOTES_FILE, STATE_DIR, Workspace


@dataclass(frozen=True)
class Before:
    """The workspace before the process ran: the guarded state and the ignored files there were."""

    guarded: guard.Snapshot
    ignored: frozenset[str]


def take(ws: Workspace, package: dict[Path, bytes] | None = None) -> Before:
    """`package`: the harness code's bytes, when the caller took them once already (guard.take)."""
    return Before(guard.take(ws, package=package), frozenset(ws.git.untracked(ignored=True)))


@dataclass(frozen=True)
class Undone:
    """What containment found and undid."""

    guarded: tuple[str, ...] = ()  # guard.changes phrases: restored
    modified: tuple[str, ...] = ()  # other tracked files edited or deleted: restored
    created: tuple[str, ...] = ()  # files the process created: deleted
    lost: tuple[str, ...] = ()  # watched untracked files it deleted: they cannot be restored

    def phrases(self) -> list[str]:
        """One short phrase per thing undone (or lost)."""
        return [*self.guarded,
                *(f"{p} was modified (restored)" for p in self.modified),
                *(f"{p} was created (deleted)" for p in self.created),
                *(f"{p} was deleted (untracked: it cannot be restored)" for p in self.lost)]


def allowed(path: str, allow: Collection[str]) -> bool:
    """`allow` holds paths relative to the workspace; one that ends in `/` allows all under it."""
    return path in allow or any(a.endswith("/") and path.startswith(a) for a in allow)


def watched(path: str) -> bool:
    """Ignored files whose appearance or loss counts (not caches, nor what the harness and the
    proposers write there while the process runs)."""
    return "__pycache__/" not in path and path != NOTES_FILE and not path.startswith(f"{STATE_DIR}/")


def contain(ws: Workspace, before: Before, allow: Collection[str] = ()) -> Undone:
    """Undo everything the process changed since `before` except the paths in `allow`."""
    git, head = ws.git, before.guarded.head
    kept = {p: _read(ws.root / p) for p in allow if not p.endswith("/")}
    # read before anything is undone: a reset of HEAD would hide what the process changed
    changed = [(status, p) for status, p in git.tracked_changes(head)
               if p not in guard.GUARDED_FILES and not allowed(p, allow)]
    found = guard.changes(before.guarded, ws)
    if found:
        guard.restore(before.guarded, ws)  # fixed files, ledger, refs, HEAD, harness code; resets the tree
    for path, data in kept.items():
        _put_back(ws.root / path, data)
    git.restore_paths([p for _, p in git.tracked_changes("HEAD")
                       if p not in guard.GUARDED_FILES and not allowed(p, allow)])
    created = [p for status, p in changed if status == "A"]
    for p in git.untracked():
        if not allowed(p, allow):
            _remove(ws.root, p)
            created.append(p)
    for folder in git.untracked(directories=True):  # folders it made that hold nothing (else, kept)
        if folder.endswith("/") and not allowed(folder, allow):
            for path, _, _ in os.walk(ws.root / folder, topdown=False):
                with contextlib.suppress(OSError):  # not empty
                    os.rmdir(path)
    ignored = set(git.untracked(ignored=True))
    for p in sorted(ignored - before.ignored):
        if watched(p) and not allowed(p, allow):
            _remove(ws.root, p)
            created.append(p)
    lost = [p for p in sorted(before.ignored - ignored)
            if watched(p) and not allowed(p, allow) and not (ws.root / p).exists()]
    return Undone(guarded=tuple(found), modified=tuple(p for status, p in changed if status != "A"),
                  created=tuple(created), lost=tuple(lost))


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _put_back(path: Path, data: bytes | None) -> None:
    """An allowed file as the process left it (undoing a reset of HEAD may have changed it)."""
    if data is None:
        if path.is_file() or path.is_symlink():
            path.unlink()
    elif _read(path) != data:
        path.write_bytes(data)


def _remove(root: Path, relative: str) -> None:
    """Delete a file (a nested repository, `name/`: the folder), then the folders it leaves empty."""
    path = root / relative
    if relative.endswith("/"):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty
            break
