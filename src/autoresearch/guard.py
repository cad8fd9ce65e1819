"""What a run may not change, checked before and after every run, and put back when changed.

- the workspace's fixed files (`prepare.py`, `autoresearch.toml`, `program.md`, `.gitignore`);
- the ledger (`results.tsv`): only the coordinator writes it, after the run;
- the git state: HEAD, the branch it is on, every ref, and the committed `train.py`;
- the harness code: every file of the installed `autoresearch` package.

A snapshot holds the bytes, not just hashes, so a change can be undone exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import autoresearch
from autoresearch.workspace import LEDGER_FILE, PREPARE_FILE, PROGRAM_FILE, Workspace

GUARDED_FILES = (PREPARE_FILE, "autoresearch.toml", PROGRAM_FILE, ".gitignore", LEDGER_FILE)


def package_files() -> dict[Path, bytes]:
    root = Path(autoresearch.__file__).resolve().parent
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".py", ".md", ".toml")}


# The code that defines the measurement: its hash is part of every result's fingerprint.
EVALUATION_CODE = ("api.py", "clock.py", "evaluate.py", "evaluator.py", "handover.py", "loader.py", "tokenizer.py", "data/shards.py")


def evaluation_code_sha256() -> str:
    root = Path(autoresearch.__file__).resolve().parent
    h = hashlib.sha256()
    for name in EVALUATION_CODE:
        h.update(name.encode() + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, bytes | None]
    head: str
    branch: str
    refs: dict[str, str]
    package: dict[Path, bytes] = field(repr=False)


def take(ws: Workspace, package: dict[Path, bytes] | None = None) -> Snapshot:
    files = {}
    for name in GUARDED_FILES:
        path = ws.root / name
        files[name] = path.read_bytes() if path.exists() else None
    git = ws.git
    return Snapshot(files, git.head(), git.branch(), git.refs(), package if package is not None else package_files())


def changes(before: Snapshot, ws: Workspace) -> list[str]:
    """What differs from `before`, one short phrase each; empty when nothing does."""
    after = take(ws, package={})
    found = [f"{name} was {'deleted' if after.files[name] is None else 'modified'}"
             for name in GUARDED_FILES if after.files[name] != before.files[name]]
    if after.head != before.head or after.branch != before.branch:
        found.append(f"git HEAD moved ({before.branch}@{before.head[:7]} -> {after.branch}@{after.head[:7]})")
    if after.refs != before.refs and after.head == before.head:
        found.append("git refs were changed")
    for path, data in before.package.items():
        if not path.exists() or path.read_bytes() != data:
            found.append(f"harness code {path.name} was modified")
    return found


def restore(before: Snapshot, ws: Workspace) -> None:
    """Put back every guarded file, the refs, HEAD and the harness code as they were."""
    for name, data in before.files.items():
        path = ws.root / name
        if data is None:
            path.unlink(missing_ok=True)
        elif not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    for path, data in before.package.items():
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    git = ws.git
    now = git.refs()
    for ref, sha in before.refs.items():
        if now.get(ref) != sha:
            git.update_ref(ref, sha)
    for ref in set(now) - set(before.refs):
        git.delete_ref(ref)
    if git.branch() != before.branch:
        git.switch(before.branch, force=True)
    git.move_branch(before.head)


def fingerprint(settings_sha256: str, data_sha256: str) -> str:
    """What a result was measured under: settings, data + tokenizer, evaluation code (12 hex digits)."""
    code = evaluation_code_sha256()
    return hashlib.sha256(f"{settings_sha256}:{data_sha256}:{code}".encode()).hexdigest()[:12]
