"""syntax.parse: the loop's parse of train.py while another thread parses (CPython 3.11's
interpreter-wide AST recursion counter, python/cpython#106905). The race is made real, not
mocked: a garbage-collector callback that sleeps lets the other thread run in the middle of a
parse, which is how a tracking library's parse in its own thread meets the loop's."""

from __future__ import annotations

import ast
import gc
import threading
import time
from collections.abc import Callable
from importlib import resources

import pytest

from autoresearch import syntax

SOURCE = resources.files("autoresearch.templates").joinpath("train.py").read_text()


def parse_in_threads(parse: Callable[[str], ast.Module], threads: int = 2, each: int = 20) -> list[str]:
    """Parse SOURCE `each` times in each of `threads` threads at once; the errors raised."""
    errors: list[str] = []

    def work() -> None:
        for _ in range(each):
            try:
                parse(SOURCE)
            except SystemError as e:
                errors.append(str(e))

    def yield_to_others(phase: str, info: dict) -> None:
        if phase == "start":
            time.sleep(0.0005)  # releases the GIL in the middle of a parse

    threshold = gc.get_threshold()
    gc.set_threshold(50)
    gc.callbacks.append(yield_to_others)
    try:
        running = [threading.Thread(target=work) for _ in range(threads)]
        for t in running:
            t.start()
        for t in running:
            t.join()
    finally:
        gc.callbacks.remove(yield_to_others)
        gc.set_threshold(*threshold)
    return errors


def test_a_parse_disturbed_by_another_threads_is_tried_again():
    if not parse_in_threads(ast.parse):
        pytest.skip("this Python's ast.parse does not fail when threads parse at once")
    assert parse_in_threads(syntax.parse) == []


def test_parse_gives_what_ast_parse_gives_and_raises_what_it_raises():
    assert ast.dump(syntax.parse(SOURCE)) == ast.dump(ast.parse(SOURCE))
    with pytest.raises(SyntaxError):
        syntax.parse("def broken(:\n")
