"""`notes.md`: the proposer's notebook, kept across experiments and restarts.

The file lives in the workspace, untracked and ignored by git (so neither the loop's resets nor
the guard touch it), and is never judged. The LLM proposers read it as part of their context and
append to it: what each proposal was and what it was meant to show, what the model asked to
remember (its `Notes:` section), and the outcome once the harness has decided. A coding agent
may also edit it directly. When it grows beyond the context budget, its newest part is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from autoresearch import atomic

HEADER = (
    "# Research notes\n\n"
    "Written by the proposer (and by you, if you like): what was tried, what was learned, what to try next.\n"
    "Untracked and never judged; the harness only appends.\n"
)


@dataclass(frozen=True)
class Notes:
    path: Path

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def append(self, text: str) -> None:
        """Add a block of text at the end (atomically: a kill leaves the old or the new file)."""
        text = text.strip("\n")
        if not text:
            return
        current = self.read() or HEADER
        if not current.endswith("\n"):
            current += "\n"
        atomic.write_text(self.path, f"{current}\n{text}\n")

    def record_proposal(self, proposer: str, description: str, hypothesis: str, notes: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"## {stamp} · {proposer}: {description}"]
        if hypothesis:
            lines.append(f"Hypothesis: {hypothesis}")
        if notes:
            lines.append(notes.strip())
        self.append("\n".join(lines))

    def record_outcome(self, description: str, outcome: str) -> None:
        self.append(f"- outcome of \"{description}\": {outcome}")

    def record_failure(self, proposer: str, description: str, error: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        what = f": {description}" if description else ""
        first = error.strip().splitlines()[0] if error.strip() else "unknown error"
        if ". " in first:  # the first sentence says what failed; the rest is detail for the model
            first = first[:first.index(". ") + 1]
        self.append(f"## {stamp} · {proposer}{what}\n- failed before running (never became a run): {first}")
