"""Executors: where the loop's jobs run. Each runs the same node code (node.py) per job.

- `in-process`: one worker, the job run by the loop's own process, one at a time: no process to
  start per run. What `loop` uses with one local worker.
- `local`: N node processes on this machine at once, each run pinned to its share of the CPU
  cores (threads set to match), or to one GPU each (CUDA_VISIBLE_DEVICES). Run folders are written
  in place, in the workspace's runs/.
- `ray`: each job is a Ray task that requests one GPU (gpu preset) or `cpus_per_run` CPUs, and
  starts the node on whichever machine Ray picks; the run folder comes back with the answer.
  Connects to a running cluster by address, or starts a local one.

An executor only runs jobs: it never touches the ledger or the branch. A worker that dies
(a killed process, a lost node) comes back as a `Finished` without an answer, and the
coordinator decides whether to retry.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


from autoresearch import devices, guard, processes
from autoresearch.errors import SettingsError
from autoresearch.rundir import HANDED_OVER, MODEL_LEFT, NODE_LOG, tail
from autoresearch.scale.job import Answer, Job
from autoresearch.scale.node import ENV_NODE_NAME, execute
from autoresearch.settings import Settings
from autoresearch.workspace import Workspace

NODE_COMMAND = ("-m", "autoresearch.scale.node")
NODES_DIR = "nodes"  # under .autoresearch/: the local nodes' workspaces and output
MAX_SHIPPED_MODEL = 256 * 2**20  # bytes; a bigger handed-over model is not sent back from a Ray node


@dataclass
class Finished:
    job: Job
    answer: Answer | None  # None: the worker died before answering
    error: str = ""  # why there is no answer
    files: dict[str, bytes] = field(default_factory=dict)  # the run folder, when it was not written in place


class Executor(Protocol):
    name: str
    workers: int

    def free(self) -> int:
        """How many more jobs can start now."""
        ...

    def submit(self, job: Job) -> None: ...

    def wait(self, timeout: float) -> list[Finished]:
        """Jobs that ended since the last call, waiting up to `timeout` seconds for one."""
        ...

    def cancel_all(self) -> None:
        """End every job under way (their runs are not recorded; they run again on resume)."""
        ...

    def close(self) -> None: ...


def _answer_in(text: str) -> Answer | None:
    for line in reversed(text.splitlines()):
        try:
            return Answer.from_json(line)
        except (json.JSONDecodeError, TypeError):
            continue
    return None


# --- in-process ---------------------------------------------------------------------------------


class InProcessExecutor:
    """One worker: the loop's own process runs each job when it waits for it (nothing else can
    happen meanwhile with one worker). Ctrl-C or an error during a run reaches `cancel_all`, which
    ends the run's processes (train.py and the evaluator run in sessions of their own)."""

    name = "in-process"
    workers = 1

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = ws.state_dir / NODES_DIR
        self.package = guard.package_files()  # the harness code as it is when the loop starts
        self.job: Job | None = None

    def free(self) -> int:
        return 0 if self.job is not None else 1

    def submit(self, job: Job) -> None:
        if self.job is not None:
            raise RuntimeError("the in-process executor runs one job at a time")
        job.runs_dir, job.node_root = str(self.ws.runs_dir), str(self.folder)
        self.job = job

    def wait(self, timeout: float) -> list[Finished]:
        job = self.job
        if job is None:
            return []
        answer = execute(job, package=self.package, watch_parent=False)
        self.job = None
        if answer.workspace:
            shutil.rmtree(answer.workspace, ignore_errors=True)
        return [Finished(job, answer)]

    def cancel_all(self) -> None:
        if self.job is not None:
            processes.end_run(self.ws.runs_dir / self.job.run_id)
            self.job = None

    def close(self) -> None:
        self.cancel_all()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- local --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    cores: list[int] | None = None
    threads: int | None = None
    gpu: str | None = None

    def describe(self) -> str:
        if self.gpu is not None:
            return f"GPU {self.gpu}"
        return f"cores {','.join(map(str, self.cores or []))}"


