"""The loop without training: every keep-rule path through it, and a SIGKILL at every phase of an
experiment with one worker and with two, each time resumed with nothing lost or logged twice.

Real git repositories, the real loop, state file, ledger and keep rule; only the measurement is
scripted (tests/scripted.py). The end-to-end tier (test_loop.py, test_scale.py) trains for real.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from autoresearch import ledger
from autoresearch.ledger import Ledger
from autoresearch.loop import CANDIDATES, Loop
from autoresearch.processes import ENV_RUN_ID
from autoresearch.research import Limits, Research
from autoresearch.rundir import RunResult
from tests.scripted import ScriptedExecutor, ScriptedProposer, die, marked

BETTER = {"val": [2.0]}
WORSE = {"val": [3.5]}


@pytest.fixture
def workspace(make_workspace):
    def make(name: str = "ws", **overrides):
        ws = make_workspace(name, budget=3, **overrides)
        (ws.state_dir).mkdir(exist_ok=True)
        return ws
    return make


def open_loop(ws, workers: int = 1, executor=None, logged: list | None = None) -> Loop:
    sink = logged.append if logged is not None else (lambda _: None)
    return Loop.open(ws.root, tag="t", log=sink, executor=executor or ScriptedExecutor(ws, workers))


def rows_of(ws):
    return Ledger.open(ws.ledger_path).rows


def experiments(ws) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in rows_of(ws):
        if row.kind != "baseline":
            out.setdefault(row.description.removesuffix(" (confirmation run)"), []).append(row)
    return out


def consistent(ws) -> None:
    """Nothing under way, nothing logged twice, the branch at the last kept commit, the tree clean,
    every logged run with its record, no run process left."""
    rows = rows_of(ws)
    ids = [r.run_id for r in rows if r.run_id]
    assert len(ids) == len(set(ids)), "a run was logged twice"
    assert json.loads((ws.state_dir / "flights.json").read_text()) == []
    kept = [r for r in rows if r.status == "keep"]
    assert ws.git.short() == kept[-1].commit
    assert ws.git.dirty_paths() == []
    for run_id in ids:
        assert RunResult.load(ws.runs_dir / run_id) is not None, run_id
    for row in rows:  # each row is also in its run folder, the record a lost row is rebuilt from
        if row.run_id:
            assert ledger.line(ledger.load_row(ws.runs_dir / row.run_id)) == ledger.line(row), row.run_id
    on_disk = {p.name for p in ws.runs_dir.iterdir() if p.name.isdigit()}
    assert on_disk <= set(ids), f"run folders nobody recorded: {on_disk - set(ids)}"
    for proc in psutil.process_iter(["pid"]):
        try:
            key = proc.environ().get(ENV_RUN_ID, "")
        except (psutil.Error, OSError):
            continue
        assert not key.startswith(str(ws.runs_dir.resolve())), f"process {proc.pid} of a run is still running"


def test_every_keep_rule_path_through_the_loop(workspace):
    ws = workspace(control_every=0)  # control runs: tests/test_noise.py
    proposer = ScriptedProposer([
        ("clear gain", BETTER),
        ("clear loss", WORSE),
        ("the proposer fails", None),
        ("borderline, confirmed", {"val": [1.99, 1.98]}),  # gain 0.01: between 1 and 2 se, then 0.015 over 2 runs
        ("borderline, not confirmed", {"val": [1.975, 1.99]}),
        ("noise", {"val": [1.984]}),
        ("crash", {"outcome": "crash"}),
        ("timeout", {"outcome": "timeout"}),
        ("invalid run", {"outcome": "invalid"}),
        ("trained on validation", {"val": [1.5], "heldout_ratio": 1.5}),
        ("touches another file", BETTER),
    ], other_file=("touches another file",))
    logged: list[str] = []
    with open_loop(ws, logged=logged) as loop:
        assert loop.run(proposer, Limits(max_experiments=10)) == 10  # the failed proposal is not an experiment
    by = experiments(ws)
    outcome = {d: [(r.kind, r.status, r.rule) for r in rows] for d, rows in by.items()}
    assert outcome == {
        "clear gain": [("experiment", "keep", "gain")],
        "clear loss": [("experiment", "discard", "worse")],
        "borderline, confirmed": [("experiment", "keep", "gain"), ("confirm", "keep", "gain")],
        "borderline, not confirmed": [("experiment", "discard", "noise"), ("confirm", "discard", "noise")],
        "noise": [("experiment", "discard", "noise")],
        "crash": [("experiment", "crash", "crash")],
        "timeout": [("experiment", "timeout", "timeout")],
        "invalid run": [("experiment", "invalid", "invalid")],
        "trained on validation": [("experiment", "invalid", "held-out")],
        "touches another file": [("experiment", "invalid", "guard")],
        "the proposer fails": [("experiment", "invalid", "proposal-failed")],
    }
    assert [(r.kind, r.status) for r in rows_of(ws)[:2]] == [("baseline", "keep")] * 2
    consistent(ws)
    assert not (ws.root / "helper.py").exists()
    # the branch holds exactly the two kept changes; every candidate stays reachable under its ref
    log = ws.git.run("log", "--format=%s", "HEAD").splitlines()
    assert log[:2] == ["borderline, confirmed", "clear gain"]
    assert len(ws.git.run("for-each-ref", "--format=%(refname)", CANDIDATES).splitlines()) == 9
    # the proposer saw every decided outcome; the kept commits keep their models, the others do not
    assert [d for d, _ in proposer.observed] == [d for d in by if d != "the proposer fails"]
    assert any("borderline" in line and "confirming" in line for line in logged)


def test_the_stale_win_of_a_parallel_loop_is_combined_onto_the_new_best(workspace):
    ws = workspace()
    proposer = ScriptedProposer([("first gain", {"val": [2.0], "at": "top"}), ("second gain", {"val": [1.9]})])
    with open_loop(ws, workers=2) as loop:
        loop.run(proposer, Limits(max_experiments=2))
    by = experiments(ws)
    assert by["first gain"][0].status == "keep"
    assert by["second gain"][0].rule == "stale" and "best moved" in by["second gain"][0].reason
    assert [r.status for r in by["combine: second gain"]] == ["keep"]
    assert {r.workers for r in rows_of(ws)} == {2}
    consistent(ws)


def test_run_takes_the_edit_in_the_working_tree_as_a_plain_write(workspace):
    """program.md's flow: edit train.py (no git add), then `autoresearch run`."""
    ws = workspace()
    source = ws.train_py.read_text()
    ws.train_py.write_text(marked(source, **BETTER))  # a plain write: ' M train.py' in git status
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws), edited_train=True) as loop:
        rows = loop.run_edit("my change")
    assert [(r.kind, r.status) for r in rows] == [("experiment", "keep")]
    assert [r.kind for r in rows_of(ws)] == ["baseline", "baseline", "experiment"]  # the baseline first, on the old best
    assert ws.git.run("log", "-1", "--format=%s") == "my change" and "scripted" in ws.train_py.read_text()
    ws.train_py.write_text(marked(ws.train_py.read_text(), **WORSE))
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws), edited_train=True) as loop:
        rows = loop.run_edit("a worse change")
    assert rows[0].status == "discard" and ws.git.run("log", "-1", "--format=%s") == "my change"
    consistent(ws)
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws), edited_train=True) as loop:
        assert loop.run_edit("nothing") is None


