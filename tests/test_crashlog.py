"""A crashed run's cause in one line: the exception and where, from real Python tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.crashlog import MAX_CHARS, crash_cause
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop


def crashed_log(folder: Path, source: str, before: str = "") -> str:
    """train.log as the runner writes it: train.py's stdout and stderr together."""
    (folder / "train.py").write_text(source)
    done = subprocess.run([sys.executable, "train.py"], cwd=folder, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60)
    assert done.returncode != 0
    return before + done.stdout


@pytest.mark.parametrize("source, expected", [
    ("x = 1\ndef f(:\n    pass\n", "SyntaxError: invalid syntax (train.py:2)"),
    ("print('step 1')\nimport json\n\ndef load():\n    return json.loads('{bad')\n\nload()\n",
     "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) "
     "(train.py:5)"),
    ("def f():\n    assert 1 + 1 == 3\nf()\n", "AssertionError (train.py:2)"),
    ("try:\n    {}['k']\nexcept KeyError as e:\n    raise RuntimeError('no k\\nsecond line') from e\n",
     "RuntimeError: no k (train.py:4)"),
    ("class OutOfMemory(Exception):\n    pass\nraise OutOfMemory('CUDA out of memory. Tried to allocate 2 GiB')\n",
     "OutOfMemory: CUDA out of memory. Tried to allocate 2 GiB (train.py:3)"),
])
def test_the_cause_is_the_last_exception_line_and_its_train_py_line(tmp_path, source, expected):
    assert str(crash_cause(crashed_log(tmp_path, source, before="step 00001 | loss 9.0\r" * 50))) == expected


def test_a_traceback_outside_train_py_names_its_innermost_frame(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import json\njson.loads('[1,')"], capture_output=True, text=True)
    cause = crash_cause(done.stderr)
    assert cause is not None and cause.exception.startswith("json.decoder.JSONDecodeError: Expecting value")
    assert cause.where.startswith("decoder.py:")


def test_the_cause_is_one_bounded_line_and_absent_without_an_exception(tmp_path):
    cause = crash_cause(crashed_log(tmp_path, "raise ValueError('x' * 5000 + '\\n' + 'y')\n"))
    assert cause is not None and len(str(cause)) <= MAX_CHARS and "\n" not in str(cause)
    assert crash_cause("step 1\nstep 2\nKilled\n") is None
    assert crash_cause("") is None


@pytest.mark.slow
def test_a_crashed_run_records_and_prints_its_exception(make_workspace):
    ws = make_workspace(budget=2, baseline_runs=1)
    lines: list[str] = []
    source = ws.train_py.read_text()
    with Loop.open(ws.root, tag="t", log=lines.append, edited_train=True) as loop:
        ws.train_py.write_text(source.replace("t_start = time.time()", "t_start = = time.time()", 1))
        bad_line = ws.train_py.read_text().splitlines().index("t_start = = time.time()") + 1
        rows = loop.run_edit("a typo")
        raising = "raise RuntimeError('boom')\nt_start = time.time()"
        ws.train_py.write_text(source.replace("t_start = time.time()", raising, 1))
        rows += loop.run_edit("a raise")
    typo, boom = rows
    assert (typo.status, typo.reason) == ("crash", f"SyntaxError: invalid syntax (train.py:{bad_line})")
    assert boom.status == "crash" and boom.reason == f"RuntimeError: boom (train.py:{bad_line})"
    assert [r.reason for r in Ledger.open(ws.ledger_path).rows if r.status == "crash"] == [typo.reason, boom.reason]
    assert any(f"[crash: SyntaxError: invalid syntax (train.py:{bad_line})]" in line for line in lines), lines