def plan_slots(workers: int, device: str | None = None) -> list[Slot]:
    """One slot per worker: a GPU each on CUDA, else an equal share of this process's CPU cores."""
    if workers < 1:
        raise SettingsError(f"--workers {workers}: give 1 or more")
    device = device or devices.best_device()
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if workers > gpus:
            raise SettingsError(f"--workers {workers} needs {workers} GPUs (one per run); this machine has {gpus}")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        names = [n.strip() for n in visible.split(",")] if visible else [str(i) for i in range(gpus)]
        return [Slot(gpu=names[i]) for i in range(workers)]
    if device == "mps" and workers > 1:
        raise SettingsError("an Apple GPU runs one training run at a time: use --workers 1 (or the ray executor "
                            "with several Macs)")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if workers > len(cores):
        raise SettingsError(f"--workers {workers} needs at least {workers} CPU cores (one or more per run); "
                            f"this process may use {len(cores)}")
    share = len(cores) // workers
    return [Slot(cores=cores[i * share:(i + 1) * share], threads=share) for i in range(workers)]


@dataclass
class _Process:
    job: Job
    proc: subprocess.Popen
    out: Path
    err: Path


class LocalExecutor:
    """N node processes on this machine; run folders written straight into the workspace's runs/."""

    name = "local"

    def __init__(self, ws: Workspace, workers: int, python: str = sys.executable, device: str | None = None) -> None:
        self.ws = ws
        self.python = python
        self.slots = plan_slots(workers, device)
        self.running: dict[int, _Process] = {}
        self.folder = ws.state_dir / NODES_DIR

    @property
    def workers(self) -> int:
        return len(self.slots)

    def free(self) -> int:
        return len(self.slots) - len(self.running)

    def submit(self, job: Job) -> None:
        index = next(i for i in range(len(self.slots)) if i not in self.running)
        slot = self.slots[index]
        job.cores, job.threads, job.gpu = slot.cores, slot.threads, slot.gpu
        job.runs_dir, job.node_root = str(self.ws.runs_dir), str(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"run{job.run_id}-{job.attempt}.out"
        err = self.folder / f"run{job.run_id}-{job.attempt}.err"
        # The node carries the run's key, so a resumed coordinator can find and end it.
        env = {**os.environ, processes.ENV_RUN_ID: processes.run_key(self.ws.runs_dir / job.run_id)}
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen([self.python, *NODE_COMMAND], stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                                    env=env, start_new_session=True)
        try:
            proc.stdin.write(job.to_json().encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once: wait() reports it
        self.running[index] = _Process(job, proc, out, err)

    def wait(self, timeout: float) -> list[Finished]:
        deadline = time.monotonic() + timeout
        while True:
            done = [i for i, p in self.running.items() if p.proc.poll() is not None]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return [self._finish(self.running.pop(i)) for i in done]

    def _finish(self, p: _Process) -> Finished:
        answer = _answer_in(p.out.read_text(errors="replace"))
        log = p.err.read_text(errors="replace")
        run_dir = self.ws.runs_dir / p.job.run_id
        if log.strip() and run_dir.is_dir():
            (run_dir / NODE_LOG).write_text(log)
        for path in (p.out, p.err):
            path.unlink(missing_ok=True)
        if answer is not None and answer.workspace:
            shutil.rmtree(answer.workspace, ignore_errors=True)
        if answer is None:  # the node died: end what its run left running (train.py is in a session of its own)
            processes.end_run(run_dir)
            return Finished(p.job, None, f"the worker process {p.proc.pid} exited with code {p.proc.returncode} "
                                         f"before answering{': ' + tail(log, 3) if log.strip() else ''}")
        return Finished(p.job, answer)

    def cancel_all(self) -> None:
        for p in self.running.values():
            processes.end_run(self.ws.runs_dir / p.job.run_id, root=p.proc.pid)
            p.proc.wait()
            for path in (p.out, p.err):
                path.unlink(missing_ok=True)
        self.running.clear()

    def close(self) -> None:
        self.cancel_all()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- ray ----------------------------------------------------------------------------------------


def run_on_ray_node(job_json: str) -> tuple[str, dict[str, bytes]]:
    """The Ray task: run the node here, answer with its record and the run folder's files."""
    import ray

    job = Job.from_json(job_json)
    name = f"{socket.gethostname()}/ray-node-{ray.get_runtime_context().get_node_id()[:8]}"
    done = subprocess.run([sys.executable, *NODE_COMMAND], input=job_json, capture_output=True, text=True,
                          env={**os.environ, ENV_NODE_NAME: name})
    answer = _answer_in(done.stdout)
    if answer is None:
        raise RuntimeError(f"the node exited with code {done.returncode} before answering: {tail(done.stderr, 5)}")
    files: dict[str, bytes] = {}
    if answer.workspace:
        run_dir = Path(answer.workspace) / "runs" / job.run_id
        for path in sorted(run_dir.iterdir()) if run_dir.is_dir() else ():
            size = path.stat().st_size
            if path.name == HANDED_OVER and size > MAX_SHIPPED_MODEL:
                files[MODEL_LEFT] = (f"the model ({size / 2**20:.0f} MiB) was not sent back from node "
                                     f"{answer.node}: larger than {MAX_SHIPPED_MODEL / 2**20:.0f} MiB\n").encode()
            elif path.is_file():
                files[path.name] = path.read_bytes()
        if done.stderr.strip():
            files[NODE_LOG] = done.stderr.encode()
        shutil.rmtree(answer.workspace, ignore_errors=True)
    return answer.to_json(), files


class RayExecutor:
    """Jobs as Ray tasks, on an existing cluster (`address`) or a local one started here."""

    name = "ray"

    def __init__(self, workers: int, settings: Settings, address: str | None = None,
                 cpus_per_run: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SettingsError("the ray executor needs Ray: pip install 'autoresearch[ray]'") from None
        self.ray = ray
        if workers < 1:
            raise SettingsError(f"--workers {workers}: give 1 or more")
        self.workers = workers
        self.address = address
        try:
            # A cluster of this machine alone: no dashboard, and asked to stay on loopback (Ray may
            # still choose the machine's address for it).
            local = {} if address else {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
            ray.init(address=address or "local", logging_level="WARNING", log_to_driver=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SettingsError(f"could not connect to the Ray cluster at {address}: {e}; start it with "
                                "`ray start --head` (or leave --ray-address out to start a local one)") from None
        resources = ray.cluster_resources()
        if settings.preset == "gpu":
            if resources.get("GPU", 0) < 1:
                raise SettingsError("the gpu preset needs GPUs in the Ray cluster, and it has none")
            self.request = {"num_gpus": 1, "num_cpus": 1}
            self.threads = None
        else:
            cpus = int(resources.get("CPU", 1))
            per_run = cpus_per_run or max(1, cpus // workers)
            if per_run > cpus:
                raise SettingsError(f"--cpus-per-run {per_run} is more than the cluster's {cpus} CPUs")
            self.request = {"num_cpus": per_run}
            self.threads = per_run
        self.task = ray.remote(max_retries=0)(run_on_ray_node).options(**self.request)
        self.running: dict = {}  # ObjectRef -> Job

    def free(self) -> int:
        return self.workers - len(self.running)

    def submit(self, job: Job) -> None:
        job.threads = self.threads
        self.running[self.task.remote(job.to_json())] = job

    def wait(self, timeout: float) -> list[Finished]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        out = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                answer_json, files = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:
                message = " ".join(str(e).split())
                out.append(Finished(job, None, f"{type(e).__name__}: {message[:300]}"))
                continue
            out.append(Finished(job, Answer.from_json(answer_json), files=files))
        return out

    def cancel_all(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()

    def close(self) -> None:
        self.cancel_all()
        self.ray.shutdown()


def make_executor(kind: str, ws: Workspace, settings: Settings, workers: int = 1, address: str | None = None,
                  cpus_per_run: int | None = None) -> Executor:
    """The executor a loop runs its jobs on: one local worker runs in the loop's own process."""
    if kind == "local":
        if address or cpus_per_run:
            raise SettingsError("--ray-address and --cpus-per-run go with --executor ray (the local executor "
                                "splits this machine's cores itself)")
        if workers == 1:
            return InProcessExecutor(ws)
        return LocalExecutor(ws, workers)
    if kind == "ray":
        return RayExecutor(workers, settings, address, cpus_per_run)
    raise SettingsError(f"unknown executor {kind!r}: use local or ray")
