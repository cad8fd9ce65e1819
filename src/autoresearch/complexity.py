"""How much code `train.py` is: the number of nodes of its syntax tree.

The measure the keep rule prices (docs/decisions.md). It counts what the code *does*, not how it
is written: comments, blank lines, line breaks, redundant parentheses, trailing commas, quoting
style and docstrings leave it unchanged, so reformatting or documenting `train.py` is neither
rewarded nor punished. Counted: every node of Python's abstract syntax tree except
- the module itself and the load/store/delete markers of names (implicit in the code), and
- string statements (docstrings, and strings used as block comments): they do nothing.

A line of ordinary code is 5-10 nodes: `x = self.proj(a, b)` is 7 (assign, call, attribute and
four names). Complexities are compared within one workspace, measured by one interpreter.
"""

from __future__ import annotations

import ast

from autoresearch import syntax

UNIT = "nodes"  # what complexity is counted in, for messages


def measure(source: str) -> int | None:
    """The complexity of a Python source, in syntax-tree nodes; None when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return None
    return _count(tree)


def _count(tree: ast.AST) -> int:
    total = 0
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if _is_string_statement(node):
            continue
        if not isinstance(node, (ast.Module, ast.expr_context)):
            total += 1
        todo.extend(ast.iter_child_nodes(node))
    return total


def _is_string_statement(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