def test_run_with_an_edit_of_another_file_is_invalid_and_sets_the_edit_aside(workspace):
    """program.md: only train.py may change; any other change makes the run invalid and is reverted.
    `run` keeps the whole edit as a git stash, so the agent loses nothing."""
    ws = workspace()
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws)) as loop:
        loop.run(None)  # the baseline
    prepare = (ws.root / "prepare.py").read_text()
    (ws.root / "prepare.py").write_text(prepare + "\nTIME_BUDGET = 1e9\n")
    ws.train_py.write_text(marked(ws.train_py.read_text(), **BETTER))
    (ws.root / "helper.py").write_text("X = 1\n")
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws), edited_train=True) as loop:
        rows = loop.run_edit("a longer budget")
    assert [(r.status, r.rule, r.description) for r in rows] == [("invalid", "guard", "a longer budget")]
    assert rows[0].reason == "changed files other than train.py: helper.py, prepare.py (set aside as `git stash` stash@{0})"
    assert (rows_of(ws)[-1].status, rows_of(ws)[-1].reason) == (rows[0].status, rows[0].reason)
    assert (ws.root / "prepare.py").read_text() == prepare and not (ws.root / "helper.py").exists()
    assert ws.git.dirty_paths() == [] and "scripted" not in ws.train_py.read_text()
    stashed = ws.git.run("stash", "show", "--include-untracked", "--name-only", "stash@{0}").split()
    assert sorted(stashed) == ["helper.py", "prepare.py", "train.py"]  # nothing of the edit is lost


