"""The research loop end to end, at tiny size, in real git repositories with real training runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pandas as pd
import psutil
import pytest

from autoresearch import hparams
from autoresearch.cli import main
from autoresearch.errors import ProposerError, SettingsError, WorkspaceError
from autoresearch.ledger import REFERENCE_COLUMNS, Ledger
from autoresearch.loop import Loop
from autoresearch.processes import run_key
from autoresearch.proposers.base import Proposal
from autoresearch.research import Limits
from autoresearch.rundir import RunResult

pytestmark = pytest.mark.slow
SLOW_LRS = {"EMBEDDING_LR": 0.006, "UNEMBEDDING_LR": 0.00004, "MATRIX_LR": 0.0004}  # 100x too small
GOOD_LRS = {"EMBEDDING_LR": 0.6, "UNEMBEDDING_LR": 0.004, "MATRIX_LR": 0.04}


class Scripted:
    """A proposer that applies a fixed list of edits, one per proposal."""

    name = "scripted"

    def __init__(self, edits: list[tuple[str, Callable]]) -> None:
        self.edits = list(edits)
        self.seen: list[list] = []

    def propose(self, ctx) -> Proposal:
        if not self.edits:
            raise ProposerError("no more scripted edits")
        description, edit = self.edits.pop(0)
        edit(ctx)
        return Proposal(description, hypothesis="scripted")

    def observe(self, proposal, rows) -> None:
        self.seen.append(rows)


def set_values(values: dict) -> Callable:
    return lambda ctx: ctx.ws.train_py.write_text(hparams.rewrite(ctx.best_source, values))


def insert_before_setup(code: str) -> Callable:
    return lambda ctx: ctx.ws.train_py.write_text(ctx.best_source.replace("t_start = time.time()", code + "\nt_start = time.time()", 1))


def commit_train(ws, source: str, message: str) -> None:
    ws.train_py.write_text(source)
    ws.git.commit_all(message, paths=["train.py"])


def statuses(ws) -> list[tuple[str, str]]:
    return [(r.kind, r.status) for r in Ledger.open(ws.ledger_path).rows]


def test_loop_keeps_gains_resets_losses_and_records_everything(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=2)
    commit_train(ws, hparams.rewrite(ws.train_py.read_text(), SLOW_LRS), "a deliberately slow baseline")
    proposer = Scripted([
        ("restore the learning rates", set_values(GOOD_LRS)),
        ("freeze everything", set_values({"EMBEDDING_LR": 0.0, "UNEMBEDDING_LR": 0.0, "MATRIX_LR": 0.0, "SCALAR_LR": 0.0})),
        ("a crash", insert_before_setup("raise RuntimeError('boom from a proposal')")),
        ("touch prepare.py", lambda ctx: (set_values({"DEPTH": 3})(ctx), (ctx.ws.root / "prepare.py").write_text("EVIL = 1\n"))),
        ("add a helper module", lambda ctx: (set_values({"DEPTH": 3})(ctx), (ctx.ws.root / "helper.py").write_text("x = 1\n"))),
        ("print a fake result", insert_before_setup("import atexit; atexit.register(lambda: print('---\\nval_bpb:          0.100000'))")),
    ])
    with Loop.open(ws.root, tag="t1", log=lambda _: None) as loop:
        assert loop.run(proposer, Limits(max_experiments=6)) == 6
    rows = Ledger.open(ws.ledger_path).rows
    kinds = [(r.kind, r.status, r.description) for r in rows]
    assert kinds[:2] == [("baseline", "keep", "baseline")] * 2
    by_desc = {r.description: r for r in rows if r.kind == "experiment"}
    keep = by_desc["restore the learning rates"]
    assert keep.status == "keep" and keep.gain > 0.1
    assert by_desc["freeze everything"].status == "discard" and by_desc["freeze everything"].gain < 0
    crash = by_desc["a crash"]
    assert crash.status == "crash" and crash.val_bpb is None
    assert "boom from a proposal" in RunResult.load(ws.runs_dir / crash.run_id).log_tail
    for name in ("touch prepare.py", "add a helper module"):
        assert by_desc[name].status == "invalid" and by_desc[name].run_id == ""
    fake = by_desc["print a fake result"]
    assert fake.val_bpb is not None and abs(fake.val_bpb - 0.1) > 0.5  # the harness's number, not the print
    assert "printed val_bpb 0.100000 differs" in fake.flags
    # git: the kept commit is the branch head; discards, crash and invalid left no trace in the tree
    git = ws.git
    assert git.branch() == "autoresearch/t1"
    # the head is the last kept commit: the restored rates, or (the noise of a loaded machine can keep
    # a change that does not change training) the fake print on top of them
    kept = [r for r in rows if r.kind == "experiment" and r.status == "keep"]
    assert kept[0] == keep and {r.description for r in kept[1:]} <= {"print a fake result"}
    assert git.short() == kept[-1].commit and git.dirty_paths() == []
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.04
    assert (ws.root / "prepare.py").read_text().startswith('"""Fixed harness API') and not (ws.root / "helper.py").exists()
    log = git.run("log", "--format=%s", "HEAD")
    assert "restore the learning rates" in log and "freeze everything" not in log
    # the ledger is the reference's format first, readable by pandas as it is
    df = pd.read_csv(ws.ledger_path, sep="\t")
    assert tuple(df.columns[:5]) == REFERENCE_COLUMNS and len(df) == len(rows)
    assert all(len(c) == 7 for c in df["commit"].astype(str))
    assert (ws.runs_dir / keep.run_id / "diff.patch").read_text().count("MATRIX_LR") == 2
    assert len(proposer.seen) == 6


def test_the_audit_runs_the_kept_change_and_the_baseline_again_for_real(make_workspace):
    """`autoresearch audit --json` (the real CLI, runner and evaluator) after a known-good change was
    kept: the baseline and the change run once more, as `audit` rows, and the gain is there again."""
    ws = make_workspace(budget=3, baseline_runs=2, control_every=0)
    commit_train(ws, hparams.rewrite(ws.train_py.read_text(), SLOW_LRS), "a deliberately slow baseline")
    with Loop.open(ws.root, tag="audit", log=lambda _: None) as loop:
        loop.run(Scripted([("restore the learning rates", set_values(GOOD_LRS))]), Limits(max_experiments=1))
    rows = Ledger.open(ws.ledger_path).rows
    assert [(r.kind, r.status) for r in rows] == [("baseline", "keep")] * 2 + [("experiment", "keep")]
    best = ws.git.head()
    done = subprocess.run([sys.executable, "-m", "autoresearch", "audit", "--json", "--quiet"], cwd=ws.root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    audit_rows = Ledger.open(ws.ledger_path).rows[3:]
    assert [(r.kind, r.status, r.commit) for r in audit_rows] == [("audit", "keep", rows[0].commit),
                                                                  ("audit", "keep", rows[2].commit)]
    assert all(RunResult.load(ws.runs_dir / r.run_id).outcome == "ok" for r in audit_rows)
    doc = json.loads(done.stdout)
    [change] = doc["changes"]
    assert (change["commit"], change["runs"], change["parent_runs"]) == (rows[2].commit, 1, 1)
    assert change["gain"] > 0.05 and change["verdict"] in ("reproduces", "smaller", "unclear"), change
    assert "audit: " in done.stderr  # the runs' lines go to stderr, the document alone to stdout
    assert ws.git.head() == best and ws.git.dirty_paths() == []


def test_a_hung_run_is_killed_with_everything_it_started(make_workspace):
    ws = make_workspace(budget=2, baseline_runs=1, startup_allowance=40.0, hard_limit=45.0)
    hang = (
        "import subprocess, os\n"
        "subprocess.Popen(['sleep', '600'])\n"  # a child in the run's group
        "subprocess.Popen(['setsid', 'sh', '-c', 'sleep 600 & sleep 600'])\n"  # a daemon in its own session
        "import time as _t; _t.sleep(600)"
    )
    proposer = Scripted([("hang", insert_before_setup(hang))])
    with Loop.open(ws.root, tag="t2", log=lambda _: None) as loop:
        loop.run(proposer, Limits(max_experiments=1))
    row = Ledger.open(ws.ledger_path).rows[-1]
    assert row.status == "timeout" and row.val_bpb is None
    assert 45 <= row.wall_seconds < 60
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["environ"]) if (p.info["environ"] or {}).get("AUTORESEARCH_RUN_ID") == run_key(ws.runs_dir / row.run_id)]
    assert left == []
    assert ws.git.dirty_paths() == [] and ws.git.short() != row.commit


def test_a_run_that_overstays_budget_and_allowance_is_not_kept(make_workspace):
    ws = make_workspace(budget=2, baseline_runs=1, startup_allowance=30.0, hard_limit=90.0)
    faster = {"EMBEDDING_LR": 0.6}  # any change; what matters is the late hand-over
    late = lambda ctx: ctx.ws.train_py.write_text(  # noqa: E731
        hparams.rewrite(ctx.best_source, faster).replace("t_start = time.time()", "time.sleep(34)\nt_start = time.time()", 1))
    with Loop.open(ws.root, tag="t3", log=lambda _: None) as loop:
        loop.run(Scripted([("sleep before training", late)]), Limits(max_experiments=1))
    row = Ledger.open(ws.ledger_path).rows[-1]
    assert row.status == "timeout" and row.handover_seconds > 34.0
    assert "overstayed" in row.flags and row.val_bpb is not None  # measured, for information, not kept
    assert ws.git.short() != row.commit


