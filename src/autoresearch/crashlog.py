"""Why a run crashed, in one line, read from its train.log.

Python prints an uncaught exception as a traceback whose frames are `File "path", line N, in f`
lines and whose last line, unindented, is `Type: message`; a script that does not compile prints
only the frame of the bad line (its source and a caret below it) and `SyntaxError: ...`. The cause
is that exception line with the place it was raised: `SyntaxError: invalid syntax (train.py:42)`.
The place is the innermost frame in train.py when the traceback passes through it (the line a
proposer can fix), else the innermost frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

MAX_CHARS = 240  # a ledger cell and a terminal line, not a log
TRAIN_FILE = "train.py"
FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')
EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure|Failed)\b")


@dataclass(frozen=True)
class Cause:
    exception: str  # the exception line: `Type: message` (first line of the message)
    where: str = ""  # `file:line` of the frame it names, "" when the log has no frame

    def __str__(self) -> str:
        text = f"{self.exception} ({self.where})" if self.where else self.exception
        return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def crash_cause(log_text: str) -> Cause | None:
    """The exception that ended the log's last traceback, or None when the log shows none."""
    lines = log_text.replace("\r", "\n").splitlines()
    frames = [i for i, line in enumerate(lines) if FRAME.match(line)]
    if frames:
        last = frames[-1]
        exception = next((line for line in lines[last + 1:] if line.strip() and not line[:1].isspace()), "")
        if exception:
            block = _traceback_frames(lines, frames)
            return Cause(_one_line(exception), _where(lines, block))
    found = next((line for line in reversed(lines) if EXCEPTION.match(line)), "")
    return Cause(_one_line(found)) if found else None


def _traceback_frames(lines: list[str], frames: list[int]) -> list[int]:
    """The frames of the last traceback: the last run of frame lines not broken by an unindented line."""
    block = [frames[-1]]
    for i in reversed(frames[:-1]):
        if any(line.strip() and not line[:1].isspace() for line in lines[i + 1:block[0]]):
            break
        block.insert(0, i)
    return block


def _where(lines: list[str], block: list[int]) -> str:
    places = []
    for i in block:
        m = FRAME.match(lines[i])
        assert m is not None
        places.append((PurePath(m["path"]).name, m["line"]))
    name, line = next((p for p in reversed(places) if p[0] == TRAIN_FILE), places[-1])
    return f"{name}:{line}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
