"""bench/fixed_steps.py rewrites train.py's timed schedule into a step-counted one: the two lines
it replaces must stay in the template, or the benchmark would stop at once."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from autoresearch.settings import from_preset
from autoresearch.workspace import train_template

BENCH = Path(__file__).parent.parent / "bench"


def test_the_template_s_schedule_becomes_step_counted(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    fixed_steps = importlib.import_module("fixed_steps")
    for preset in ("cpu", "gpu"):
        source = train_template(from_preset(preset))
        rewritten = fixed_steps.fixed_steps(source, 123)
        ast.parse(rewritten)
        assert "    progress = min(step / 123, 1.0)\n" in rewritten
        assert "    if step >= 123:\n" in rewritten
        assert "total_training_time / TIME_BUDGET" not in rewritten
        assert "total_training_time >= TIME_BUDGET" not in rewritten
