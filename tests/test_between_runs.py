"""The rules hold between runs: a commit made outside the harness is judged, never adopted; a branch
moved elsewhere is refused until `rebaseline` accepts it; the ledger is checked against the run
folders and against what the loop wrote (integrity.py).

Real git repositories, the real loop and ledger; only the measurement is scripted (tests/scripted.py).
The agent flow with real training is in test_documented_flows.py, the cheats in test_integrity.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from autoresearch import integrity, ledger, processes
from autoresearch.errors import WorkspaceError
from autoresearch.integrity import BranchMovedError, LedgerChangedError
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.research import Limits
from tests.scripted import ScriptedExecutor, ScriptedProposer, marked

BETTER = {"val": [2.0]}
WORSE = {"val": [3.5]}


@pytest.fixture
def ws(make_workspace):
    ws = make_workspace("ws", budget=3)
    with opened(ws) as loop:
        loop.run(None)  # the baseline: 2 runs at 3.0
    return ws


def opened(ws, edited_train: bool = False, accept: bool = False, logged: list | None = None) -> Loop:
    return Loop.open(ws.root, tag="t", log=(logged.append if logged is not None else lambda _: None),
                     executor=ScriptedExecutor(ws), edited_train=edited_train, accept=accept)


def run(ws, message: str = "", logged: list | None = None):
    """`autoresearch run -m message`, as the CLI does it."""
    with opened(ws, edited_train=True, logged=logged) as loop:
        return loop.run_edit(message)


def rows_of(ws):
    return Ledger.open(ws.ledger_path).rows


def agent_commits(ws, script: dict, message: str, **other_files: str) -> str:
    ws.train_py.write_text(marked(ws.train_py.read_text(), **script))
    for name, text in other_files.items():
        (ws.root / name.replace("_", ".")).write_text(text)
    ws.git.commit_all(message)
    return ws.git.head()


def test_a_worse_change_the_agent_committed_itself_is_judged_and_discarded(ws):
    best = ws.git.head()
    outside = agent_commits(ws, WORSE, "agent commits its own (worse) change")
    logged: list[str] = []
    rows = run(ws, logged=logged)
    assert [(r.kind, r.status, r.rule) for r in rows] == [("experiment", "discard", "worse")]
    assert rows[0].parent == best[:7] and rows[0].description == "agent commits its own (worse) change"
    assert "committed outside the harness" in rows[0].flags and outside[:7] in rows[0].flags
    assert ws.git.head() == best and ws.git.dirty_paths() == []  # the best stays, the tree is clean
    assert ws.git.rev(f"refs/autoresearch/outside/{outside}") == outside  # the commit is not lost
    assert any("`autoresearch run` commits for you" in line for line in logged)
    assert [r.kind for r in rows_of(ws)] == ["baseline", "baseline", "experiment"]  # no new baseline


def test_a_better_change_the_agent_committed_itself_is_judged_and_kept_marked_outside(ws):
    best = ws.git.head()
    agent_commits(ws, {"val": [2.5]}, "first half")
    agent_commits(ws, BETTER, "second half")
    ws.train_py.write_text(ws.train_py.read_text() + "# and an uncommitted touch\n")
    rows = run(ws, "my two commits")
    assert [(r.status, r.description, r.proposer) for r in rows] == [("keep", "my two commits", "manual")]
    assert rows[0].flags.startswith("committed outside the harness: ") and "first half; " in rows[0].flags
    head = ws.git.head()
    assert ws.git.rev("HEAD~1") == best  # one candidate commit on the best: the combined change
    assert "uncommitted touch" in ws.git.show(head, "train.py").decode()
    assert integrity.load(ws, ws.git.branch()).commit == head  # the new best is recorded


def test_prepare_py_committed_with_train_py_is_refused_and_restored(ws):
    best = ws.git.head()
    prepare = (ws.root / "prepare.py").read_text()
    agent_commits(ws, BETTER, "a longer budget", prepare_py=prepare + "\nTIME_BUDGET = 1e9\n")
    rows = run(ws)
    assert [(r.status, r.rule) for r in rows] == [("invalid", "guard")]
    assert "prepare.py" in rows[0].reason and "committed outside the harness" in rows[0].flags
    assert ws.git.head() == best and (ws.root / "prepare.py").read_text() == prepare
    assert ws.git.dirty_paths() == [] and "scripted" not in ws.train_py.read_text()
    stashed = ws.git.run("stash", "show", "--name-only", "stash@{0}").split()
    assert sorted(stashed) == ["prepare.py", "train.py"]  # set aside, nothing lost


def test_the_loop_judges_outside_commits_first_as_its_own_proposer(ws):
    best = ws.git.head()
    agent_commits(ws, WORSE, "someone's commit")
    with opened(ws) as loop:
        loop.run(ScriptedProposer([("clear gain", BETTER)]), Limits(max_experiments=2))
    exp = [r for r in rows_of(ws) if r.kind == "experiment"]
    assert [(r.description, r.proposer, r.status) for r in exp] == [
        ("someone's commit", "outside", "discard"), ("clear gain", "scripted", "keep")]
    assert ws.git.rev("HEAD~1") == best


@pytest.mark.parametrize("how", ["reset", "amend"])
def test_a_branch_moved_elsewhere_is_refused_until_rebaseline_accepts_it(ws, how):
    first = ws.git.head()
    ws.train_py.write_text(marked(ws.train_py.read_text(), **BETTER))
    assert run(ws, "a gain")[0].status == "keep"
    best = ws.git.head()
    if how == "reset":
        ws.git.run("reset", "--hard", first)
    else:
        ws.train_py.write_text(marked(ws.train_py.read_text(), val=[1.0]))
        ws.git.run("commit", "-qa", "--amend", "-m", "a gain, amended")
    moved = ws.git.head()
    ws.train_py.write_text(marked(ws.train_py.read_text(), val=[1.5]))
    with pytest.raises(BranchMovedError) as refused:
        run(ws, "next")
    message = str(refused.value)
    assert moved[:7] in message and best[:7] in message and "`autoresearch rebaseline`" in message
    assert ws.git.head() == moved and ws.git.dirty_paths() == ["train.py"]  # nothing touched
    with pytest.raises(BranchMovedError):
        with opened(ws):
            pass
    ws.git.restore_paths(["train.py"])
    logged: list[str] = []
    with opened(ws, accept=True, logged=logged) as loop:
        rows = loop.rebaseline("accept on purpose")
    assert [(r.kind, r.status, r.rule, r.commit) for r in rows] == [("rebaseline", "keep", "rebaseline", moved[:7])] * 2
    assert any(f"accepting {moved[:7]}" in line for line in logged)
    ws.train_py.write_text(marked(ws.train_py.read_text(), val=[0.5]))
    rows = run(ws, "after the rebaseline")  # judged against the rebaselined best, no new baseline
    assert rows[0].status == "keep" and rows[0].parent == moved[:7]
    assert [r.kind for r in rows_of(ws)].count("baseline") == 2


def test_rebaseline_measures_the_best_again_on_demand(ws):
    with opened(ws) as loop:
        rows = loop.rebaseline()
    assert [r.kind for r in rows] == ["rebaseline"] * 2 and len(rows_of(ws)) == 4
    assert "rebaseline" in rows[0].reason


def test_a_loop_killed_between_a_keep_and_its_record_is_not_an_outside_commit(ws):
    before = json.loads((ws.state_dir / "best.json").read_text())
    ws.train_py.write_text(marked(ws.train_py.read_text(), **BETTER))
    assert run(ws, "a gain")[0].status == "keep"
    after = json.loads((ws.state_dir / "best.json").read_text())
    branch = ws.git.branch()
    after[branch]["commit"] = before[branch]["commit"]  # as if killed right after moving the branch
    (ws.state_dir / "best.json").write_text(json.dumps(after))
    with opened(ws) as loop:
        assert loop.best == ws.git.head()


# --- the ledger between runs --------------------------------------------------------------------


def test_an_edited_val_bpb_is_reported_and_restored_from_the_run_folder(ws):
    lines = ws.ledger_path.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[1] = "1.000000"
    ws.ledger_path.write_text("\n".join([lines[0], "\t".join(cells), *lines[2:]]) + "\n")
    logged: list[str] = []
    with opened(ws, logged=logged):
        pass
    assert ws.ledger_path.read_text().splitlines() == lines
    said = [line for line in logged if "put back the row of run 0001" in line]
    assert said and "val_bpb '1.000000' (row.json: '3.000000')" in said[0]
    assert "1.000000" in ledger.damaged_path(ws.ledger_path).read_text()  # the edited line is kept aside


def test_a_deleted_row_is_restored_and_one_whose_run_folder_is_gone_too_is_refused(ws):
    lines = ws.ledger_path.read_text().splitlines()
    ws.ledger_path.write_text("\n".join(lines[:2]) + "\n")  # the second baseline row deleted
    with opened(ws):
        pass
    assert ws.ledger_path.read_text().splitlines() == lines
    ws.ledger_path.write_text("\n".join(lines[:2]) + "\n")
    shutil.rmtree(ws.runs_dir / "0002")  # and its run folder: the truth is gone
    with pytest.raises(LedgerChangedError) as refused:
        with opened(ws):
            pass
    assert "row(s) 2 of the 2" in str(refused.value) and "autoresearch rebaseline" in str(refused.value)
    with opened(ws, accept=True) as loop:
        loop.rebaseline()
    with opened(ws):  # accepted
        pass


def test_an_invalid_row_deleted_is_refused(ws):
    (ws.root / "helper.py").write_text("x = 1\n")
    ws.train_py.write_text(marked(ws.train_py.read_text(), **BETTER))
    assert run(ws, "touches helper")[0].status == "invalid"  # a row with no run folder
    lines = ws.ledger_path.read_text().splitlines()
    ws.ledger_path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(WorkspaceError, match="its last row was: .* invalid touches helper"):
        with opened(ws):
            pass


# --- one command at a time ----------------------------------------------------------------------


def test_a_second_command_refuses_while_one_holds_the_workspace_and_touches_nothing(ws):
    """A live command holds the workspace (holder.json); another one refuses before it resumes anything,
    so the first one's run under way keeps training. Once the holder is gone (killed), it holds nothing."""
    run_dir = ws.runs_dir / "0003"
    run_dir.mkdir(parents=True)
    env = {**os.environ, processes.ENV_RUN_ID: processes.run_key(run_dir)}
    training = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                                start_new_session=True)  # the holder's run under way
    flights = [{"phase": "running", "parent": ws.git.head(), "kind": "control", "description": "control",
                "runs": ["0003"], "workers": 1}]
    (ws.state_dir / "flights.json").write_text(json.dumps(flights))
    hold = ("import sys, time; from pathlib import Path; from autoresearch import holder, workspace; "
            "holder.claim(workspace.Workspace(Path(sys.argv[1]))); print('held', flush=True); time.sleep(600)")
    other = subprocess.Popen([sys.executable, "-c", hold, str(ws.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceError, match=rf"\(pid {other.pid}, started at .*\) is running in this workspace"):
            opened(ws)
        assert training.poll() is None and run_dir.is_dir()  # its run is untouched
        assert json.loads((ws.state_dir / "flights.json").read_text()) == flights
    finally:
        other.kill()
        other.wait()
    try:
        with opened(ws) as loop:  # the holder is gone: the interrupted run is ended and run again
            loop.run(None)
        assert training.wait(timeout=30) is not None
        assert [r.kind for r in rows_of(ws)][-1] == "control"
    finally:
        if training.poll() is None:
            training.kill()
    assert not (ws.state_dir / "holder.json").exists()  # released on close
