"""The shared frontier: putting a stale win's change onto the new best.

With parallel runs, a change proposed on best A may finish after another change moved the best
to B. If it beat A, the idea is good but its commit lacks B's change; the coordinator applies the
same change onto B (a three-way merge: base A, ours B, theirs the candidate) and runs that as
an experiment of its own.

Two ways to merge, the first that applies:
- a change of hyperparameter values only (the search proposer's kind, and many a model's) is
  merged by name: its new values are written into B's block, unless B changed the same name to
  something else. Line-based merging would call two edits on adjacent lines of the block a conflict.
- anything else goes through `git merge-file`; a conflict goes back to the proposer.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from autoresearch import hparams


def _hyperparameter_change(base: str, theirs: str) -> dict | None:
    """The values `theirs` sets, when it differs from `base` in hyperparameter values only."""
    try:
        before = {k: hp.value for k, hp in hparams.read_block(base).items()}
        after = {k: hp.value for k, hp in hparams.read_block(theirs).items()}
    except (SyntaxError, ValueError):
        return None
    if set(before) != set(after):
        return None
    changes = {k: v for k, v in after.items() if before[k] != v}
    if not changes or hparams.rewrite(base, changes) != theirs:
        return None
    return changes


def merge(base: str, ours: str, theirs: str) -> str | None:
    """`ours` with the change from `base` to `theirs` applied; None when they conflict."""
    changes = _hyperparameter_change(base, theirs)
    if changes is not None:
        try:
            current = {k: hp.value for k, hp in hparams.read_block(ours).items()}
            original = {k: hp.value for k, hp in hparams.read_block(base).items()}
        except (SyntaxError, ValueError):
            current, original = {}, {}
        clash = [k for k, v in changes.items() if k not in current or current[k] not in (original[k], v)]
        if not clash:
            return hparams.rewrite(ours, changes)
    with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as scratch:
        paths = {}
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            paths[name] = Path(scratch) / name
            paths[name].write_text(text)
        done = subprocess.run(["git", "merge-file", "-p", "--quiet", str(paths["ours"]), str(paths["base"]),
                               str(paths["theirs"])], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None
