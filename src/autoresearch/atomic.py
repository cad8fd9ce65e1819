"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target (rename is atomic on POSIX within one file system). Files get the mode the user's umask
gives (0644 under umask 022), as a plain open() would. A full disk raises before the rename,
so the previous file survives intact.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path
from typing import Any


# Fault injection for tests: AUTORESEARCH_FAULT=<file name>:before-rename kills the process with
# SIGKILL after the temporary file is written and before it replaces the target.
FAULT_ENV = "AUTORESEARCH_FAULT"


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(FAULT_ENV) == f"{path.name}:before-rename":  # tests: die mid-write
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file next to `path`, with the mode an ordinary write would give it.

    Not tempfile.mkstemp: it creates files 0600 whatever the umask, so every file written here
    (train.py, results.tsv, the report) would be private even where the user shares the folder.
    Opened with O_EXCL under a random name instead, with 0666 that the kernel masks by the umask."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not all platforms allow opening a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
