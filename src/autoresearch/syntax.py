"""Parsing Python source into a syntax tree, safely while other threads parse too.

CPython 3.11 keeps the AST constructor's recursion counter in interpreter-wide state, so an
`ast.parse` in one thread can make another thread's fail with a spurious
`SystemError: AST constructor recursion depth mismatch` (python/cpython#106905). The loop parses
`train.py` while its tracking thread runs libraries (W&B) that parse too; a parse that fails this
way is tried again, since the counter is reset at the start of every parse.
"""

from __future__ import annotations

import ast

RETRIES = 5


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source)`, tried again when another thread's parse disturbed it."""
    for _ in range(RETRIES):
        try:
            return ast.parse(source, filename)
        except SystemError as e:
            if "recursion depth mismatch" not in str(e):
                raise
    return ast.parse(source, filename)
