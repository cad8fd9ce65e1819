"""Which command holds a workspace: one command that runs experiments at a time.

`loop`, `run`, `rebaseline` and `audit` all resume what a stopped command left under way, and
resuming ends the processes of the runs it finds unfinished. A second such command started while
the first still runs would end the first one's runs, and both would write the state file and the
ledger. So the command that opens a workspace (Loop.open) records itself in
`.autoresearch/holder.json` (its pid and the process's start time) and removes the file when it
closes; another command that finds a live holder there refuses, naming it. A holder that is gone
(killed, the machine rebooted; its pid dead or reused by another process) holds nothing.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime

import psutil

from autoresearch import atomic
from autoresearch.errors import WorkspaceError
from autoresearch.workspace import STATE_DIR, Workspace

HOLDER_FILE = "holder.json"  # in STATE_DIR


@dataclass(frozen=True)
class Holder:
    pid: int
    started: float  # the process's start time (psutil create_time): a reused pid is another process
    command: str

    def alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except psutil.Error:
            return False


def _path(ws: Workspace):
    return ws.root / STATE_DIR / HOLDER_FILE


def current(ws: Workspace) -> Holder | None:
    """The live process that holds the workspace, other than this one; None when there is none."""
    try:
        data = json.loads(_path(ws).read_text(encoding="utf-8"))
        holder = Holder(int(data["pid"]), float(data["started"]), str(data.get("command") or "autoresearch"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if holder.pid == os.getpid() or not holder.alive():
        return None
    return holder


def claim(ws: Workspace) -> None:
    """Hold the workspace for this process; a WorkspaceError naming the holder when another live one does."""
    holder = current(ws)
    if holder is not None:
        since = datetime.fromtimestamp(holder.started).strftime("%H:%M:%S")
        raise WorkspaceError(
            f"`{holder.command}` (pid {holder.pid}, started at {since}) is running in this workspace: wait for it "
            f"to end, or stop it (Ctrl-C in its terminal, or `kill {holder.pid}`; nothing recorded is lost), then "
            "run this again. Two commands that run experiments cannot share a workspace")
    me = psutil.Process()
    command = " ".join(["autoresearch", *sys.argv[1:2]]) if sys.argv and "autoresearch" in sys.argv[0] \
        else "autoresearch (from Python)"
    (ws.root / STATE_DIR).mkdir(parents=True, exist_ok=True)
    atomic.write_json(_path(ws), {"pid": me.pid, "started": me.create_time(), "command": command})


def release(ws: Workspace) -> None:
    """Give the workspace up, if this process holds it."""
    try:
        data = json.loads(_path(ws).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == os.getpid():
        _path(ws).unlink(missing_ok=True)
