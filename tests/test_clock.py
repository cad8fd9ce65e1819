"""The training clock (clock.py, setting `clock`): on the `cpu` clock a run's budget counts the CPU
time of its main thread, train.py reads it through prepare.py, and the runner holds the run to it
from the kernel's own counts, so that work moved to other threads or processes still counts.

Real processes throughout: a subprocess that burns CPU in a thread, and real tiny training runs
beside the load generator.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from autoresearch import clock, workspace
from autoresearch import settings as S
from autoresearch.api import Harness
from autoresearch.errors import SettingsError
from autoresearch.runner import Runner
from bench.loadgen import LoadGenerator


def test_the_clock_is_a_setting_and_the_cpu_clock_has_a_longer_wall_hard_limit():
    wall = S.from_preset("tiny", time_budget=5.0)
    cpu = S.from_preset("tiny", time_budget=5.0, clock="cpu")
    assert wall.clock == "wall" and cpu.clock == "cpu"
    assert cpu.effective_hard_limit == clock.CPU_CLOCK_HARD_FACTOR * wall.effective_hard_limit
    assert cpu.clock_hard_limit == wall.effective_hard_limit  # the same limit, on its own clock
    assert S.from_preset("tiny", clock="cpu", hard_limit=500.0).effective_hard_limit == 500.0
    with pytest.raises(SettingsError, match="clock must be one of wall, cpu, got 'sundial'"):
        S.from_preset("tiny", clock="sundial")


def test_prepare_offers_the_workspace_s_clock(tmp_path):
    for kind, expected in (("wall", time.perf_counter), ("cpu", time.thread_time)):
        ws = workspace.init(tmp_path / kind, S.from_preset("tiny", clock=kind))
        assert "training_clock = _harness.training_clock" in (ws.root / "prepare.py").read_text()
        assert Harness(ws.root).training_clock is expected


def test_a_workspace_made_before_the_clock_keeps_its_prepare_py(tmp_path):
    ws = workspace.init(tmp_path / "ws", S.from_preset("tiny"))
    prepare = ws.root / "prepare.py"
    current = prepare.read_text()
    earlier = "".join(line for line in current.splitlines(keepends=True) if "training_clock" not in line)
    assert hashlib.sha256(earlier.encode()).hexdigest() in workspace.EARLIER_PREPARE_SHA256
    prepare.write_text(earlier)
    assert ws.check_fixed_files() == []
    prepare.write_text(earlier.replace("TIME_BUDGET = _harness.time_budget", "TIME_BUDGET = 3600"))
    assert ws.check_fixed_files() == ["prepare.py"]


BURN_IN_A_THREAD = textwrap.dedent("""\
    import threading, time
    def burn():
        t = time.thread_time()
        while time.thread_time() - t < {seconds}:
            pass
    worker = threading.Thread(target=burn)
    worker.start()
    print("ready", flush=True)
    worker.join()
    print("burnt", flush=True)
    time.sleep(30)
""")


def test_the_runner_s_count_sees_work_moved_off_the_main_thread():
    proc = subprocess.Popen([sys.executable, "-c", BURN_IN_A_THREAD.format(seconds=1.5)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert proc.stdout.readline() == "burnt\n"
        main, tree = clock.main_thread_seconds(proc.pid), clock.tree_seconds(proc.pid)
        assert main is not None and main < 0.5  # it only waited
        assert tree >= 1.5
        assert clock.run_clock_seconds(proc.pid, demand=1.0) == pytest.approx(tree, abs=0.05)
        assert clock.run_clock_seconds(proc.pid, demand=2.0) == pytest.approx(max(main, tree / 2), abs=0.05)
    finally:
        proc.kill()
        proc.wait()
    assert clock.run_clock_seconds(proc.pid, 1.0) is None  # gone


@pytest.mark.slow
def test_on_the_cpu_clock_a_loaded_run_counts_its_own_cpu_time(make_workspace, prepared):
    ws = make_workspace(budget=3, clock="cpu", hard_limit=240.0)
    probe = "import os\nprint('wait policy:', os.environ.get('OMP_WAIT_POLICY'), flush=True)\n"
    ws.train_py.write_text(ws.train_py.read_text().replace("# --- setup", probe + "# --- setup", 1))
    ws.git.commit_all("print the wait policy")
    runner = Runner(ws, ws.settings(), prepared.data_sha256)
    with LoadGenerator(cores=os.cpu_count() or 1) as load:  # every core busy: the run gets a share of one
        load.on()
        result = runner.run("0001", ws.git.head())
    assert result.outcome == "ok", result.why
    assert "wait policy: PASSIVE" in (ws.runs_dir / "0001" / "train.log").read_text()
    # the hand-over came later on the wall clock than on the run's own CPU clock: the load had its share
    assert result.clock_seconds < 0.9 * result.handover_seconds
    assert result.summary["training_seconds"] >= 3.0  # train.py counted the budget on the same clock


@pytest.mark.slow
def test_on_the_cpu_clock_work_moved_to_a_thread_is_killed_at_the_hard_limit(make_workspace, prepared):
    ws = make_workspace(budget=2, clock="cpu", startup_allowance=8.0, hard_limit=240.0)  # 12 s of CPU at most
    burn = BURN_IN_A_THREAD.replace("time.sleep(30)\n", "").format(seconds=30)
    ws.train_py.write_text(ws.train_py.read_text().replace("# --- setup", burn + "# --- setup", 1))
    ws.git.commit_all("train in another thread while the main one waits")
    result = Runner(ws, ws.settings(), prepared.data_sha256).run("0001", ws.git.head())
    assert result.outcome == "timeout"
    assert result.error == "killed at the hard limit of 12 s of CPU time"  # not the wall clock's 240 s
