"""What a tracker is to the rest of the harness, and how one is made by name."""

from __future__ import annotations

import importlib
from typing import Protocol

from autoresearch.errors import TrackingError
from autoresearch.tracking import EXTRA
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun
from autoresearch.workspace import Workspace

MODULES = {"mlflow": "to_mlflow", "wandb": "to_wandb", "tensorboard": "to_tensorboard"}


class Tracker(Protocol):
    name: str

    def write(self, run: TrackedRun) -> bool:
        """Write one run; False when the tracker already holds it (nothing written)."""

    def close(self) -> None: ...


def make(name: str, ws: Workspace, config: TrackingConfig) -> Tracker:
    """The tracker `name` of workspace `ws`; TrackingError when its library is missing."""
    module = importlib.import_module(f"autoresearch.tracking.{MODULES[name]}")
    return module.open_tracker(ws, config)


def keep_out_of_git(ws: Workspace, config: TrackingConfig) -> None:
    """Ignore what the trackers write inside the workspace (in this clone: .git/info/exclude), before
    anything is written: the loop resets untracked files, and an untracked file makes the tree dirty."""
    for name in config.trackers:
        module = importlib.import_module(f"autoresearch.tracking.{MODULES[name]}")
        for pattern in module.ignored(ws, config):
            ws.git.exclude(pattern)


def require(library: str, tracker: str):
    """Import a tracker's library, or say how to install it."""
    try:
        return importlib.import_module(library)
    except ImportError as e:
        raise TrackingError(f"{tracker} tracking needs {library} ({e}): pip install 'autoresearch[{EXTRA[tracker]}]'") \
            from None
