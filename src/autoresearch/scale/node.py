"""A node runs one job of the coordinator, in a workspace of its own.

1. Build a throwaway workspace from the job's files (a git repository with one commit) and check
   that this node's harness writes the same fixed files (the same autoresearch version).
2. Prepare the data from the settings if this machine has not yet, and refuse the job when the
   data fingerprint differs from the coordinator's (another version of the dataset, another
   Python's standard library for the offline default, another tokenizer): results made on other
   data cannot be compared.
3. Run the experiment with the ordinary Runner (its clock, guards and evaluator) on the cores or
   the GPU the executor gave the job.
4. Answer with the run's record; the run folder is in the shared `runs_dir`, or in the node's
   workspace for the executor to send back.

`python -m autoresearch.scale.node` reads the job on stdin and prints the answer as its last
stdout line. If its parent (the executor's process, a Ray worker) dies, it ends the run's
processes and exits, so a dead worker leaves nothing running.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path


import autoresearch
from autoresearch import atomic, processes
from autoresearch.data.prepare import open_prepared, prepare
from autoresearch.errors import AutoresearchError, DataError
from autoresearch.git import Git
from autoresearch.rundir import RunResult
from autoresearch.runner import Runner
from autoresearch.scale.job import RAN, REFUSED, Answer, Job
from autoresearch.settings import load as load_settings
from autoresearch.workspace import Workspace

ENV_NODE_ROOT = "AUTORESEARCH_NODE_DIR"
ENV_NODE_NAME = "AUTORESEARCH_NODE_NAME"  # how the executor names this node (the Ray node's id)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Refused(AutoresearchError):
    """This node cannot run the job the way the coordinator would have (a clear reason)."""


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_workspace(job: Job) -> Workspace:
    """The job's commit, checked out in a fresh folder of this node."""
    root = Path(job.node_root or os.environ.get(ENV_NODE_ROOT) or Path(tempfile.gettempdir()) / "autoresearch-nodes")
    folder = root / f"run{job.run_id}-{job.attempt}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    for path, text in job.files.items():
        target = folder / path
        if target.resolve().parent != folder.resolve() and folder.resolve() not in target.resolve().parents:
            raise Refused(f"job file {path!r} points outside the node's workspace")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(target, text)
    git = Git(folder)
    git.run("init", "--quiet", "--initial-branch=node")
    git.commit_all(f"run {job.run_id} of commit {job.commit[:7]}")
    return Workspace(folder)


def check(job: Job, ws: Workspace):
    """The settings, fixed files and data this node would run the job with; Refused if they differ."""
    if job.version != autoresearch.__version__:
        raise Refused(f"node {node_name()} runs autoresearch {autoresearch.__version__}, the coordinator "
                      f"{job.version}: install the same version on every node")
    problems = ws.check_fixed_files()
    if problems:
        raise Refused(f"node {node_name()}: the job's {', '.join(problems)} differ from what this node's harness "
                      "writes: install the coordinator's autoresearch version on every node")
    settings = load_settings(ws.root)
    if settings.sha256() != job.settings_sha256:
        raise Refused(f"node {node_name()} reads the settings differently (hash {settings.sha256()[:12]}, the "
                      f"coordinator's {job.settings_sha256[:12]}): install the same autoresearch version on every node")
    try:
        prepared = open_prepared(settings)
    except DataError:
        prepared = prepare(settings, log=lambda line: print(f"[node prepare] {line}", file=sys.stderr, flush=True))
    if prepared.data_sha256 != job.data_sha256:
        raise Refused(
            f"node {node_name()} prepared dataset {settings.dataset!r} with data fingerprint "
            f"{prepared.data_sha256[:12]}, but the coordinator's is {job.data_sha256[:12]}: the data differ (another "
            "dataset version, or for the offline default another Python's standard library). Give every node the "
            f"same data (same Python and autoresearch versions; remove {prepared.directory} to prepare again), or "
            "leave this node out of the cluster")
    return settings, prepared


def run_environment(job: Job) -> dict[str, str]:
    env: dict[str, str] = {}
    if job.threads:
        env.update({name: str(job.threads) for name in THREAD_VARIABLES})
    if job.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = job.gpu
    return env


def execute(job: Job, package: dict[Path, bytes] | None = None, watch_parent: bool = True) -> Answer:
    """Run the job here; the answer says what happened (refusals included).

    `package`: the harness code as the loop found it when it started (default: as it is now); a run
    is invalid if it changes. `watch_parent`: end the run and exit if the parent process dies (a
    node process of its own; not when the loop runs the job in its own process)."""
    started = time.monotonic()
    ws = None
    try:
        if job.cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, job.cores)  # inherited by train.py and the evaluator
        ws = build_workspace(job)
        settings, prepared = check(job, ws)
    except Refused as e:
        return Answer(REFUSED, error=str(e), node=node_name(), workspace=str(ws.root) if ws else "")
    runs_dir = Path(job.runs_dir) if job.runs_dir else None
    runner = Runner(ws, settings, prepared.data_sha256, extra_env=run_environment(job), runs_dir=runs_dir,
                    **({"package": package} if package is not None else {}))
    if watch_parent:
        _end_with_parent((runs_dir or ws.runs_dir) / job.run_id)
    result = runner.run(job.run_id, ws.git.head())
    result.commit = job.commit  # the coordinator's name for the commit that ran
    result.node = os.environ.get(ENV_NODE_NAME) or node_name()
    result.save((runs_dir or ws.runs_dir) / job.run_id)
    return Answer(RAN, result=RunResult.load((runs_dir or ws.runs_dir) / job.run_id).__dict__, node=node_name(),
                  workspace=str(ws.root), seconds=round(time.monotonic() - started, 2))


def _end_with_parent(run_dir: Path) -> None:
    """Watch the parent; when it dies (a killed worker), end the run's processes and exit."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        print(f"node {node_name()}: its parent {parent} died; ending run {run_dir.name}", file=sys.stderr, flush=True)
        processes.end_run(run_dir, root=os.getpid())  # train.py, the evaluator, what left their group
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main() -> int:
    job = Job.from_json(sys.stdin.read())
    answer = execute(job)
    print(answer.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
