"""Containment (containment.py) both ways: the runner's allowance and the cmd proposer's.

An untrusted process (a real subprocess) changes what it should not; `contain` undoes it, keeping
only what the caller allows. No training and no prepared data: a bare workspace is enough.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from autoresearch import containment, guard, settings, workspace
from autoresearch.ledger import Ledger, Row
from autoresearch.proposers.cmd import ALLOWED, DESCRIPTION_FILE
from autoresearch.rundir import RunResult
from autoresearch.runner import record_undone, run_allowance

UNTRUSTED = textwrap.dedent('''\
    import pathlib, subprocess
    root = pathlib.Path.cwd()
    def git(*args):
        subprocess.run(["git", "-c", "user.name=x", "-c", "user.email=x@y", *args], cwd=root, check=True,
                       capture_output=True)
    git("commit", "--allow-empty", "-qm", "forged")       # moves HEAD
    git("tag", "forged")                                   # adds a ref
    with open(root / "prepare.py", "a") as f:
        f.write("EVAL_TOKENS = 64\\n")
    with open(root / "results.tsv", "a") as f:
        f.write("deadbee\\t0.100000\\t0.1\\tkeep\\tforged\\n")
    train = root / "train.py"
    train.write_text(train.read_text() + "# tuned\\n")
    (root / "stray.txt").write_text("left behind\\n")
    (root / "scratch" / "deep").mkdir(parents=True)
    (root / "scratch" / "deep" / "x.txt").write_text("x\\n")
    (root / "empty" / "dirs").mkdir(parents=True)
    (root / "runs" / "0001" / "evil.txt").write_text("planted in an ignored folder\\n")
    (root / "runs" / "0001" / "train.log").unlink()       # an earlier run's log: cannot come back
    (root / "runs" / "0099" / "model.pt").write_text("the run's own export\\n")
    (root / "proposal.md").write_text("Description: tuned\\n")
    (root / "notes.md").write_text("my notes\\n")          # the proposer's notes: not watched
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "prepare.cpython-3.pyc").write_bytes(b"cache")  # a cache: not watched
''')


@pytest.fixture
def ws(tmp_path):
    ws = workspace.init(tmp_path / "ws", settings.from_preset("tiny", dataset="pystdlib"))
    Ledger.open(ws.ledger_path).append(Row(commit=ws.git.short(), val_bpb=2.5, memory_gb=0.1, status="keep",
                                           description="baseline"))
    (ws.runs_dir / "0001").mkdir(parents=True)
    (ws.runs_dir / "0001" / "train.log").write_text("an earlier run\n")
    (ws.runs_dir / "0099").mkdir()  # the run under way's folder
    return ws


def take(ws) -> containment.Before:
    # without the harness code's bytes: the package may be edited while the tests run, and putting
    # it back is guard.py's part, tested with the runner (test_integrity.py)
    return containment.take(ws, package={})


def run_untrusted(ws, script: str = UNTRUSTED) -> None:
    subprocess.run([sys.executable, "-c", script], cwd=ws.root, check=True)


def state(ws) -> dict:
    return {"head": ws.git.head(), "branch": ws.git.branch(), "refs": ws.git.refs(),
            "files": {name: (ws.root / name).read_bytes() for name in guard.GUARDED_FILES}}


@pytest.mark.parametrize("caller", ["runner", "cmd"])
def test_contain_undoes_all_but_what_the_caller_allows(ws, caller):
    allow = run_allowance(ws, ws.runs_dir / "0099") if caller == "runner" else ALLOWED
    train_before = ws.train_py.read_bytes()
    expected = state(ws)
    before = take(ws)
    run_untrusted(ws)
    undone = containment.contain(ws, before, allow=allow)

    assert state(ws) == expected  # fixed files, ledger, HEAD, branch, refs (the tag is gone)
    assert guard.changes(before.guarded, ws) == []
    for gone in ("stray.txt", "scratch", "empty", "runs/0001/evil.txt"):
        assert not (ws.root / gone).exists(), gone
    assert (ws.root / "notes.md").read_text() == "my notes\n"  # not watched: left alone
    assert (ws.root / "__pycache__" / "prepare.cpython-3.pyc").exists()
    assert not (ws.root / "runs" / "0001" / "train.log").exists()  # lost, and said so
    assert undone.guarded and undone.lost == ("runs/0001/train.log",)
    assert any("prepare.py was modified" in g for g in undone.guarded)
    assert any("results.tsv was modified" in g for g in undone.guarded)
    assert any("git HEAD moved" in g for g in undone.guarded)
    created = {"stray.txt", "scratch/deep/x.txt", "runs/0001/evil.txt"}

    if caller == "runner":
        assert allow == ("runs/0099/",)
        assert ws.train_py.read_bytes() == train_before  # reverted: a run may not change itself
        assert not (ws.root / DESCRIPTION_FILE).exists()
        assert (ws.runs_dir / "0099" / "model.pt").exists()  # its own run folder
        assert undone.modified == ("train.py",)
        assert set(undone.created) == created | {DESCRIPTION_FILE}
        assert ws.git.dirty_paths() == []
        result = RunResult(run_id="0099", commit=ws.git.short(), outcome="ok", val_bpb=1.0)
        record_undone(result, undone)
        assert result.outcome == "invalid" and result.val_bpb is None
        assert "prepare.py was modified" in result.error and result.error.endswith("(restored)")
        assert "removed 4 untracked file(s) the run left in the workspace" in result.flags
        assert "train.py changed itself during the run (reverted)" in result.flags
        assert "runs/0001/train.log was deleted (untracked: it cannot be restored)" in result.flags
    else:
        assert ws.train_py.read_bytes() == train_before + b"# tuned\n"  # the proposal is kept
        assert (ws.root / DESCRIPTION_FILE).read_text() == "Description: tuned\n"
        assert not (ws.runs_dir / "0099" / "model.pt").exists()
        assert undone.modified == ()
        assert set(undone.created) == created | {"runs/0099/model.pt"}
        assert ws.git.changed_since("HEAD") == sorted(["train.py", DESCRIPTION_FILE])
        phrases = " | ".join(undone.phrases())
        for what in ("prepare.py was modified", "results.tsv was modified", "git HEAD moved",
                     "stray.txt was created (deleted)", "scratch/deep/x.txt was created (deleted)",
                     "runs/0001/evil.txt was created (deleted)",
                     "runs/0001/train.log was deleted (untracked: it cannot be restored)"):
            assert what in phrases, phrases


def test_tracked_files_are_restored_without_a_move_of_head(ws):
    """Without a guarded change (no reset of HEAD), other tracked files are put back one by one: an
    edit, a deletion, a file added to the index; names are taken literally."""
    (ws.root / "helper.py").write_text("A = 1\n")
    (ws.root / "odd [*].txt").write_text("odd\n")
    ws.git.commit_all("a helper", paths=["helper.py", "odd [*].txt"])
    expected = {p: (ws.root / p).read_bytes() for p in ("helper.py", "odd [*].txt")}
    before = take(ws)
    run_untrusted(ws, textwrap.dedent('''\
        import pathlib, subprocess
        pathlib.Path("helper.py").write_text("A = 2\\n")
        pathlib.Path("odd [*].txt").unlink()
        pathlib.Path("added.py").write_text("B = 1\\n")
        subprocess.run(["git", "add", "added.py"], check=True)
        pathlib.Path("train.py").write_text(pathlib.Path("train.py").read_text() + "# tuned\\n")
    '''))
    undone = containment.contain(ws, before, allow=ALLOWED)
    assert {p: (ws.root / p).read_bytes() for p in expected} == expected
    assert not (ws.root / "added.py").exists() and ws.git.changed_since("HEAD") == ["train.py"]
    assert undone.guarded == () and set(undone.modified) == {"helper.py", "odd [*].txt"}
    assert undone.created == ("added.py",)
    undone = containment.contain(ws, before, allow=())  # the runner's way: train.py too
    assert undone.modified == ("train.py",) and ws.git.dirty_paths() == []


def test_a_process_the_harness_started_itself_is_not_taken_for_a_runs_orphan(tmp_path):
    """A tracker's helper (wandb-core) is a child of the loop's process without a run's key, as is an
    orphan of a run re-parented to it: the harness's mark tells them apart."""
    from autoresearch import processes

    processes.mark_harness()
    own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits the mark
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={k: v for k, v in os.environ.items() if k != processes.ENV_HARNESS})
    try:
        found = {p.pid for p in processes.run_processes(processes.run_key(tmp_path / "0001"), None, set())}
        assert stray.pid in found and own.pid not in found
    finally:
        for proc in (own, stray):
            proc.kill()
            proc.wait()
