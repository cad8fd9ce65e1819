"""Experiment trackers: the research, as MLflow, Weights & Biases and TensorBoard show it.

The ledger and the run folders stay the source of truth; a tracker is a view of them, written
after each ledger row (live, `loop --track NAME`) or from the run folders (`autoresearch track`).
Both build the same records (record.py) and write them the same way, so a backfill gives what
live tracking would have. A tracker that fails warns once and is off for the rest of the loop
(publisher.py): it never stops or slows the research. docs/tracking.md says what appears where.
Webhooks (`--notify URL`) are one more sink of the same thread: small JSON documents when a
change is kept, runs crash repeatedly, or the loop ends.

    record.py          TrackedRun: one ledger row with its run folder, as every tracker sees it
    config.py          [tracking] in autoresearch.toml and the --track and --notify flags
    publisher.py       the loop's hook: rows to trackers and events to webhooks, in a background thread
    notify.py          the events (kept, crashes, ended) and their JSON documents
    webhook.py         one document POSTed to one webhook: timeout, retries, backoff
    to_mlflow.py       MLflow (its own client; a local SQLite store by default)
    to_tensorboard.py  TensorBoard event files (scalars and the HParams plugin)
    to_wandb.py        Weights & Biases (offline unless WANDB_MODE says otherwise)
    backfill.py        `autoresearch track`: a workspace's ledger into trackers
"""

from __future__ import annotations

NAMES = ("mlflow", "wandb", "tensorboard")
EXTRA = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}  # pip install 'autoresearch[X]'
