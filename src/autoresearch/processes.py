"""Keeping a run's processes contained: find every process it started, and end them.

A run starts in its own session and process group, so one signal reaches everything that stays
in the group. A process that leaves the group (`setsid`, a double fork) is still found:
- on Linux the harness process is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so orphaned
  descendants are re-parented to it rather than to init, and show up as its children;
- every run's environment carries AUTORESEARCH_RUN_ID, which its descendants inherit; processes
  of this user that carry it are found by a scan (the fallback on macOS). Its value is the run's
  key: the absolute path of its run folder, unique across workspaces, so two workspaces (or two
  workers) with the same run number never touch each other's processes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import psutil

ENV_RUN_ID = "AUTORESEARCH_RUN_ID"
AGENT_KEY_PREFIX = "agent-"  # the key of a proposer's agent run (proposers/cmd.py): no data inside it
# The harness process's pid, inherited by what it starts itself (a tracker's helper process, such as
# wandb-core); a run's environment drops every AUTORESEARCH_RUN* variable, so its orphans lack it.
ENV_HARNESS = "AUTORESEARCH_RUNNER_PID"
_PR_SET_CHILD_SUBREAPER = 36


def run_key(run_dir: Path) -> str:
    """The identity a run's processes carry in ENV_RUN_ID: its run folder's absolute path."""
    return str(Path(run_dir).resolve())


def agent_key() -> str:
    """This process's ENV_RUN_ID when it runs inside a proposer's agent, else ""."""
    key = os.environ.get(ENV_RUN_ID, "")
    return key if key.startswith(AGENT_KEY_PREFIX) else ""


def mark_harness() -> None:
    """Mark this process's environment (ENV_HARNESS), so that a process it starts itself is told
    apart from a run's orphan re-parented to it: both are its children without a run's key."""
    os.environ[ENV_HARNESS] = str(os.getpid())


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux); True when it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _carries_key(proc: psutil.Process, key: str) -> bool:
    try:
        return proc.environ().get(ENV_RUN_ID) == key
    except (psutil.Error, OSError):
        return False


def run_processes(key: str, group: int | None, known: set[int]) -> list[psutil.Process]:
    """Live processes that belong to the run: in its process group, or orphans re-parented to us
    that carry its key (or no readable key), or any process of this user that carries its key."""
    me = psutil.Process()
    found: dict[int, psutil.Process] = {}
    if group is not None:
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == group:
                    found[proc.pid] = proc
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
    for child in me.children(recursive=True):
        if child.pid in known:
            continue
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            env = {}
        env_id = env.get(ENV_RUN_ID)
        ours = env.get(ENV_HARNESS) == str(me.pid)  # started by the harness itself, not by the run
        if env_id == key or (env_id is None and not ours and child.ppid() == me.pid):
            found[child.pid] = child
            for grandchild in child.children(recursive=True):
                found[grandchild.pid] = grandchild
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "uids"]):
        if proc.pid in found or proc.pid == me.pid or proc.pid in known:
            continue
        try:
            if proc.info["uids"] and proc.info["uids"].real == uid and _carries_key(proc, key):
                found[proc.pid] = proc
        except (psutil.Error, KeyError):
            continue
    return [p for p in found.values() if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_group(group: int, grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)


def kill_all(procs: list[psutil.Process], grace: float = 2.0) -> None:
    """Terminate, then kill, then reap (our re-parented children) the given processes."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def end_run(run_dir: Path, root: int | None = None) -> None:
    """End what a run left: every process carrying its key, and process `root` with everything it
    started (or, when `root` is this process, everything it started)."""
    tree: list[psutil.Process] = []
    try:
        parent = psutil.Process(root) if root is not None else None
        if parent is not None:
            tree = parent.children(recursive=True) + ([parent] if root != os.getpid() else [])
    except psutil.Error:
        pass
    kill_all(tree + run_processes(run_key(run_dir), None, {p.pid for p in tree}))


def reap_orphans(known: set[int]) -> None:
    """Collect re-parented orphans that exited on their own (else they stay zombies)."""
    for child in psutil.Process().children():
        if child.pid in known:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue
