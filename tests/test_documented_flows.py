"""The flows README.md and program.md describe, run as written: the commands are read from the
documents themselves, so when a document changes, this is where it is checked.

Only what a test must change is changed: `init` gets the tiny preset, the test corpus and a short
budget; `loop --max-experiments 100` runs 1; `dashboard` listens on a free port and is stopped
with Ctrl-C after its page was fetched. Every command is the real CLI in a subprocess, in a shell
that has the virtual environment on its PATH (what `source .venv/bin/activate` does).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from autoresearch import hparams
from autoresearch import settings as S
from autoresearch.ledger import Ledger

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)


def bash_block_after(document: str, heading: str) -> list[str]:
    """The command lines (comments cut) of the first ```bash block after `heading`."""
    text = document.split(heading, 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def shell(cwd: Path, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"`{command}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def dashboard_page(cwd: Path, command: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(shlex.split(command) + ["--port", "0"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline()).group(0)
        page = urllib.request.urlopen(url + "/api/state", timeout=30).read().decode()
        proc.send_signal(signal.SIGINT)  # "Ctrl-C stops it"
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return page


def test_the_readme_commands_as_written(tmp_path, corpus):
    commands = bash_block_after((ROOT / "README.md").read_text(), "## Using it")
    verbs = [c.split()[1] if c.startswith("autoresearch ") else c.split()[0] for c in commands]
    assert verbs[:5] == ["source", "init", "cd", "prepare", "loop"]  # the order a user follows
    assert {"status", "report", "dashboard", "audit"} <= set(verbs)
    cwd = tmp_path
    for command in commands:
        if command.startswith("source "):
            continue  # the venv's bin is on PATH
        if command.startswith("cd "):
            cwd = cwd / command.split()[1]
            continue
        if command.startswith("autoresearch init "):
            command += f" --preset tiny --dataset files:{corpus} --budget 4 --set baseline_runs=1"
        command = command.replace("--max-experiments 100", "--max-experiments 1")
        if command.startswith("autoresearch dashboard"):
            assert '"schema_version"' in dashboard_page(cwd, command)
            continue
        shell(cwd, command)
    rows = Ledger.open(cwd / "results.tsv").rows
    kinds = [r.kind for r in rows if r.kind != "audit"]
    confirms = kinds.count("confirm")  # a borderline gain is run again; its first row decides
    assert confirms <= S.from_preset("tiny").confirm_runs
    assert kinds == ["baseline", "experiment"] + ["confirm"] * confirms + (
        ["rebaseline"] if "rebaseline" in verbs else [])
    kept = rows[1].status == "keep"  # then the audit ran the baseline and the kept change once more
    assert [r.commit for r in rows if r.kind == "audit"] == ([rows[0].commit, rows[1].commit] if kept else [])
    assert (cwd / "progress.png").stat().st_size > 0 and (cwd / "report.html").stat().st_size > 0


def test_the_agent_flow_of_program_md(make_workspace):
    """Edit train.py with a plain write (no git add), `autoresearch run -m ...`, twice; then an edit
    of prepare.py, which the harness refuses and undoes."""
    brief = (ROOT / "src/autoresearch/templates/program.md").read_text()
    assert '2. `autoresearch run -m "one line: what you changed and why"`' in brief
    assert "Only `train.py` may change. Any other change makes the run `invalid`" in brief
    ws = make_workspace(budget=4, baseline_runs=1)
    block = hparams.read_block(ws.train_py.read_text())

    def edit_train(values: dict) -> None:
        ws.train_py.write_text(hparams.rewrite(ws.train_py.read_text(), values))

    edit_train({"MATRIX_LR": block["MATRIX_LR"].value * 1.5})
    first = shell(ws.root, 'autoresearch run -m "MATRIX_LR x1.5: faster learning within the budget"').stdout
    assert "baseline: val_bpb" in first  # the first call measures the baseline, then the change
    edit_train({"WARMUP_RATIO": 0.1})
    shell(ws.root, 'autoresearch run -m "a short warm-up"')
    rows = Ledger.open(ws.ledger_path).rows
    assert [(r.kind, r.description) for r in rows if r.kind != "confirm"] == [  # a borderline one is run again
        ("baseline", "baseline"), ("experiment", "MATRIX_LR x1.5: faster learning within the budget"),
        ("experiment", "a short warm-up")]
    assert all(r.status in ("keep", "discard") for r in rows)
    assert ws.git.dirty_paths() == []
    assert shell(ws.root, "autoresearch status").stdout.count("warm-up") >= 1

    prepare = (ws.root / "prepare.py").read_text()
    (ws.root / "prepare.py").write_text(prepare.replace("TIME_BUDGET", "TIME_BUDGET = 3600  #", 1))
    edit_train({"WARMUP_RATIO": 0.2})
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    refused = subprocess.run(["bash", "-c", 'autoresearch run -m "a longer budget"'], cwd=ws.root, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 3, refused.stdout + refused.stderr  # not keep, not discard
    last = Ledger.open(ws.ledger_path).rows[-1]
    assert (last.status, last.description) == ("invalid", "a longer budget")
    assert "prepare.py" in last.reason and "prepare.py" in refused.stdout
    assert (ws.root / "prepare.py").read_text() == prepare and ws.git.dirty_paths() == []
    assert "WARMUP_RATIO" in ws.git.run("stash", "show", "-p")  # the agent's edit is kept aside


def test_an_agent_that_commits_itself_is_judged_never_adopted(make_workspace):
    """program.md's flow with an agent that runs `git commit` by habit (issue 20): its worse commit is
    judged against the best and discarded; an amended best is refused with the command that accepts
    it; `rebaseline` measures it as a baseline of its own kind; a better commit is judged and kept,
    marked as committed outside; prepare.py committed with train.py is refused and restored."""
    brief = (ROOT / "src/autoresearch/templates/program.md").read_text()
    assert "**Do not `git commit` yourself**" in brief
    ws = make_workspace(budget=4, baseline_runs=1)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    original = ws.train_py.read_text()
    block = hparams.read_block(original)
    slow = {name: block[name].value / 400 for name in ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR")}

    def attempt(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=ws.root, env=env, capture_output=True, text=True,
                              timeout=600)

    shell(ws.root, 'autoresearch run -m "base"')  # the baseline, with nothing to judge yet
    best = ws.git.head()
    ws.train_py.write_text(hparams.rewrite(original, slow))
    shell(ws.root, 'git commit -qam "agent commits its own (worse) change"')
    out = shell(ws.root, 'autoresearch run -m "after my commit"').stdout
    last = Ledger.open(ws.ledger_path).rows[-1]
    assert (last.kind, last.status, last.parent) == ("experiment", "discard", best[:7]), out
    assert "committed outside the harness" in last.flags and ws.git.head() == best

    ws.train_py.write_text(hparams.rewrite(original, slow))
    shell(ws.root, 'git commit -q -a --amend -m "the best, amended"')
    amended = ws.git.head()
    refused = attempt('autoresearch run -m "on an amended best"')
    assert refused.returncode == 1 and "`autoresearch rebaseline`" in refused.stderr
    assert amended[:7] in refused.stderr and best[:7] in refused.stderr
    shell(ws.root, 'autoresearch rebaseline -m "accept the amended best"')
    last = Ledger.open(ws.ledger_path).rows[-1]
    assert (last.kind, last.status, last.commit) == ("rebaseline", "keep", amended[:7])

    ws.train_py.write_text(original)  # the learning rates back: clearly better than the amended best
    shell(ws.root, 'git commit -qam "learning rates back"')
    shell(ws.root, 'autoresearch run')
    kept = [r for r in Ledger.open(ws.ledger_path).rows if r.description == "learning rates back"]
    assert kept[0].status == "keep" and "committed outside the harness" in kept[0].flags
    assert ws.git.rev("HEAD~1") == amended

    prepare = (ws.root / "prepare.py").read_text()
    (ws.root / "prepare.py").write_text(prepare.replace("TIME_BUDGET", "TIME_BUDGET = 3600  #", 1))
    ws.train_py.write_text(hparams.rewrite(original, {"WARMUP_RATIO": 0.2}))
    shell(ws.root, 'git commit -qam "a longer budget"')
    refused = attempt("autoresearch run")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    last = Ledger.open(ws.ledger_path).rows[-1]
    assert (last.status, last.rule, last.description) == ("invalid", "guard", "a longer budget")
    assert (ws.root / "prepare.py").read_text() == prepare and ws.git.dirty_paths() == []
