"""TensorBoard: event files per run, `runs/NNNN/tb/` (or `<tensorboard_dir>/NNNN/`).

Written with torch's SummaryWriter (it needs the tensorboard package: `pip install
'autoresearch[tensorboard]'`): the step metrics as scalars `train/<name>` against step, the
ledger's numbers as scalars `result/<name>` at the last step, and train.py's hyperparameters with
the decision through the HParams plugin, so `tensorboard --logdir runs` compares runs side by
side in its HPARAMS tab. A row without a run folder (a refused proposal) has no event file; a run
folder that already holds one is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from autoresearch.tracking.base import require
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun
from autoresearch.workspace import Workspace

RUN_FOLDER = "tb"  # in the run folder, by default
EVENTS = "events.out.tfevents.*"
HPARAM_TAGS = ("status", "kind", "rule", "commit", "proposer")  # the decision, beside the hyperparameters


def open_tracker(ws: Workspace, config: TrackingConfig) -> TensorBoardTracker:
    require("tensorboard", "tensorboard")
    return TensorBoardTracker(ws.root / config.tensorboard_dir if config.tensorboard_dir else None)


def ignored(ws: Workspace, config: TrackingConfig) -> list[str]:
    """A configured folder inside the workspace (the default one is in runs/, already ignored)."""
    if not config.tensorboard_dir:
        return []
    try:
        return ["/" + (ws.root / config.tensorboard_dir).resolve().relative_to(ws.root.resolve()).as_posix() + "/"]
    except ValueError:
        return []


def folder_of(run: TrackedRun, base: Path | None) -> Path | None:
    if run.run_dir is None:
        return None
    return base / run.key if base is not None else run.run_dir / RUN_FOLDER


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, base: Path | None) -> None:
        self.base = base

    def write(self, run: TrackedRun) -> bool:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        folder = folder_of(run, self.base)
        if folder is None or any(folder.glob(EVENTS)):
            return False
        writer = SummaryWriter(log_dir=str(folder))
        try:
            for step in run.steps:
                for name, value in step.values.items():
                    writer.add_scalar(f"train/{name}", value, step.step, walltime=step.wall_time)
            last = run.steps[-1].step if run.steps else 0
            results = {f"result/{name}": value for name, value in run.summary.items()}
            for tag, value in results.items():
                writer.add_scalar(tag, value, last, walltime=run.ended)
            values = {name: v if isinstance(v, (int, float, str, bool)) else str(v) for name, v in run.params.items()}
            values.update({name: run.tags[name] for name in HPARAM_TAGS if name in run.tags})
            for summary in hparams(values, results):
                writer.file_writer.add_summary(summary, walltime=run.started)
            if run.row.reason:
                writer.add_text("decision", f"{run.row.status} ({run.row.rule}): {run.row.reason}", last,
                                walltime=run.ended)
        finally:
            writer.close()
        return True

    def close(self) -> None:
        pass
