"""Stand-ins for the fast tier: an executor that returns scripted run results, and a proposer
that writes scripted changes. They replace only the measurement (training): the loop, its git
steps, its state file, the ledger and the keep rule run for real.

A scripted change appends a marker line to train.py; the executor reads it from the job's files:

    # scripted: {"val": [2.99, 2.97], "outcome": "ok"}

gives a run of that commit val_bpb 2.99, its second run (a confirmation) 2.97. A train.py
without a marker is the baseline: BASELINE_BPB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from autoresearch import processes
from autoresearch.errors import ProposerError
from autoresearch.proposers.base import Proposal
from autoresearch.rundir import LOG_FILE, METRICS_FILE, RunResult, now
from autoresearch.scale.executors import Finished
from autoresearch.scale.job import RAN, Answer, Job

BASELINE_BPB = 3.0
MARKER = "# scripted: "


def die() -> None:
    """What SIGKILL does to the loop: no cleanup, no finally, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def script_of(train_py: str) -> dict:
    """The script of a train.py: its markers, the later ones (in the file) over the earlier."""
    script: dict = {}
    for line in train_py.splitlines():
        if line.startswith(MARKER):
            script.update(json.loads(line[len(MARKER):]))
    return script


class ScriptedExecutor:
    """Runs nothing: each job's result comes from the marker in its train.py, on the next wait().

    `kill_on_submit`: a run id; submitting it starts a stand-in training process carrying the run's
    key (as train.py would), then kills this process: a loop killed while a run is under way."""

    name = "scripted"

    def __init__(self, ws, workers: int = 1, kill_on_submit: int | None = None,
                 values: list[float] | None = None, contention: list[float] | None = None,
                 outcomes: list[str] | None = None, gpu: list[dict] | None = None) -> None:
        self.ws = ws
        self.values = list(values) if values is not None else None  # val_bpb of the runs in order, markers aside
        # interference met by the runs in order (the share of their CPU others competed for), and
        # their outcomes in order (ok, timeout, ...), markers aside; then quiet and ok
        self.contention = list(contention or [])
        self.outcomes = list(outcomes or [])
        self.gpu = list(gpu or [])  # the GPU fields of their interference records (nvml.py), in order; then none
        self.workers = workers
        self.running: list[Job] = []
        self.kill_on_submit = kill_on_submit
        self.runs_of: dict[str, int] = {}  # commit -> runs so far
        self.submitted = 0

    def free(self) -> int:
        return self.workers - len(self.running)

    def submit(self, job: Job) -> None:
        self.submitted += 1
        if self.kill_on_submit == self.submitted:
            run_dir = self.ws.runs_dir / job.run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / LOG_FILE).write_text("step 1\n")
            env = {**os.environ, processes.ENV_RUN_ID: processes.run_key(run_dir)}
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                             start_new_session=True)
            die()
        self.running.append(job)

    def wait(self, timeout: float) -> list[Finished]:
        if not self.running:
            return []
        job = self.running.pop(0)  # one at a time, oldest first: a fixed order of events
        script = script_of(job.files["train.py"])
        n = self.runs_of.get(job.commit, 0)
        self.runs_of[job.commit] = n + 1
        values = script.get("val", [BASELINE_BPB])
        outcome = self.outcomes.pop(0) if self.outcomes else script.get("outcome", "ok")
        contention = self.contention.pop(0) if self.contention else 0.0
        gpu = self.gpu.pop(0) if self.gpu else {}
        val = values[min(n, len(values) - 1)] if outcome == "ok" else None
        if self.values is not None:
            val = self.values.pop(0)
        stamp = now()
        result = RunResult(
            run_id=job.run_id, commit=job.commit, outcome=outcome, val_bpb=val,
            heldout_bpb=None if val is None else val * script.get("heldout_ratio", 1.05),
            wall_seconds=4.0, handover_seconds=3.5, summary={"peak_vram_mb": 100.0, "num_steps": 10.0},
            error="" if outcome == "ok" else f"scripted {outcome}", started=stamp, ended=stamp,
            interference={"seconds": 4.0, "cores": 2, "demand": 1.0, "others_cores": 1 + contention,
                          "contention": contention, **gpu})
        log = "".join(f"\rstep {s:05d} | loss: {5 - s / 10:.4f}" for s in range(20))
        log += f"\n---\nval_bpb:          {val or 0:.6f}\ntraining_seconds: 3.0\n"
        metrics = "".join(json.dumps({"step": s, "loss": 5 - s / 10, "tokens_per_s": 9000.0,
                                      "training_seconds": s / 10}) + "\n" for s in range(20))
        files = {LOG_FILE: log.encode(), METRICS_FILE: metrics.encode()}
        return [Finished(job, Answer(RAN, result=result.__dict__), files=files)]

    def cancel_all(self) -> None:
        self.running.clear()

    def close(self) -> None:
        self.cancel_all()


def marked(source: str, **script) -> str:
    """`source` with a marker line: at the end, or with at="top" at the start (two changes at either
    end of the file merge without a conflict)."""
    line = f"{MARKER}{json.dumps(script)}\n"
    if script.get("at") == "top":
        return line + source
    return source.rstrip("\n") + "\n" + line


class ScriptedProposer:
    """Applies (description, script) changes in order; a script of None fails the proposal.

    `kill_after`: the number of the proposal after whose edit this process is killed (proposed,
    never committed). `other_file`: descriptions whose change also writes a file besides train.py."""

    name = "scripted"

    def __init__(self, changes: list[tuple[str, dict | None]], kill_after: int | None = None,
                 other_file: tuple[str, ...] = ()) -> None:
        self.changes = list(changes)
        self.kill_after = kill_after
        self.other_file = other_file
        self.proposed = 0
        self.observed: list[tuple[str, list]] = []

    def propose(self, ctx) -> Proposal:
        if not self.changes:
            raise ProposerError("no more scripted changes")
        description, script = self.changes.pop(0)
        self.proposed += 1
        if script is None:
            raise ProposerError(f"scripted failure: {description}", description=description)
        ctx.ws.train_py.write_text(marked(ctx.best_source, **script))
        if description in self.other_file:
            (ctx.ws.root / "helper.py").write_text("x = 1\n")
        if self.kill_after == self.proposed:
            die()
        return Proposal(description, hypothesis="scripted")

    def observe(self, proposal, rows) -> None:
        self.observed.append((proposal.description, rows))


def run_ids_in_flight(ws) -> list[str]:
    path = Path(ws.state_dir) / "flights.json"
    if not path.exists():
        return []
    return [r for f in json.loads(path.read_text()) for r in f.get("runs", [])]
