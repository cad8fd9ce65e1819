"""Where `torch.compile` keeps what it compiled: one folder in the data cache, shared by every run.

A compiled train.py spends most of its start-up in the compiler (on a 2-core CPU ~40 s cold).
Inductor caches its output by a hash of the graph, the inputs' shapes and the torch version, so a
run whose model is unchanged from an earlier run's loads its kernels instead (a few seconds).
That only pays if every run finds the same cache: the runner sets these variables in the
environment of train.py and of the evaluator, so the cache lives under $AUTORESEARCH_CACHE
(next to the prepared data, not in /tmp where it would be shared with anything on the machine),
and a train.py cannot move it without slowing down only itself.
"""

from __future__ import annotations

from pathlib import Path

COMPILE_DIR = "compile"


def compile_env(cache: Path) -> dict[str, str]:
    """The variables that put inductor's caches (FX graph, AOT autograd, Triton) under `cache`."""
    root = Path(cache) / COMPILE_DIR
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
        "TRITON_CACHE_DIR": str(root / "triton"),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }
