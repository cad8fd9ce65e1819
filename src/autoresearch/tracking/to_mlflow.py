"""MLflow: one experiment per research branch, one MLflow run per ledger row.

Through MLflow's own client (`pip install 'autoresearch[mlflow]'`, the lean mlflow-skinny), into
the store `mlflow_tracking_uri` or $MLFLOW_TRACKING_URI names, else a local SQLite store,
`<workspace>/mlflow.db`, with artifacts in `<workspace>/mlruns/` (both kept out of git). A run
holds train.py's hyperparameter block as params, the step metrics against step, the ledger's
numbers (val_bpb, held-out bpb, memory, ...) as metrics, the decision and the commit as tags,
and diff.patch and train.py as artifacts; a confirmation run is nested under its experiment's.
Each run carries the tag `autoresearch.key` (its run id), so a row is never written twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from autoresearch.errors import TrackingError
from autoresearch.tracking.base import require
from autoresearch.tracking.config import TrackingConfig
from autoresearch.tracking.record import TrackedRun
from autoresearch.workspace import Workspace

KEY_TAG = "autoresearch.key"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
BATCH = 1000  # MLflow's limit on the entries of one log_batch
FINISHED = ("keep", "discard")  # other outcomes end as FAILED runs


def open_tracker(ws: Workspace, config: TrackingConfig) -> MlflowTracker:
    require("mlflow", "mlflow")
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # the store's set-up messages are not the loop's
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = _configured(config)
    artifacts = None
    if not uri:
        uri = f"sqlite:///{ws.root / STORE_FILE}"
        artifacts = (ws.root / ARTIFACTS_DIR).as_uri()
    return MlflowTracker(MlflowClient(tracking_uri=uri), uri, artifacts)


def _configured(config: TrackingConfig) -> str:
    return config.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")


def ignored(ws: Workspace, config: TrackingConfig) -> list[str]:
    """What this tracker writes inside the workspace (the default store, its journal, the artifacts)."""
    return [] if _configured(config) else [f"/{STORE_FILE}*", f"/{ARTIFACTS_DIR}/"]


class MlflowTracker:
    name = "mlflow"

    def __init__(self, client, uri: str, artifact_root: str | None) -> None:
        self.client = client
        self.uri = uri
        self.artifact_root = artifact_root
        self._experiments: dict[str, str] = {}  # name -> experiment id
        self._runs: dict[str, dict[str, str]] = {}  # experiment id -> {autoresearch key: MLflow run id}

    def write(self, run: TrackedRun) -> bool:
        from mlflow.entities import Metric, Param

        experiment = self._experiment(run.experiment, run.branch)
        known = self._known(experiment)
        if run.key in known:
            return False
        tags = {KEY_TAG: run.key, **run.tags}
        if run.parent_key in known:
            tags["mlflow.parentRunId"] = known[run.parent_key]
        if run.row.reason:
            tags["mlflow.note.content"] = f"{run.row.status} ({run.row.rule}): {run.row.reason}"
        created = self.client.create_run(experiment, start_time=_ms(run.started), tags=tags, run_name=run.name)
        run_id = created.info.run_id
        metrics = [Metric(name, value, _ms(step.wall_time), step.step)
                   for step in run.steps for name, value in step.values.items()]
        last = run.steps[-1].step if run.steps else 0
        metrics += [Metric(name, value, _ms(run.ended), last) for name, value in run.summary.items()]
        params = [Param(name, str(value)) for name, value in run.params.items()]
        for start in range(0, len(params), 100):  # 100 params per batch at most
            self.client.log_batch(run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        if run.files:
            with tempfile.TemporaryDirectory(prefix="autoresearch-mlflow-") as tmp:
                for name, text in run.files.items():
                    (Path(tmp) / name).write_text(text, encoding="utf-8")
                self.client.log_artifacts(run_id, tmp)
        status = "FINISHED" if run.row.status in FINISHED else "FAILED"
        self.client.set_terminated(run_id, status=status, end_time=_ms(run.ended))
        known[run.key] = run_id
        return True

    def _experiment(self, name: str, branch: str) -> str:
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            if found is not None and found.lifecycle_stage != "active":
                raise TrackingError(f"MLflow experiment {name!r} is deleted in {self.uri}: restore it "
                                    "(`mlflow experiments restore`) or delete it for good")
            self._experiments[name] = found.experiment_id if found is not None else self.client.create_experiment(
                name, artifact_location=f"{self.artifact_root}/{name}" if self.artifact_root else None,
                tags={"autoresearch.branch": branch})
        return self._experiments[name]

    def _known(self, experiment: str) -> dict[str, str]:
        """The runs of an experiment by their autoresearch key, read from the store once."""
        if experiment not in self._runs:
            known, token = {}, None
            while True:
                page = self.client.search_runs([experiment], max_results=1000, page_token=token)
                for r in page:
                    key = r.data.tags.get(KEY_TAG)
                    if key:
                        known[key] = r.info.run_id
                token = page.token
                if not token:
                    break
            self._runs[experiment] = known
        return self._runs[experiment]

    def close(self) -> None:
        pass


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
