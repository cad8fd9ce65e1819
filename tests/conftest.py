"""Shared fixtures.

Every test session gets its own cache and home-like folders (AUTORESEARCH_CACHE, HF_HOME), so no
test reads or writes ~/.cache. The small corpus is a deterministic sample of the standard
library's own source (always present), stored as .txt files for the `files:` dataset.
"""

from __future__ import annotations

import os
import shutil
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
