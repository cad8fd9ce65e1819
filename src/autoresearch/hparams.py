"""The hyperparameter block of train.py: read it, rewrite single values in place.

The block is a flat list of `NAME = literal  # comment` lines between the markers
`# --- hyperparameters` and `# --- end of hyperparameters`. Without markers (a reference-style
train.py), it is every top-level `UPPER_CASE = literal` before the first function or class.
A literal may be simple arithmetic (`2**19`, `64 * 8`). Rewriting replaces only the value's
characters, so comments, spacing and every other line stay as they were.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

from autoresearch import syntax

START_MARK = "# --- hyperparameters"
END_MARK = "# --- end of hyperparameters"
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    value: Any
    expr: str  # the value as written
    line: int  # 1-based line of the assignment
    col: int  # UTF-8 byte offset where the value starts in its line
    end_col: int  # and where it ends
    comment: str


def literal(node: ast.AST) -> Any:
    """Value of a literal or of arithmetic on numeric literals; ValueError for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)) or (
        isinstance(node, ast.Constant) and node.value is None
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = literal(node.left), literal(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.Tuple):
        return tuple(literal(e) for e in node.elts)
    raise ValueError(f"not a literal: {ast.dump(node)[:60]}")


def read_block(source: str) -> dict[str, Hyperparameter]:
    """The hyperparameters of a train.py source, in order of appearance."""
    tree = syntax.parse(source)
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines, 1) if line.startswith(START_MARK)), None)
    end = next((i for i, line in enumerate(lines, 1) if line.startswith(END_MARK)), None)
    found: dict[str, Hyperparameter] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and start is None:
            break
        if start is not None and not (start < node.lineno < (end or len(lines) + 1)):
            continue
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not _NAME.match(name) or node.value.lineno != node.value.end_lineno:
            continue
        try:
            value = literal(node.value)
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
        raw = lines[node.lineno - 1].encode()  # ast columns count UTF-8 bytes
        col, end_col = node.value.col_offset, node.value.end_col_offset
        comment = raw[end_col:].decode().strip().removeprefix("#").strip()
        found[name] = Hyperparameter(name, value, raw[col:end_col].decode(), node.lineno, col, end_col, comment)
    return found


def format_value(value: Any, old_expr: str = "") -> str:
    """Source text for a new value, in the style of the old one (2**k stays a power of two)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if "**" in old_expr and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write non-finite value {value}")
        text = f"{value:.4g}"
        if "e" in text:
            mantissa, exp = text.split("e")
            text = f"{mantissa}e{int(exp)}"
        elif "." not in text:
            text += ".0"
        return text
    if isinstance(value, str):
        return repr(value) if "'" in old_expr[:1] else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    raise ValueError(f"cannot write a {type(value).__name__} into train.py")


def rewrite(source: str, changes: dict[str, Any]) -> str:
    """`source` with the named hyperparameters set to new values; KeyError for unknown names."""
    block = read_block(source)
    unknown = set(changes) - set(block)
    if unknown:
        raise KeyError(f"train.py has no hyperparameter(s) {sorted(unknown)}")
    lines = source.splitlines(keepends=True)
    for name, value in changes.items():
        hp = block[name]
        raw = lines[hp.line - 1].encode()
        lines[hp.line - 1] = (raw[: hp.col] + format_value(value, hp.expr).encode() + raw[hp.end_col :]).decode()
    return "".join(lines)


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """One line such as `MATRIX_LR 0.04 -> 0.03, DEPTH 8 -> 9`."""
    parts = [f"{k} {format_value(old[k])} -> {format_value(v)}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(parts) if parts else "no change"