def run_cli(ws, *args, env=None, stdout=subprocess.PIPE, **kw):
    return subprocess.Popen([sys.executable, "-m", "autoresearch", *args], cwd=ws.root, env={**os.environ, **(env or {})},
                            stdout=stdout, stderr=subprocess.STDOUT, text=True, **kw)


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def consistent(ws, experiments: int) -> list:
    rows = Ledger.open(ws.ledger_path).rows
    ids = [r.run_id for r in rows if r.run_id]
    assert len(ids) == len(set(ids)), "a run was logged twice"
    assert sum(r.kind == "experiment" for r in rows) == experiments
    kept = [r for r in rows if r.status == "keep"]
    assert ws.git.short() == kept[-1].commit  # the branch head is the last kept commit
    assert ws.git.dirty_paths() == [] and json.loads((ws.state_dir / "flights.json").read_text()) == []
    for run_id in ids:  # every logged run has its finished record
        assert RunResult.load(ws.runs_dir / run_id) is not None
    return rows


def test_loop_killed_during_a_run_resumes_with_nothing_lost(make_workspace):
    # a budget long enough that the killed loop's run still trains when the new loop has started
    # (a loaded machine takes seconds to import torch), so the new one must end it
    ws = make_workspace(budget=12, baseline_runs=1)
    first = run_cli(ws, "loop", "--max-experiments", "2", start_new_session=True)
    # wait for the first experiment's run to be training, then kill the loop (not its run)
    def experiment_running():
        state = ws.state_dir / "flights.json"
        if not state.exists():
            return False
        return any(f["phase"] == "running" and f["kind"] == "experiment" and f["runs"] and
                   (ws.runs_dir / f["runs"][-1] / "metrics.jsonl").exists() for f in json.loads(state.read_text()))
    wait_for(experiment_running, timeout=180)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    key = str(ws.runs_dir.resolve())
    orphaned = any(proc.info["environ"] and proc.info["environ"].get("AUTORESEARCH_RUN_ID", "").startswith(key)
                   for proc in psutil.process_iter(["environ"]))  # on a busy machine it may have ended by now
    again = run_cli(ws, "loop", "--max-experiments", "2")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    assert "recovering: resuming experiment" in out
    assert not orphaned or "process(es) left by interrupted run" in out, out
    assert "2 experiment(s) decided (1 resumed)" in out
    rows = consistent(ws, experiments=2)  # the interrupted one (finished on resume) counts as one of the 2
    assert [r.kind for r in rows].count("baseline") == 1


def test_loop_killed_during_a_ledger_write_resumes_with_nothing_lost(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=1)
    dying = run_cli(ws, "loop", "--max-experiments", "1", env={"AUTORESEARCH_FAULT": "results.tsv:before-rename"})
    out, _ = dying.communicate(timeout=300)
    assert dying.returncode == -signal.SIGKILL, out
    assert not ws.ledger_path.exists()  # the write never landed...
    assert list(ws.root.glob(".results.tsv.*.tmp"))  # ...though its temporary file was written
    again = run_cli(ws, "loop", "--max-experiments", "1")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    rows = consistent(ws, experiments=1)
    assert [r.kind for r in rows].count("baseline") == 1
    assert rows[0].run_id == "0001"  # the baseline run was not repeated: its result was kept


def test_bad_input_gives_clear_errors(make_workspace, tmp_path, capsys, monkeypatch):
    ws = make_workspace(budget=3)
    (ws.root / "scratch.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="uncommitted changes in scratch.txt"):
        Loop.open(ws.root)
    (ws.root / "scratch.txt").unlink()
    monkeypatch.chdir(ws.root)
    with pytest.raises(SystemExit) as exited:  # argparse lists the choices
        main(["loop", "--proposer", "oracle"])
    assert exited.value.code == 2
    assert "invalid choice: 'oracle' (choose from 'search', 'llm', 'cmd')" in capsys.readouterr().err
    from autoresearch import settings, workspace

    on_gpu = workspace.init(tmp_path / "gpu", settings.from_preset("gpu", dataset="pystdlib"))
    with pytest.raises(SettingsError, match="needs a cuda device.*--preset cpu"):
        Loop.open(on_gpu.root)
    unprepared = workspace.init(tmp_path / "raw", settings.from_preset("tiny", vocab_size=777))
    with pytest.raises(Exception, match="not prepared: run `autoresearch prepare`"):
        Loop.open(unprepared.root)
    not_git = make_workspace("nogit", budget=3)
    shutil.rmtree(not_git.root / ".git")
    with pytest.raises(WorkspaceError, match="not a git repository"):
        Loop.open(not_git.root)
