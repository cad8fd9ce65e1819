"""Ctrl-C, SIGTERM and a closed terminal stop the loop cleanly: the run under way ends with every
process it started (train.py and the evaluator, in sessions of their own), nothing is recorded
for it, the terminal says how to resume, and resuming runs it again: nothing lost, nothing doubled.

The signal goes to the loop's whole process group, as a terminal's Ctrl-C does. Real training at
tiny size, the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from autoresearch.ledger import Ledger
from autoresearch.processes import ENV_RUN_ID
from tests.test_loop import consistent, run_cli, wait_for

pytestmark = pytest.mark.slow


def training(ws, kind: str) -> str | None:
    """The run id of a `kind` run that is training now (its metrics stream has begun), else None."""
    path = ws.state_dir / "flights.json"
    try:
        flights = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for flight in flights:
        if flight["phase"] == "running" and flight["kind"] == kind and flight["runs"]:
            run_id = flight["runs"][-1]
            if (ws.runs_dir / run_id / "metrics.jsonl").exists():
                return run_id
    return None


def alive(pids: set[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


def carrying_key(ws) -> list[int]:
    prefix = str(ws.runs_dir.resolve())
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(ENV_RUN_ID, "").startswith(prefix):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def interrupt_during(ws, kind: str, sig: signal.Signals, *args: str) -> tuple[str, str]:
    """Start `autoresearch loop ARGS`, send `sig` to its process group while a `kind` run trains;
    check that everything stops within 30 s (the loop itself says it stopped within a second or two; a
    busy machine, as beside the suite's load tests, slows the interpreter's exit). Returns the
    interrupted run id and the output."""
    loop = run_cli(ws, "loop", *args, start_new_session=True)
    try:
        wait_for(lambda: training(ws, kind) is not None, timeout=240)
        run_id = training(ws, kind)
        started = {p.pid for p in psutil.Process(loop.pid).children(recursive=True)}
        assert len(started) >= 2, "train.py and the evaluator should be running"
        os.killpg(loop.pid, sig)
        out, _ = loop.communicate(timeout=30)
    finally:
        if loop.poll() is None:
            loop.kill()
    deadline = time.monotonic() + 1.0  # psutil may see a killed process for a moment
    while (alive(started) or carrying_key(ws)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(started) == [] and carrying_key(ws) == [], out
    assert loop.returncode == 128 + sig, out
    return run_id, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_an_experiment_ends_its_run_and_the_loop_resumes_it(make_workspace, sig):
    ws = make_workspace(budget=8, baseline_runs=1)
    run_id, out = interrupt_during(ws, "experiment", sig, "--max-experiments", "1")
    assert f"ending run(s) {run_id}" in out and "resume with `autoresearch loop`" in out
    assert "Traceback" not in out
    assert run_id not in Ledger.open(ws.ledger_path).run_ids()  # not recorded: it was not judged
    assert ws.git.dirty_paths() == []
    again = run_cli(ws, "loop", "--max-experiments", "1")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    assert "recovering: resuming experiment" in out
    assert "1 experiment(s) decided (1 resumed)" in out  # the resumed one was the one asked for
    consistent(ws, experiments=1)


def test_ctrl_c_during_the_baseline_of_two_workers_ends_both_runs(make_workspace):
    ws = make_workspace(budget=8, baseline_runs=2)
    run_id, out = interrupt_during(ws, "baseline", signal.SIGINT, "--max-experiments", "1", "--workers", "2")
    assert "resume with `autoresearch loop --workers 2`" in out
    assert Ledger.open(ws.ledger_path).rows == []
    again = run_cli(ws, "loop", "--max-experiments", "1", "--workers", "2")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    rows = consistent(ws, experiments=1)
    assert [r.kind for r in rows].count("baseline") == 2