# --- a SIGKILL at every phase -------------------------------------------------------------------

PHASES = ("proposed", "committed", "running", "finished", "decided", "recorded")
CHANGES = [("a loss", WORSE), ("the gain", BETTER), ("another loss", {"val": [3.6]})]


def run_killed(ws, workers: int, phase: str) -> None:
    """In a forked child: the loop, killed with SIGKILL at `phase` of the experiment 'the gain'."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            _killed_child(ws, workers, phase)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(7)  # not killed: the test fails below
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"the loop was not killed at {phase}"


def _killed_child(ws, workers: int, phase: str) -> None:
    def is_target(pending) -> bool:
        return pending.description == "the gain"

    proposer = ScriptedProposer(list(CHANGES), kill_after=2 if phase == "proposed" else None)
    executor = ScriptedExecutor(ws, workers)
    if phase == "committed":
        original_capture = Loop._capture

        def capture(self, proposal, name):
            out = original_capture(self, proposal, name)
            if proposal.description == "the gain":
                die()
            return out
        Loop._capture = capture
    if phase == "running":
        original_launch = Loop._launch

        def launch(self, pending):
            if is_target(pending):
                executor.kill_on_submit = executor.submitted + 1
            original_launch(self, pending)
        Loop._launch = launch
    if phase == "finished":
        original_attach = Loop._attach

        def attach(self, pending, run_dir):
            original_attach(self, pending, run_dir)
            if is_target(pending):
                die()
        Loop._attach = attach
    if phase in ("decided", "recorded"):
        original_record = Research.record

        def record(self, rows):
            target = any(r.description == "the gain" for r in rows)
            if target and phase == "decided":
                die()
            original_record(self, rows)
            if target:
                die()
        Research.record = record
    with open_loop(ws, workers, executor) as loop:
        loop.run(proposer, Limits(max_experiments=len(CHANGES)))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("phase", PHASES)
def test_a_loop_killed_at_any_phase_resumes_with_nothing_lost(workspace, workers, phase):
    ws = workspace()
    run_killed(ws, workers, phase)
    time.sleep(0.05)
    logged: list[str] = []
    with open_loop(ws, workers, logged=logged) as loop:  # resume, then finish the changes not yet proposed
        remaining = [c for c in CHANGES if c[0] not in experiments(ws)
                     and not any(f"'{c[0]}'" in line for line in logged)]
        if phase == "proposed":
            remaining = CHANGES[1:]  # the killed proposal was dropped: it is proposed again
        loop.run(ScriptedProposer(remaining), Limits(max_experiments=len(remaining)))
    by = experiments(ws)
    gain = by["the gain"]
    assert [(r.kind, r.status) for r in gain] == [("experiment", "keep")], (phase, gain)
    assert ws.git.short() == gain[0].commit
    assert set(by) == {d for d, _ in CHANGES} or set(by) >= {"the gain"}
    assert len(by["the gain"]) == 1
    # the first best was measured twice; a restart after a keep tops the new best up to baseline_runs
    baseline = [r.commit for r in rows_of(ws) if r.kind == "baseline"]
    assert baseline.count(baseline[0]) == 2 and set(baseline) <= {baseline[0], gain[0].commit}
    if phase == "running":
        assert any("ending 1 process(es) left by interrupted run" in line for line in logged), logged
    if phase == "proposed":
        assert "recovering: dropping an uncommitted proposal" in logged
    consistent(ws)


def test_an_older_single_loop_state_is_migrated_once(workspace):
    """state.json of an older version, with its candidate committed onto the branch and one
    finished run: migrated to flights.json, the commit moved beside the branch, decided once."""
    ws = workspace()
    with open_loop(ws) as loop:
        loop.run(None)  # the baseline
    parent = ws.git.head()
    ws.train_py.write_text(marked(ws.train_py.read_text(), **BETTER))
    candidate = ws.git.commit_all("an old loop's candidate", paths=["train.py"])
    (ws.runs_dir / "0003").mkdir(parents=True)
    RunResult(run_id="0003", commit=candidate, outcome="ok", val_bpb=2.0, heldout_bpb=2.1,
              summary={"peak_vram_mb": 100.0}, started="2026-11-30T00:00:00+00:00",
              ended="2026-11-30T00:00:05+00:00").save(ws.runs_dir / "0003")
    (ws.state_dir / "state.json").write_text(json.dumps({
        "phase": "running", "parent": parent, "proposer": "search", "kind": "experiment",
        "description": "an old loop's candidate", "hypothesis": "", "params": {}, "candidate": candidate,
        "runs": ["0003"], "tokens": 0, "cost_usd": 0.0}))
    logged: list[str] = []
    with open_loop(ws, logged=logged) as loop:
        assert ws.git.head() == parent  # the candidate is beside the branch until decided
        assert not (ws.state_dir / "state.json").exists()
        loop.run(None)
    assert any("migrating state.json" in line for line in logged)
    rows = experiments(ws)["an old loop's candidate"]
    assert [(r.run_id, r.status) for r in rows] == [("0003", "keep")]  # its finished run was not run again
    assert ws.git.head() == candidate
    consistent(ws)


def test_a_different_number_of_workers_is_refused_on_resume(workspace):
    ws = workspace()
    run_killed(ws, 2, "running")
    with pytest.raises(Exception, match="with 2 worker.*--workers 2"):
        open_loop(ws, 1)
    with open_loop(ws, 2) as loop:  # resumed as it says
        loop.run(ScriptedProposer([("another loss", {"val": [3.6]})]), Limits(max_experiments=1))
    consistent(ws)


def test_a_resumed_experiment_counts_as_one_of_max_experiments(workspace):
    ws = workspace()
    run_killed(ws, 1, "running")  # 'a loss' decided, 'the gain' under way when killed
    proposer = ScriptedProposer([("another loss", {"val": [3.6]})])
    with open_loop(ws) as loop:
        assert loop.run(proposer, Limits(max_experiments=1)) == 1
        line = loop.closing_line()
    assert proposer.proposed == 0  # nothing new was asked for
    assert line.startswith("1 experiment(s) decided (1 resumed): 1 kept, 0 not kept; best val_bpb 2.0")
    assert set(experiments(ws)) == {"a loss", "the gain"}
    consistent(ws)


def test_agent_failures_within_a_second_keep_distinct_folders_and_rows(workspace, tmp_path):
    import shlex
    import sys

    from autoresearch.errors import ProposerError
    from autoresearch.proposers.cmd import CmdProposer
    from autoresearch.proposers.config import ProposerConfig
    from autoresearch.research import MAX_PROPOSER_FAILURES

    ws = workspace()
    agent = tmp_path / "agent.py"
    agent.write_text("import sys\nprint('error: unknown flag')\nprint(\"For more information, try '--help'.\")\n"
                     "sys.exit(2)\n")
    config = ProposerConfig(name="cmd", command=f"{shlex.quote(sys.executable)} {shlex.quote(str(agent))}")
    with open_loop(ws) as loop, pytest.raises(ProposerError, match="exited with code 2"):
        loop.run(CmdProposer(config, log=lambda _: None), Limits(max_experiments=3))
    failed = [r for r in rows_of(ws) if r.rule == "proposal-failed"]
    assert len(failed) == MAX_PROPOSER_FAILURES
    assert {r.description for r in failed} == {"agent proposal (custom command)"}
    assert all("exited with code 2" in r.reason and "For more information, try '--help'." in r.reason for r in failed)
    folders = [r.flags.removeprefix("files in ") for r in failed]
    assert len(set(folders)) == len(folders) == len(list((ws.runs_dir / "failed").iterdir()))
    for folder in folders:
        assert "For more information" in (ws.root / folder / "agent.log").read_text()


def test_a_failed_proposal_never_takes_or_deletes_an_existing_folder(workspace):
    from autoresearch.proposers.base import begin_proposal, keep_failed_proposal

    ws = workspace()
    kept = []
    for i in range(3):
        (begin_proposal(ws) / "agent.log").write_text(f"attempt {i}\n")
        kept.append(keep_failed_proposal(ws, "20261202T120000Z"))
    assert [p.name for p in kept] == ["20261202T120000Z", "20261202T120000Z-2", "20261202T120000Z-3"]
    assert [(p / "agent.log").read_text() for p in kept] == [f"attempt {i}\n" for i in range(3)]
