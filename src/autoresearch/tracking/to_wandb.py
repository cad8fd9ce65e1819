"""Weights & Biases: one W&B run per ledger row, grouped by research branch, offline by default.

Through W&B's own library (`pip install 'autoresearch[wandb]'`). The mode is `offline` unless
$WANDB_MODE says otherwise: runs go to `<workspace>/wandb/offline-run-*` (or under `wandb_dir`,
$WANDB_DIR), and `wandb sync wandb/offline-run-*` uploads them when wanted. The project is the
workspace folder's name (`wandb_project`), the group the research branch; a run holds train.py's
hyperparameters as config, the step metrics against step, the ledger's numbers and the decision
in its summary, the decision as tags and notes, and diff.patch and train.py in its files. A
run's W&B id is derived from the workspace's project, branch and run id, so a row is never
written twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from autoresearch.tracking.base import require
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun
from autoresearch.workspace import Workspace

FOLDER = "wandb"  # what W&B makes under its dir
FINISHED = ("keep", "discard")


def open_tracker(ws: Workspace, config: TrackingConfig) -> WandbTracker:
    require("wandb", "wandb")
    root = config.wandb_dir or os.environ.get("WANDB_DIR", "")
    return WandbTracker(ws.root / root if root else ws.root, config.wandb_project or ws.root.name)


def ignored(ws: Workspace, config: TrackingConfig) -> list[str]:
    """What this tracker writes inside the workspace: W&B's folder."""
    root = config.wandb_dir or os.environ.get("WANDB_DIR", "")
    return [_inside(ws, ws.root / root / FOLDER)] if _inside(ws, ws.root / root / FOLDER) else []


def _inside(ws: Workspace, folder: Path) -> str:
    """`folder` as an exclude pattern, anchored at the workspace root; "" when it is outside."""
    try:
        return "/" + folder.resolve().relative_to(ws.root.resolve()).as_posix() + "/"
    except ValueError:
        return ""


def run_id(project: str, run: TrackedRun) -> str:
    return hashlib.sha1(f"{project}|{run.experiment}|{run.key}".encode()).hexdigest()[:16]


class WandbTracker:
    name = "wandb"

    def __init__(self, root: Path, project: str) -> None:
        self.root = root
        self.project = project

    def write(self, run: TrackedRun) -> bool:
        import wandb

        ident = run_id(self.project, run)
        if any((self.root / FOLDER).glob(f"*run-*-{ident}")):
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        config = {**run.params, "autoresearch_run_id": run.row.run_id, "autoresearch_parent": run.parent_key}
        r = wandb.init(project=self.project, group=run.branch, job_type=run.row.kind, name=run.name, id=ident,
                       dir=str(self.root), config=config, notes=run.row.reason or None,
                       tags=[t for t in (run.row.status, run.row.kind, run.row.rule) if t][:3],
                       mode=os.environ.get("WANDB_MODE") or "offline", reinit="create_new",
                       settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                               save_code=False, disable_git=True))
        try:
            for step in run.steps:
                r.log(dict(step.values), step=step.step)
            r.summary.update({**run.summary, **{f"tag/{k}": v for k, v in run.tags.items()}})
            for name, text in run.files.items():
                Path(r.dir, name).write_text(text, encoding="utf-8")
        finally:
            r.finish(exit_code=0 if run.row.status in FINISHED else 1)
        return True

    def close(self) -> None:
        pass
