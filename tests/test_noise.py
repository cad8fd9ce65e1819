"""Decisions on a busy machine: interference measured per run, disturbed runs run again before
any decision, a baseline that is disturbed or hits the hard limit retried, control runs of the
best, a noise estimate that one wild run cannot set, and a warning when it is implausible.

The loop, git, the ledger and the keep rule are real; the measurement is scripted where the
decision logic is tested (tests/scripted.py), and real (a load generator beside a real process)
where the meter is.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import psutil
import pytest

from autoresearch import settings as S
from autoresearch.decide import implausible, pooled_sigma
from autoresearch.interference import Meter
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.research import Limits
from bench.loadgen import LoadGenerator
from tests.scripted import ScriptedExecutor, ScriptedProposer

BETTER = {"val": [2.0]}


def rows_of(ws):
    return [(r.kind, r.status, r.rule) for r in Ledger.open(ws.ledger_path).rows]


def run_loop(ws, executor, changes=(), logged=None, **limits):
    sink = logged.append if logged is not None else (lambda _: None)
    with Loop.open(ws.root, tag="t", log=sink, executor=executor) as loop:
        loop.run(ScriptedProposer(list(changes)), Limits(max_experiments=len(changes), **limits))


def test_the_meter_sees_a_load_beside_the_run_and_not_the_run_itself():
    with LoadGenerator(cores=1) as load:
        meter = Meter(demand=float(psutil.cpu_count()))
        load.on()
        meter.start()
        before = load.cpu_seconds()
        run = subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 1.5: pass"], check=True)
        measured = meter.stop()
        injected = load.cpu_seconds() - before
    assert run.returncode == 0 and injected > 0.5
    # everything but the run and this process counts as others: at least the injected load
    assert measured.others_cores * measured.seconds >= injected * 0.9
    assert measured.contention > 0.2  # the run wanted every core, the load took one
    assert 0 < measured.run_share <= 1.05


def test_a_disturbed_experiment_runs_again_before_it_is_judged(make_workspace):
    ws = make_workspace(budget=3, max_interference=0.25)
    logged: list[str] = []
    # baseline x2 quiet, the experiment's first run disturbed, its re-run quiet
    run_loop(ws, ScriptedExecutor(ws, contention=[0.0, 0.0, 0.6, 0.0]), [("a gain", BETTER)], logged)
    assert rows_of(ws) == [("baseline", "keep", "baseline")] * 2 + [
        ("disturbed", "discard", "disturbed"), ("experiment", "keep", "gain")]
    disturbed = Ledger.open(ws.ledger_path).rows[2]
    assert disturbed.interference == 0.6 and "contention 60%" in disturbed.reason
    assert disturbed.description == "a gain (disturbed)"
    assert any("run 0003 disturbed" in line and "running it again (1/2)" in line for line in logged)


def test_on_the_cpu_clock_contention_alone_does_not_disturb_a_run(make_workspace):
    # the cpu clock counts the run's own CPU time: others' use of the CPU no longer shortens training
    ws = make_workspace(budget=3, max_interference=0.25, clock="cpu")
    run_loop(ws, ScriptedExecutor(ws, contention=[0.9, 0.0, 0.9]), [("a gain", BETTER)])
    assert rows_of(ws) == [("baseline", "keep", "baseline")] * 2 + [("experiment", "keep", "gain")]
    assert Ledger.open(ws.ledger_path).rows[2].interference == 0.9  # still measured and recorded


def test_a_disturbed_baseline_run_is_retried_and_the_loop_goes_on(make_workspace):
    ws = make_workspace(budget=3, max_interference=0.25)
    run_loop(ws, ScriptedExecutor(ws, contention=[0.9, 0.0, 0.0]), [("a gain", BETTER)])
    assert rows_of(ws)[:3] == [("disturbed", "discard", "disturbed")] + [("baseline", "keep", "baseline")] * 2
    assert rows_of(ws)[3][0] == "experiment"


def test_a_baseline_run_past_the_hard_limit_is_retried_then_explained(make_workspace):
    ws = make_workspace(budget=3)
    run_loop(ws, ScriptedExecutor(ws, outcomes=["timeout", "ok", "ok"]), [("a gain", BETTER)])
    assert rows_of(ws)[:3] == [("disturbed", "timeout", "disturbed")] + [("baseline", "keep", "baseline")] * 2
    ws2 = make_workspace("ws2", budget=3, disturbed_retries=1)
    # each of the 2 baseline runs may be run again once: the third time past the limit stops the loop
    with pytest.raises(Exception, match=r"baseline run 0003 failed after 2 re-run\(s\) \(timeout: scripted timeout\); "
                                        r"meanwhile other processes used .* run it when the machine is quieter"):
        run_loop(ws2, ScriptedExecutor(ws2, outcomes=["timeout"] * 3), [("a gain", BETTER)])


def test_a_run_still_disturbed_after_its_retries_is_judged_and_flagged(make_workspace):
    ws = make_workspace(budget=3, disturbed_retries=1, max_interference=0.25)
    logged: list[str] = []
    run_loop(ws, ScriptedExecutor(ws, contention=[0.0, 0.0, 0.7, 0.7]), [("a gain", BETTER)], logged)
    rows = Ledger.open(ws.ledger_path).rows
    assert [(r.kind, r.status) for r in rows][2:] == [("disturbed", "discard"), ("experiment", "keep")]
    assert "disturbed, but judged" in rows[3].flags
    assert any("used as it is: no re-runs left" in line for line in logged)


def test_control_runs_of_the_best_remeasure_the_noise(make_workspace):
    ws = make_workspace(budget=3, control_every=2)
    changes = [("loss 1", {"val": [3.5]}), ("loss 2", {"val": [3.6]}), ("loss 3", {"val": [3.7]})]
    run_loop(ws, ScriptedExecutor(ws), changes)
    kinds = [k for k, _, _ in rows_of(ws)]
    assert kinds == ["baseline", "baseline", "experiment", "experiment", "control", "experiment"]
    control = Ledger.open(ws.ledger_path).rows[4]
    assert control.status == "keep" and control.commit == Ledger.open(ws.ledger_path).rows[0].commit


def test_one_wild_run_cannot_set_sigma_once_the_others_can_tell():
    # six runs of the best (baseline and controls): the others' 4 degrees of freedom tell 1.300 is wild
    assert pooled_sigma([[1.000, 1.002, 0.998, 1.001, 0.999, 1.300]], floor=0.001) == pytest.approx(0.00158, abs=1e-5)
    # the same across commits: every group's runs count towards the scale
    assert pooled_sigma([[1.0, 1.002, 0.998], [1.1, 1.101, 1.099], [1.5, 1.501, 1.8]], floor=0.001) == \
        pytest.approx(0.00145, abs=1e-5)
    assert pooled_sigma([[1.000, 1.002, 1.004]], floor=0.001) == pytest.approx(0.002, abs=1e-6)
    assert pooled_sigma([[1.0, 1.3]], floor=0.001) == pytest.approx(0.2121, abs=1e-4)  # a pair: nothing to tell


def test_two_runs_that_agree_by_luck_do_not_make_the_third_wild():
    # measured (bench/decisions.py, cpu preset, 15 s): three quiet baseline runs of 31, 36 and 36 steps.
    # With one degree of freedom left, two close runs say nothing about the noise: all three count.
    runs = [2.3417, 2.2766, 2.2786]
    assert pooled_sigma([runs], floor=0.002) == pytest.approx(statistics.stdev(runs))


def test_an_implausible_noise_estimate_says_so_with_what_to_do():
    cpu = S.from_preset("cpu")
    assert implausible(0.0021, 1.60, cpu) == ""
    message = implausible(0.269, 1.55, cpu)
    assert "noise sigma 0.2690 bpb (17.4% of val_bpb; quiet machines measure about 0.002" in message
    assert "autoresearch rebaseline" in message
    assert implausible(0.03, 1.60, cpu) != ""  # 15x the preset's quiet sigma, under 2% of val_bpb


# --- real runs under an injected load -----------------------------------------------------------


def _run_started(ws, run_id: str) -> bool:
    return (ws.runs_dir / run_id).is_dir()


def _run_ended(ws, run_id: str) -> bool:
    return (ws.runs_dir / run_id / "result.json").exists()


@pytest.mark.slow
def test_a_load_during_the_first_baseline_run_is_seen_and_that_run_is_measured_again(make_workspace):
    """The main job's situation: another program takes the cores while the first baseline run
    trains. That run is recorded `disturbed` and run again; the noise comes from quiet runs."""
    from tests.test_loop import consistent, run_cli, wait_for

    ws = make_workspace(budget=5, baseline_runs=2, max_interference=0.25)
    with LoadGenerator(cores=4) as load:
        loop = run_cli(ws, "loop", "--max-experiments", "1")
        try:
            wait_for(lambda: _run_started(ws, "0001"), timeout=120)
            load.on()
            wait_for(lambda: _run_ended(ws, "0001"), timeout=300)
            load.off()
            out, _ = loop.communicate(timeout=600)
        finally:
            if loop.poll() is None:
                loop.kill()
    assert loop.returncode == 0, out
    rows = Ledger.open(ws.ledger_path).rows
    first = rows[0]
    assert (first.run_id, first.kind, first.rule) == ("0001", "disturbed", "disturbed"), out
    assert first.interference > 0.25 and "run 0001 disturbed" in out
    baseline = [r for r in rows if r.kind == "baseline"]
    assert len(baseline) == 2 and "0001" not in {r.run_id for r in baseline}
    consistent(ws, experiments=1)


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two cores")
def test_two_workers_under_a_load_finish_their_research(make_workspace, tmp_path):
    """Two local workers, tiny preset, a load of two cores on their baseline until a run of it is set
    aside: what used to stop the loop (`the baseline run failed (timeout)`) is run again, and the
    loop goes on. The load goes off once a run is set aside (or the baseline is measured), so that
    how busy the rest of the machine is does not decide whether the retries run out."""
    from tests.test_loop import consistent, run_cli

    ws = make_workspace(budget=4, baseline_runs=2, max_interference=0.25)  # on: the tiny preset turns it off
    log_path = tmp_path / "loop.log"
    with LoadGenerator(cores=2) as load, open(log_path, "w") as log:
        load.on()
        loop = run_cli(ws, "loop", "--max-experiments", "1", "--workers", "2", stdout=log)
        try:
            deadline = time.time() + 600
            while not any(r.kind in ("disturbed", "baseline") for r in Ledger.open(ws.ledger_path).rows):
                assert loop.poll() is None, f"the loop stopped under the load:\n{log_path.read_text()}"
                assert time.time() < deadline, f"no baseline run finished in 600 s:\n{log_path.read_text()}"
                time.sleep(0.2)
            load.off()
            loop.wait(timeout=600)
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()
    out = log_path.read_text()
    assert loop.returncode == 0, out
    rows = consistent(ws, experiments=1)
    kinds = [r.kind for r in rows]
    assert kinds.count("baseline") >= 2
    assert "disturbed" in kinds, out  # two cores of load on two cores: the first baseline runs competed
    assert "disturbed" in out
