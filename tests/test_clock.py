"""The training clock (clock.py, setting `clock`): on the `cpu` clock a run's budget counts its own
time on the CPUs (wall time less its threads' run-queue waits), train.py reads it through
prepare.py, and the runner holds the run to the kernel's own CPU counts, so that work moved to
other threads or processes still counts.

Real processes throughout: threads and a busy process pinned to one core beside them, a
subprocess that burns CPU in a thread, and real tiny training runs beside the load generator.
"""

from __future__ import annotations

import hashlib
import json
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
    for kind in ("wall", "cpu"):
        ws = workspace.init(tmp_path / kind, S.from_preset("tiny", clock=kind))
        assert "training_clock = _harness.training_clock" in (ws.root / "prepare.py").read_text()
        offered = Harness(ws.root).training_clock
        if kind == "wall":
            assert offered is time.perf_counter
        else:
            assert isinstance(offered, clock.RunQueueClock)  # Linux counts run-queue waits


def test_where_the_kernel_counts_no_waits_the_cpu_clock_is_the_main_thread_s_cpu_time(monkeypatch):
    assert clock.thread_times(2**22 + 12345) is None  # no such process: nothing to read
    monkeypatch.setattr(clock, "thread_times", lambda pid=None: None)  # as on macOS and Windows
    assert clock.training_clock("cpu") is time.thread_time


def test_the_cpu_clock_reads_the_hypervisor_s_steal_of_the_run_s_cpus():
    stat = ("cpu  100 0 50 900 0 0 0 30 0 0\n"
            "cpu0 50 0 25 450 0 0 0 10 0 0\n"
            "cpu1 50 0 25 450 0 0 0 20 0 0\n"
            "cpu10 0 0 0 0 0 0 0 500 0 0\n"
            "intr 12345\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert clock.stolen_seconds([0, 1], stat) == pytest.approx(15 / tick)
    assert clock.stolen_seconds([1], stat) == pytest.approx(20 / tick)  # not cpu10's
    assert clock.stolen_seconds([7], stat) == 0.0  # no such CPU: nothing to subtract
    assert clock.stolen_seconds([0], "cpu0 1 2 3\n") == 0.0  # a kernel without the column
    if os.path.exists("/proc/stat"):
        assert clock.stolen_seconds(sorted(os.sched_getaffinity(0))) >= 0.0


# Run in a subprocess pinned to one core, so that a busy process pinned beside it takes a known
# share. Four phases, each timed on the cpu clock, the wall clock and threads' own CPU clocks.
PINNED_PHASES = textwrap.dedent("""\
    import json, os, subprocess, sys, threading, time
    from autoresearch.clock import training_clock

    os.sched_setaffinity(0, {core})  # this thread, and the threads it starts
    read = training_clock("cpu")

    def busy(seconds, out):  # CPU seconds, so a machine busy with other work only makes it take longer
        c0 = time.thread_time()
        while time.thread_time() - c0 < seconds:
            pass
        out.append(time.thread_time() - c0)

    def phase(work):
        # The wall window encloses the clock's readings (the clock samples the time as a reading
        # starts, then reads /proc), so that the clock's interval is never the longer by the
        # difference between two readings' durations.
        w0 = time.perf_counter()
        c0, m0 = read(), time.thread_time()
        worker_cpu, finish = work()
        c1, m1 = read(), time.thread_time()
        result = dict(clock=c1 - c0, wall=time.perf_counter() - w0, main_cpu=m1 - m0, worker_cpu=worker_cpu)
        finish()
        return result

    def in_a_worker():  # the main thread sleeps until its worker is done, as at a parallel op's end
        out, done, release = [], threading.Event(), threading.Event()
        def work():
            busy(1.0, out)
            done.set()
            release.wait()  # a pool's worker lives on, as OpenMP's do
        worker = threading.Thread(target=work)
        worker.start()
        done.wait()
        return out[0], lambda: (release.set(), worker.join())

    def in_main(seconds):
        busy(seconds, [])
        return None, lambda: None

    results = dict(sleep=phase(lambda: (time.sleep(0.5), lambda: None)), worker_alone=phase(in_a_worker))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {core})
        time.sleep(0.2)
        results["main_shared"] = phase(lambda: in_main(1.0))
        results["worker_shared"] = phase(in_a_worker)
    finally:
        hog.kill()
        hog.wait()
    print(json.dumps(results))
""")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or clock.thread_times() is None,
                    reason="needs Linux's per-thread run-queue counts")
def test_the_cpu_clock_counts_a_run_s_own_time_and_stops_while_others_hold_its_core():
    core = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", PINNED_PHASES.format(core={core})],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    # Waiting that is the run's own counts: a sleep, and the main thread waiting for its worker
    # (which the main thread's CPU time, the clock this replaced, leaves out).
    assert 0.45 <= r["sleep"]["clock"] <= r["sleep"]["wall"] + 1e-6
    assert r["worker_alone"]["main_cpu"] < 0.1
    assert r["worker_alone"]["clock"] == pytest.approx(r["worker_alone"]["worker_cpu"], abs=0.15)
    assert r["worker_alone"]["clock"] >= 0.5
    # While a busy process shares the core, the clock counts only the seconds the run had it,
    # whether the main thread or its worker was kept waiting.
    for name in ("main_shared", "worker_shared"):
        p = r[name]
        ran = p["main_cpu"] if name == "main_shared" else p["worker_cpu"]
        assert p["clock"] == pytest.approx(ran, abs=0.15), (name, p)
        assert p["clock"] < 0.75 * p["wall"], (name, p)


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
