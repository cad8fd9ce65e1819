"""What the coordinator sends to a node for one run, and what comes back.

A `Job` is self-contained, so a node on another machine needs nothing else: the commit's files
(train.py, the fixed files, the settings; a few tens of kB), the run's id, and the fingerprints
the node must match. An `Answer` is the runner's record of the run (result.json), or why the
node refused the job. The run folder travels separately: on one machine the node writes it in
place; a Ray node sends its files back with the answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

RAN, REFUSED = "ran", "refused"


@dataclass
class Job:
    run_id: str
    commit: str  # the coordinator's commit; the node's own copy of it has another hash
    files: dict[str, str]  # every file of the commit: path -> text
    settings_sha256: str
    data_sha256: str  # the coordinator's prepared data; a node whose data differ refuses the job
    version: str  # the coordinator's autoresearch version
    attempt: int = 1  # 2 and up: a retry after the worker running it died
    threads: int | None = None  # CPU threads for training and evaluation (cores split between runs)
    cores: list[int] | None = None  # local executor: the cores the run is pinned to
    gpu: str | None = None  # local executor: CUDA_VISIBLE_DEVICES for the run
    runs_dir: str | None = None  # a shared folder to write the run folder in; None: the node's own
    node_root: str | None = None  # where the node builds its workspace; None: a temporary folder

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


@dataclass
class Answer:
    status: str  # ran | refused
    result: dict = field(default_factory=dict)  # the RunResult, as in result.json
    error: str = ""  # why the job was refused
    node: str = ""  # host:pid of the node that ran it
    workspace: str = ""  # the node's workspace (the executor removes it)
    seconds: float = 0.0  # the node's wall time: set-up + run

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Answer:
        return cls(**json.loads(text))
