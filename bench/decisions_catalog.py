"""The catalog of bench/decisions.py: a baseline train.py and a dozen changes to it, as exact edits.

The baseline is the cpu preset's train.py with a smaller batch (more steps in a short budget) and
its learning rates deliberately worsened (a quarter of the preset's), so that restoring them is a
known gain. Every change is made to that baseline, and its gain or loss is
relative to it.

Each change is a short list of exact edits, chosen to keep applying while the rest of the
template changes: `set` rewrites one hyperparameter's value (hparams.py: only the value's
characters), `replace` swaps one whole line for another, `insert_before` adds lines before the
first line that starts with a given text, `rename` renames an identifier (whole words). An edit
that no longer applies raises CatalogError saying which and why.

`kind` is what the change was written to be (gain, loss, null, near-null); whether it is better,
worse or no different is measured (bench/decisions.py), not assumed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from autoresearch import hparams


class CatalogError(ValueError):
    """An edit of the catalog does not apply to this train.py (the template changed under it)."""


@dataclass(frozen=True)
class Edit:
    op: str  # set | replace | insert_before | rename
    target: str  # hyperparameter | the whole line (stripped) | a line's start | an identifier
    text: str  # its new value, as Python source | the new line | the lines to insert | the new identifier


@dataclass(frozen=True)
class Change:
    name: str
    kind: str  # gain | loss | null | near-null: what it was written to be
    description: str
    edits: tuple[Edit, ...]
    quick: bool = False  # one of the changes `--quick` measures


KINDS = ("gain", "loss", "null", "near-null")

# The preset's batch is 8192 tokens a step: tens of steps in a short budget on 2 cores. A quarter
# of it trains four times as many steps, so that settings matter more than the luck of the start.
# And the learning rates deliberately worsened: each at a quarter of the preset's.
BASELINE_EDITS: tuple[Edit, ...] = (
    Edit("set", "TOTAL_BATCH_SIZE", "2**11"),
    Edit("set", "DEVICE_BATCH_SIZE", "8"),
    Edit("set", "MATRIX_LR", "0.01"),
    Edit("set", "EMBEDDING_LR", "0.15"),
    Edit("set", "UNEMBEDDING_LR", "0.001"),
)

CATALOG: tuple[Change, ...] = (
    Change("restore-learning-rates", "gain", "MATRIX_LR, EMBEDDING_LR, UNEMBEDDING_LR back to the preset's (4x)",
           (Edit("set", "MATRIX_LR", "0.04"), Edit("set", "EMBEDDING_LR", "0.6"), Edit("set", "UNEMBEDDING_LR", "0.004")),
           quick=True),
    Change("restore-embedding-lr", "gain", "EMBEDDING_LR 0.15 -> 0.6 (back to the preset's)",
           (Edit("set", "EMBEDDING_LR", "0.6"),)),
    Change("no-warmdown", "gain", "WARMDOWN_RATIO 0.5 -> 0.0: hold the (too low) learning rate to the end",
           (Edit("set", "WARMDOWN_RATIO", "0.0"),)),
    Change("matrix-lr-far-too-high", "loss", "MATRIX_LR 0.01 -> 2.0",
           (Edit("set", "MATRIX_LR", "2.0"),)),
    Change("unembedding-lr-far-too-high", "loss", "UNEMBEDDING_LR 0.001 -> 0.04",
           (Edit("set", "UNEMBEDDING_LR", "0.04"),), quick=True),
    Change("far-too-narrow", "loss", "ASPECT_RATIO -> 8, HEAD_DIM 64 -> 32: width 128 -> 32, one head",
           (Edit("set", "ASPECT_RATIO", "8"), Edit("set", "HEAD_DIM", "32"))),
    Change("comment", "null", "a comment on the learning-rate schedule",
           (Edit("insert_before", "def lr_multiplier(",
                 "# The schedule: warm up, hold, then decay linearly to FINAL_LR_FRAC of the peak.\n"),),
           quick=True),
    Change("rename-variable", "null", "smooth_loss renamed ema_loss",
           (Edit("rename", "smooth_loss", "ema_loss"),)),
    Change("reorder-import", "null", "`import time` moved to the top of the imports",
           (Edit("replace", "import time", ""), Edit("insert_before", "import ctypes", "import time\n"))),
    Change("dead-code", "null", "an unused helper function",
           (Edit("insert_before", "def sync(",
                 "def unused_helper(values):\n    return sum(v * v for v in values)\n\n\n"),)),
    Change("matrix-lr-plus-3pct", "near-null", "MATRIX_LR 0.01 -> 0.0103",
           (Edit("set", "MATRIX_LR", "0.0103"),)),
    Change("embedding-lr-minus-5pct", "near-null", "EMBEDDING_LR 0.15 -> 0.1425",
           (Edit("set", "EMBEDDING_LR", "0.1425"),)),
)


def apply(source: str, edits: tuple[Edit, ...]) -> str:
    """`source` with every edit applied in order; CatalogError when one does not apply."""
    for edit in edits:
        source = _apply_one(source, edit)
    try:
        ast.parse(source)
    except SyntaxError as e:
        raise CatalogError(f"the edits {edits} leave train.py unparsable: {e}") from e
    return source


def baseline(template: str) -> str:
    """The catalog's baseline train.py, made from the preset's train.py."""
    return apply(template, BASELINE_EDITS)


def changed(base: str, change: Change) -> str:
    """The train.py of one change: the baseline's (`baseline(template)`) with the change's edits."""
    return apply(base, change.edits)


def _apply_one(source: str, edit: Edit) -> str:
    if edit.op == "set":
        try:
            value = hparams.literal(ast.parse(edit.text, mode="eval").body)
            return hparams.rewrite(source, {edit.target: value})
        except (KeyError, ValueError, SyntaxError) as e:
            raise CatalogError(f"cannot set {edit.target} = {edit.text} in train.py: {e}") from e
    lines = source.splitlines(keepends=True)
    if edit.op == "replace":
        at = [i for i, line in enumerate(lines) if line.strip() == edit.target]
        if len(at) != 1:
            raise CatalogError(f"replace: train.py has {len(at)} lines that read {edit.target!r}, not exactly 1")
        indent = lines[at[0]][: len(lines[at[0]]) - len(lines[at[0]].lstrip())]
        lines[at[0]] = f"{indent}{edit.text}\n" if edit.text else ""
        return "".join(lines)
    if edit.op == "insert_before":
        at = next((i for i, line in enumerate(lines) if line.startswith(edit.target)), None)
        if at is None:
            raise CatalogError(f"insert_before: no line of train.py starts with {edit.target!r}")
        return "".join(lines[:at]) + edit.text + "".join(lines[at:])
    if edit.op == "rename":
        word = re.compile(rf"\b{re.escape(edit.target)}\b")
        if not word.search(source):
            raise CatalogError(f"rename: train.py has no identifier {edit.target!r}")
        return word.sub(edit.text, source)
    raise CatalogError(f"unknown edit op {edit.op!r}: use set, replace, insert_before or rename")
