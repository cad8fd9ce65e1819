"""The reproduction audit (`autoresearch audit`, audit.py): the kept commits and the baseline run
again in rounds, as ledger rows of kind `audit` that join the noise estimate, and a verdict per
kept change; interrupted and resumed with nothing lost, refused while other work is under way.

Real git repositories, the real loop, state file, ledger and keep rule; only the measurement is
scripted (tests/scripted.py). The audit with real training is in test_loop.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from autoresearch import audit, status
from autoresearch.audit import Change, judge
from autoresearch.errors import WorkspaceError
from autoresearch.ledger import Ledger, Row
from autoresearch.loop import Loop
from autoresearch.research import Limits
from autoresearch.report.state import document
from tests.scripted import ScriptedExecutor, ScriptedProposer

REAL = ("a real gain", {"val": [2.0]})  # every run of it measures 2.0
LUCKY = ("a lucky run", {"val": [1.5, 2.0]})  # its first run was luck: again, it measures as its parent
WORSE = ("a loss", {"val": [3.5]})


@pytest.fixture
def ws(make_workspace):
    return make_workspace("ws", budget=3, control_every=0)


def opened(ws, executor, logged: list | None = None) -> Loop:
    return Loop.open(ws.root, tag="t", log=(logged.append if logged is not None else lambda _: None),
                     executor=executor)


def researched(ws, executor) -> None:
    """The baseline (2 runs at 3.0), then a real gain, a loss and a lucky run, kept, discarded, kept."""
    with opened(ws, executor) as loop:
        loop.run(ScriptedProposer([REAL, WORSE, LUCKY]), Limits(max_experiments=3))


def rows_of(ws) -> list[Row]:
    return Ledger.open(ws.ledger_path).rows


def test_the_audit_runs_the_kept_commits_in_rounds_and_says_which_gains_reproduce(ws):
    executor = ScriptedExecutor(ws)
    researched(ws, executor)
    before = rows_of(ws)
    base, real, lucky = before[0].commit, before[2].commit, before[4].commit
    assert [(r.kind, r.status) for r in before[2:]] == [("experiment", "keep"), ("experiment", "discard"),
                                                        ("experiment", "keep")]
    best, logged = ws.git.head(), []
    with opened(ws, executor, logged) as loop:
        report = loop.audit(runs=2)
    rows = rows_of(ws)[len(before):]
    assert [(r.kind, r.status, r.rule, r.commit) for r in rows] == [
        ("audit", "keep", "audit", c) for c in (base, real, lucky) * 2]  # in rounds
    assert [r.val_bpb for r in rows] == [3.0, 2.0, 2.0] * 2
    assert rows[1].description == f"audit of {real}: a real gain" and rows[0].description.endswith("the baseline")
    assert "re-measures" in rows[0].reason and rows[0].parent == ""
    assert ws.git.head() == best and ws.git.dirty_paths() == []  # the branch and the tree stay at the best
    assert [(v.change.commit, v.verdict) for v in report.verdicts] == [(real, "reproduces"),
                                                                     (lucky, "does not reproduce")]
    real_v, lucky_v = report.verdicts
    assert real_v.gain == pytest.approx(1.0) and real_v.runs == real_v.parent_runs == 2
    assert lucky_v.change.recorded_gain == pytest.approx(0.5) and lucky_v.gain == pytest.approx(0.0)
    assert "below the recorded +0.5000" in lucky_v.why
    assert any(line.startswith(f"audit: {lucky} val_bpb 2.000000 (recorded 1.500000 over 1 runs)") for line in logged)
    text = "\n".join(report.lines())
    assert "audit of 2 kept change(s) on autoresearch/t: 2 audit run(s) of each of 3 commits" in text
    assert f"baseline {base}: val_bpb recorded 3.000000 (2 runs), re-measured 3.000000 (2 runs)" in text
    assert f"{lucky} does not reproduce: gain +0.0000 is within the noise" in text
    # the audit runs join the commits' runs: the best's mean and the noise estimate
    with opened(ws, executor) as loop:
        assert loop.research.best_runs() == [1.5, 2.0, 2.0]
        assert loop.research.experiments_since_control() == 0
    doc = document(ws.root)
    assert [r["kind"] for r in doc["ledger"]][-6:] == ["audit"] * 6
    assert status.summarize(rows_of(ws)).best == pytest.approx(5.5 / 3)  # the best re-measured
    assert status.summarize(rows_of(ws)).kept == 2  # audit runs are not experiments


def test_a_disturbed_audit_run_is_run_again_and_a_failed_one_recorded(make_workspace):
    ws = make_workspace("ws", budget=3, control_every=0, max_interference=0.25)
    executor = ScriptedExecutor(ws)
    with opened(ws, executor) as loop:
        loop.run(ScriptedProposer([REAL]), Limits(max_experiments=1))
    executor.contention = [0.9]  # the first audit run: disturbed
    executor.outcomes = ["ok", "ok", "crash"]  # ...its re-run fine, the kept change's audit run crashes
    with opened(ws, executor) as loop:
        report = loop.audit()
    rows = rows_of(ws)[3:]
    assert [(r.kind, r.status, r.rule) for r in rows] == [("disturbed", "discard", "disturbed"),
                                                          ("audit", "keep", "audit"), ("audit", "crash", "crash")]
    assert [(v.verdict, v.runs, v.parent_runs) for v in report.verdicts] == [("not measured", 0, 1)]


def test_an_audit_killed_midway_resumes_where_it_stopped(ws):
    researched(ws, ScriptedExecutor(ws))
    before = len(rows_of(ws))
    pid = os.fork()
    if pid == 0:  # the child: SIGKILLed while its fourth audit run is under way
        try:
            with opened(ws, ScriptedExecutor(ws, kill_on_submit=4)) as loop:
                loop.audit(runs=2)
        finally:
            os._exit(7)
    _, code = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGKILL
    assert [r.kind for r in rows_of(ws)[before:]] == ["audit"] * 3
    logged: list[str] = []
    with opened(ws, ScriptedExecutor(ws), logged) as loop:
        report = loop.audit(runs=5)  # the stopped audit is finished, no new one queued
    audit_rows = rows_of(ws)[before:]
    assert len(audit_rows) == 6 and len({r.run_id for r in audit_rows}) == 6
    assert [r.commit for r in audit_rows[:3]] == [r.commit for r in audit_rows[3:]]
    assert "resuming the audit a stopped call left: 3 run(s) to go" in logged
    assert any("ending 1 process(es) left by interrupted run" in line for line in logged)
    assert all(v.runs == 2 for v in report.verdicts)
    assert json.loads((ws.state_dir / "flights.json").read_text()) == []


def test_the_audit_refuses_while_an_experiment_is_under_way_and_says_how_to_finish_it(ws):
    executor = ScriptedExecutor(ws)
    researched(ws, executor)
    flights = [{"phase": "queued", "parent": ws.git.head(), "kind": "experiment", "description": "half done",
                "candidate": ws.git.head(), "workers": 1}]
    (ws.state_dir / "flights.json").write_text(json.dumps(flights))
    with pytest.raises(WorkspaceError, match=r"under way or queued .*experiment 'half done'.*"
                                             r"`autoresearch loop --max-experiments 0`, then audit"):
        with opened(ws, executor) as loop:
            loop.audit()
    left = json.loads((ws.state_dir / "flights.json").read_text())
    assert [(f["kind"], f["description"]) for f in left] == [("experiment", "half done")]  # left for the loop


def test_nothing_kept_means_nothing_to_audit(ws):
    with opened(ws, ScriptedExecutor(ws)) as loop:
        loop.run(ScriptedProposer([WORSE]), Limits(max_experiments=1))
        report = loop.audit(runs=3)
    assert [r.kind for r in rows_of(ws)] == ["baseline", "baseline", "experiment"]
    assert report.lines() == ["nothing to audit: no change was kept on autoresearch/t yet"]


def test_audit_json_reports_the_recorded_audit_without_running(ws):
    executor = ScriptedExecutor(ws)
    researched(ws, executor)
    with opened(ws, executor) as loop:
        loop.audit(runs=1)
    n = len(rows_of(ws))
    done = subprocess.run([sys.executable, "-m", "autoresearch", "audit", "--runs", "0", "--json"], cwd=ws.root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema_version"] == 1 and doc["branch"] == "autoresearch/t" and doc["keep_z"] == 2.0
    # one audit run each: the lucky run (1.5 among 2.0s) is not called wild among so few runs (decide.pooled_sigma),
    # so sigma stays wide and its verdict is that more runs tell
    assert doc["counts"] == {"reproduces": 1, "unclear": 1}
    first = doc["changes"][0]
    assert (first["description"], first["verdict"], first["recorded_gain"], first["gain"]) == (
        "a real gain", "reproduces", 1.0, 1.0)
    assert [c["role"] for c in doc["commits"]] == ["baseline", "kept", "kept"]
    assert doc["commits"][0]["audit_runs"] == 1 and doc["commits"][0]["recorded_runs"] == 2
    assert len(rows_of(ws)) == n  # nothing ran
    refused = subprocess.run([sys.executable, "-m", "autoresearch", "audit", "--runs", "-1"], cwd=ws.root,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "--runs must be 0 or more" in refused.stderr


# --- the verdicts, from recorded numbers ------------------------------------------------------------


def change(recorded: float, rule: str = "gain", runs: int = 1, parent_runs: int = 3) -> Change:
    return Change("bbbbbbb", "aaaaaaa", "the change", rule, recorded, runs, parent_runs)


def audit_rows(parent: list[float], child: list[float]) -> list[Row]:
    return [Row(c, v, 1.0, "keep", "audit", kind="audit") for c, vals in (("aaaaaaa", parent), ("bbbbbbb", child))
            for v in vals]


@pytest.mark.parametrize("recorded, parent, child, verdict", [
    (0.10, [3.0, 3.0], [2.9, 2.9], "reproduces"),  # the gain again
    (0.05, [3.0, 3.0], [2.8, 2.8], "reproduces"),  # larger than recorded: not smaller
    (0.50, [3.0, 3.0], [2.9, 2.9], "smaller"),  # clear of the noise, well below the record
    (0.50, [3.0, 3.0], [3.0, 3.0], "does not reproduce"),  # gone
    (0.02, [3.0, 3.0], [3.1, 3.1], "does not reproduce"),  # worse than its parent
    (0.03, [3.0, 3.0], [2.99, 2.99], "unclear"),  # within the noise, and so was the record's margin
])
def test_the_verdict_of_a_kept_gain(recorded, parent, child, verdict):
    sigma = 0.01  # se of 2 vs 2 runs: 0.01; 2 se: 0.02
    result = judge(change(recorded), audit_rows(parent, child), sigma, keep_z=2.0)
    assert result.verdict == verdict, result.why
    assert result.se == pytest.approx(0.01)


@pytest.mark.parametrize("child, verdict", [([3.01, 3.01], "reproduces"), ([3.05, 3.05], "does not reproduce")])
def test_a_simplification_reproduces_unless_clearly_worse(child, verdict):
    result = judge(change(-0.005, rule="simplification"), audit_rows([3.0, 3.0], child), 0.01, keep_z=2.0)
    assert result.verdict == verdict, result.why


def test_kept_changes_follow_the_branch_and_count_the_runs_each_decision_had():
    rows = [Row("aaaaaaa", 3.0, 1.0, "keep", "baseline", kind="baseline")] * 3 + [
        Row("bbbbbbb", 2.9, 1.0, "keep", "b", kind="experiment", parent="aaaaaaa", gain=0.1, rule="gain"),
        Row("bbbbbbb", 2.8, 1.0, "keep", "b", kind="confirm", parent="aaaaaaa", gain=0.2, rule="gain"),
        Row("ccccccc", 2.0, 1.0, "keep", "elsewhere", kind="experiment", parent="aaaaaaa", gain=1.0, rule="gain"),
        Row("ddddddd", 2.85, 1.0, "keep", "d", kind="experiment", parent="bbbbbbb", gain=0.0, rule="simplification"),
    ]
    changes = audit.kept_changes(rows, on_branch=lambda c: c != "ccccccc")
    assert [(c.commit, c.parent, c.rule, c.runs, c.parent_runs) for c in changes] == [
        ("bbbbbbb", "aaaaaaa", "gain", 2, 3), ("ddddddd", "bbbbbbb", "simplification", 1, 2)]
    assert changes[0].recorded_gain == pytest.approx(0.15)
    assert audit.commits(changes) == ["aaaaaaa", "bbbbbbb", "ddddddd"]


def test_a_research_of_parallel_workers_is_audited_with_as_many(ws):
    with opened(ws, ScriptedExecutor(ws, workers=2)) as loop:
        loop.run(ScriptedProposer([REAL]), Limits(max_experiments=1))
    logged: list[str] = []
    with opened(ws, ScriptedExecutor(ws), logged) as loop:  # one at a time: those runs are not comparable
        assert loop.audit().verdicts == ()
    assert "audit them with `autoresearch audit --workers 2`" in " ".join(logged)
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws, workers=2)) as loop:
        report = loop.audit(runs=2)
    assert [(v.verdict, v.runs, v.parent_runs) for v in report.verdicts] == [("reproduces", 2, 2)]
    assert {r.workers for r in rows_of(ws) if r.kind == "audit"} == {2}
