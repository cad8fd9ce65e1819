"""Shared fixtures.

Every test session gets its own cache and home-like folders (AUTORESEARCH_CACHE, HF_HOME), so no
test reads or writes ~/.cache. The small corpus is a deterministic sample of the standard
library's own source (always present), stored as .txt files for the `files:` dataset.
"""

from __future__ import annotations

import os
import shutil
import signal
import sysconfig
import tempfile
from pathlib import Path

import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="autoresearch-tests-"))
os.environ["AUTORESEARCH_CACHE"] = str(_SESSION_ROOT / "cache")
os.environ["HF_HOME"] = str(_SESSION_ROOT / "hf-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_ENDPOINT", None)
os.environ.pop("AUTORESEARCH_DEVICE", None)
# Ray's token authentication keeps its token in ~/.ray; the test clusters (loopback only) run without it.
os.environ["RAY_AUTH_MODE"] = "disabled"
# Test workers run side by side on small machines: one thread per training process each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A suite started as a background job of a non-interactive shell (`.ci/run &`, nohup) begins with
# SIGINT ignored, and every process it starts would inherit that: the tests that press Ctrl-C on a
# real process would see nothing happen. With Python's own handler here, children start with the
# default action again, as they do under a terminal or CI.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


def stdlib_sample(dest: Path, n_files: int = 240, max_bytes: int = 30_000) -> Path:
    """Copy a fixed sample of small stdlib modules into `dest` as .txt files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    candidates = sorted(
        p for p in root.glob("*.py") if p.stat().st_size < max_bytes and p.name != "__init__.py"
    )
    dest.mkdir(parents=True, exist_ok=True)
    for path in candidates[:n_files]:
        shutil.copyfile(path, dest / (path.stem + ".txt"))
    return dest


@pytest.fixture(scope="session")
def corpus(session_root: Path) -> Path:
    return stdlib_sample(session_root / "corpus")


@pytest.fixture(scope="session")
def tiny_settings(corpus: Path):
    from autoresearch import settings

    return settings.from_preset("tiny", dataset=f"files:{corpus}", val_permille=100, heldout_permille=100)


@pytest.fixture(scope="session")
def prepared(tiny_settings):
    from autoresearch.data.prepare import prepare

    return prepare(tiny_settings, log=lambda _: None)


@pytest.fixture(scope="session")
def tokenizer(prepared):
    return prepared.tokenizer()


@pytest.fixture
def make_workspace(tmp_path, prepared, corpus):
    """A real workspace (git repo) on the tiny preset, its data already prepared."""
    from autoresearch import settings, workspace

    def make(name: str = "ws", budget: float = 4.0, **overrides):
        values = dict(dataset=f"files:{corpus}", val_permille=100, heldout_permille=100, time_budget=budget)
        values.update(overrides)
        return workspace.init(tmp_path / name, settings.from_preset("tiny", **values))

    return make


def load_train_definitions(ws_root: Path) -> dict:
    """The classes and functions of a workspace's train.py (everything above its setup section),
    executed against the workspace's real prepare.py."""
    import sys

    source = (ws_root / "train.py").read_text()
    head = source.split("# --- setup")[0]
    sys.modules.pop("prepare", None)
    sys.path.insert(0, str(ws_root))
    try:
        namespace: dict = {"__name__": "train_definitions"}
        exec(compile(head, str(ws_root / "train.py"), "exec"), namespace)
    finally:
        sys.path.remove(str(ws_root))
    return namespace
