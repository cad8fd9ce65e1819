"""The reply format of the `llm` proposer, and applying it to train.py strictly.

A reply is:

    Description: <one line: what changes and why>
    Hypothesis: <what should happen, and why>          (optional)
    Notes: <what to remember for later experiments>     (optional, may span lines)

    train.py                                           (optional file line)
    <<<<<<< SEARCH
    <lines copied exactly from train.py>
    =======
    <the lines that replace them>
    >>>>>>> REPLACE

with one or more SEARCH/REPLACE blocks. Code fences and blank lines around the blocks are
ignored. Without any block, the longest fenced code block replaces the whole file (a fallback
for models that send the full file; it must be at least half as long as train.py).

Application is strict: every block must match exactly one place (after dropping blank lines at
the edges of its SEARCH text and trailing spaces on its lines), a block for another file is
refused, and the result must compile. Each failure is an `EditError` whose message is written
for the model: what failed, where, and the closest text, so the next reply can fix it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from autoresearch.errors import ProposerError

TARGET = "train.py"
SEARCH = re.compile(r"^\s*<{5,}\s*SEARCH\s*$")
DIVIDER = re.compile(r"^\s*={5,}\s*$")
REPLACE = re.compile(r"^\s*>{5,}\s*REPLACE\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADER = re.compile(r"^[\s#>*_-]*(description|hypothesis|notes)[*_]*\s*:[*_]*\s?(.*)$", re.IGNORECASE)
PATH_LINE = re.compile(r"^\s*(?:(?:file|path|filename)\s*:\s*)?[`*'\"]*([\w./\\-]+\.[A-Za-z0-9]+)[`*'\"]*\s*:?\s*$",
                       re.IGNORECASE)
MAX_HYPOTHESIS = 600  # characters
MAX_DESCRIPTION = 200
WHOLE_FILE_MIN_SHARE = 0.5  # a fenced block replaces train.py only when at least this share of its length


class EditError(ProposerError):
    """A reply that cannot be applied; the message is fed back to the model."""


@dataclass(frozen=True)
class Edit:
    search: str
    replace: str
    path: str = ""  # the file the reply named for this block; "" when it named none
    number: int = 1  # 1-based position among the reply's blocks


@dataclass(frozen=True)
class Reply:
    description: str
    hypothesis: str = ""
    notes: str = ""
    edits: tuple[Edit, ...] = ()
    whole_file: str | None = None  # the longest fenced block, when there are no SEARCH/REPLACE blocks
    whole_file_path: str = ""


def _lines_until_marker(lines: list[str], i: int) -> tuple[list[str], int]:
    """The lines from index i up to the next SEARCH, ======= or REPLACE line, and that line's index
    (len(lines) when there is none); the caller checks it is the marker it expects."""
    start = i
    while i < len(lines) and not (SEARCH.match(lines[i]) or DIVIDER.match(lines[i]) or REPLACE.match(lines[i])):
        i += 1
    return lines[start:i], i


def _strip_fences(lines: list[str]) -> list[str]:
    while lines and FENCE.match(lines[0]):
        lines = lines[1:]
    while lines and FENCE.match(lines[-1]):
        lines = lines[:-1]
    return lines


def _path_before(lines: list[str], index: int) -> str:
    """The file named on the last meaningful line before `index` (skipping blanks and fences)."""
    j = index - 1
    while j >= 0 and (not lines[j].strip() or FENCE.match(lines[j])):
        j -= 1
    if j < 0 or HEADER.match(lines[j]):
        return ""
    m = PATH_LINE.match(lines[j])
    return m.group(1) if m else ""


def parse_reply(text: str) -> Reply:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: dict[str, list[str]] = {}
    current: str | None = None
    edits: list[Edit] = []
    fenced: list[tuple[str, str]] = []  # (path, content) of fenced blocks outside SEARCH/REPLACE blocks
    open_fences = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if SEARCH.match(line):
            current = None
            start, path = i, _path_before(lines, i)
            search, i = _lines_until_marker(lines, i + 1)
            if i >= len(lines) or not DIVIDER.match(lines[i]):
                raise EditError(f"SEARCH/REPLACE block {len(edits) + 1} (reply line {start + 1}) has no ======= line "
                                "between its SEARCH and REPLACE parts")
            replace, i = _lines_until_marker(lines, i + 1)
            if i >= len(lines) or not REPLACE.match(lines[i]):
                raise EditError(f"SEARCH/REPLACE block {len(edits) + 1} (reply line {start + 1}) does not end with "
                                "a >>>>>>> REPLACE line")
            edits.append(Edit("\n".join(_strip_fences(search)), "\n".join(_strip_fences(replace)), path, len(edits) + 1))
            i += 1
            continue
        if FENCE.match(line):
            current = None
            if open_fences:  # closes a fence that wrapped blocks or the whole reply
                open_fences -= 1
                i += 1
                continue
            end = i + 1
            while end < len(lines) and not FENCE.match(lines[end]):
                end += 1
            body = lines[i + 1:end]
            first = next((ln for ln in body if ln.strip()), "")
            starts_reply = HEADER.match(first) is not None and HEADER.match(first).group(1).lower() == "description"
            if any(SEARCH.match(ln) for ln in body) or starts_reply:
                open_fences += 1  # a fence around blocks (or around the whole reply): read what is inside
                i += 1
                continue
            fenced.append((_path_before(lines, i), "\n".join(body)))
            i = end + 1
            continue
        header = HEADER.match(line)
        if header:
            current = header.group(1).lower()
            sections.setdefault(current, []).append(header.group(2).strip().rstrip("*_").strip())
        elif current is not None:
            sections[current].append(line)
        i += 1
    description = next((ln.strip() for ln in sections.get("description", []) if ln.strip()), "")
    if not description:
        raise EditError("the reply has no `Description: <one line>` line: start the reply with it")
    hypothesis = _paragraph(sections.get("hypothesis", []))
    notes = "\n".join(_drop_path_tail(sections.get("notes", []))).strip()
    whole, whole_path = None, ""
    if not edits and fenced:
        whole_path, whole = max(fenced, key=lambda pc: len(pc[1]))
    return Reply(description[:MAX_DESCRIPTION], hypothesis[:MAX_HYPOTHESIS], notes, tuple(edits), whole, whole_path)


def _drop_path_tail(lines: list[str]) -> list[str]:
    """A section's lines without a trailing file line (it belongs to the block that follows)."""
    out = list(lines)
    while out and not out[-1].strip():
        out.pop()
    if out and PATH_LINE.match(out[-1]) and not HEADER.match(out[-1]):
        out.pop()
    return out


def _paragraph(lines: list[str]) -> str:
    """The first paragraph of a section, on one line."""
    out: list[str] = []
    for ln in _drop_path_tail(lines):
        if ln.strip():
            out.append(ln.strip())
        elif out:
            break
    return " ".join(out)


def is_target(path: str) -> bool:
    normal = path.replace("\\", "/")
    while normal.startswith("./"):
        normal = normal[2:]
    return normal == TARGET


def _find(haystack: list[str], needle: list[str], loose: bool) -> list[int]:
    if loose:
        haystack = [ln.rstrip() for ln in haystack]
        needle = [ln.rstrip() for ln in needle]
    n = len(needle)
    return [k for k in range(len(haystack) - n + 1) if haystack[k:k + n] == needle]


def _trim_blank_edges(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _closest(lines: list[str], needle: list[str]) -> str:
    """The window of train.py most like `needle`, as a diff the model can read."""
    wanted = {ln.strip() for ln in needle if ln.strip()}
    n = max(1, len(needle))
    best, best_score = 0, -1.0
    for k in range(max(1, len(lines) - n + 1)):
        window = lines[k:k + n]
        score = sum(ln.strip() in wanted for ln in window if ln.strip())
        if score > best_score:
            best, best_score = k, score
    window = lines[best:best + n]
    diff = difflib.unified_diff(needle, window, "your SEARCH text", f"{TARGET} lines {best + 1}-{best + len(window)}",
                                lineterm="", n=1)
    return "\n".join(diff)


def apply_edits(source: str, edits: tuple[Edit, ...] | list[Edit]) -> str:
    trailing = source.endswith("\n")
    lines = source.split("\n")
    if trailing:
        lines = lines[:-1]
    for edit in edits:
        search = edit.search.split("\n")
        replace = edit.replace.split("\n") if edit.replace else []
        if not any(ln.strip() for ln in search):
            raise EditError(f"SEARCH/REPLACE block {edit.number} has an empty SEARCH part: copy the lines to replace "
                            f"from {TARGET} into it (to add code, quote the lines next to where it goes)")
        found = _find(lines, search, loose=False)
        if not found:
            search, replace = _trim_blank_edges(search), _trim_blank_edges(replace)
            found = _find(lines, search, loose=True)
        if not found:
            raise EditError(
                f"SEARCH/REPLACE block {edit.number} does not match {TARGET}: "
                + (f"no {len(search)} consecutive lines of {TARGET} equal" if len(search) > 1 else f"no line of {TARGET} equals")
                + f" its SEARCH part (after earlier blocks were applied). The closest lines "
                f"(- your SEARCH, + {TARGET}):\n{_closest(lines, search)}\n"
                "Copy the SEARCH lines exactly from the current file, including indentation.")
        if len(found) > 1:
            where = ", ".join(str(k + 1) for k in found[:6])
            raise EditError(f"SEARCH/REPLACE block {edit.number} matches {len(found)} places in {TARGET} (lines {where}): "
                            "add neighbouring lines to its SEARCH part so that it matches exactly one")
        k = found[0]
        lines[k:k + len(search)] = replace
    return "\n".join(lines) + ("\n" if trailing else "")


def check_syntax(source: str) -> None:
    try:
        compile(source, TARGET, "exec", dont_inherit=True)
    except SyntaxError as e:
        lines = source.split("\n")
        where = ""
        if e.lineno and 0 < e.lineno <= len(lines):
            text = lines[e.lineno - 1]
            caret = " " * max(0, (e.offset or 1) - 1) + "^"
            where = f"\n{e.lineno:5d} | {text}\n      | {caret}"
        raise EditError(f"{TARGET} does not compile after the edits: {e.msg} (line {e.lineno}){where}\n"
                        "Send SEARCH/REPLACE blocks against the original file that give valid Python.") from None
    except ValueError as e:  # e.g. null bytes
        raise EditError(f"{TARGET} does not compile after the edits: {e}") from None


def apply_reply(reply: Reply, source: str) -> str:
    """The new train.py, or an EditError that says what to fix."""
    for edit in reply.edits:
        if edit.path and not is_target(edit.path):
            raise EditError(f"SEARCH/REPLACE block {edit.number} edits {edit.path}: only {TARGET} may change "
                            f"(prepare.py, autoresearch.toml and every other file are fixed); make the change in {TARGET}")
    if reply.edits:
        new = apply_edits(source, reply.edits)
    elif reply.whole_file is not None:
        if reply.whole_file_path and not is_target(reply.whole_file_path):
            raise EditError(f"the code block is for {reply.whole_file_path}: only {TARGET} may change")
        old_n, new_n = len(source.splitlines()), len(reply.whole_file.splitlines())
        if new_n < WHOLE_FILE_MIN_SHARE * old_n:
            raise EditError(
                f"the reply has no SEARCH/REPLACE block, and its code block ({new_n} lines) is too short to be the "
                f"whole of {TARGET} ({old_n} lines): send the change as SEARCH/REPLACE blocks")
        new = reply.whole_file + ("\n" if not reply.whole_file.endswith("\n") else "")
    else:
        raise EditError(f"the reply has no SEARCH/REPLACE block: send the change to {TARGET} as one or more "
                        "<<<<<<< SEARCH / ======= / >>>>>>> REPLACE blocks")
    if new == source:
        raise EditError(f"the edits leave {TARGET} unchanged: propose an actual change")
    check_syntax(new)
    return new
