"""A prepared research workspace for the benchmarks: real data, real git, in a temporary folder.

The data cache is the user's ($AUTORESEARCH_CACHE or ~/.cache/autoresearch), so a benchmark
reuses data that `autoresearch prepare` already built; `--cache DIR` isolates it.
"""

from __future__ import annotations

import ast
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from autoresearch import hparams, settings, workspace
from autoresearch.data.prepare import PreparedData, prepare


def prepared_workspace(preset: str, budget: float, cache: str | None = None,
                       **overrides) -> tuple[workspace.Workspace, PreparedData]:
    if cache:
        os.environ["AUTORESEARCH_CACHE"] = cache
    s = settings.from_preset(preset, time_budget=budget, **overrides)
    prepared = prepare(s, log=lambda m: print(f"  prepare: {m}"))
    root = Path(tempfile.mkdtemp(prefix=f"autoresearch-bench-{preset}-"))
    return workspace.init(root / "ws", s), prepared


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def hyperparameters(items: Iterable[str], where: str) -> dict[str, Any]:
    """KEY=VALUE items as train.py hyperparameter values: Python literals, else plain strings."""
    values: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"{where}: {item!r} is not KEY=VALUE")
        try:
            values[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = text.strip()
    return values


def with_hyperparameters(source: str, values: dict[str, Any], where: str) -> str:
    """train.py's source with some hyperparameters set; an unknown name ends the benchmark with its name."""
    try:
        return hparams.rewrite(source, values)
    except KeyError as e:
        raise SystemExit(f"{where}: {e.args[0]}") from None
